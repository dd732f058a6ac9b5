//! Aggregation strategies against hand-computed values, on hand-made arrays
//! and on the arrays of real medseg-nets networks.

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use medseg_federated::{
    assemble_heads, detect_norm_keys, key_matches, proximal_term, Aggregator, AggregatorRegistry,
    ClientUpdate, FedAdam, FedAdamParams, FedAvg, FedBN, FedError, FedYogi, FedYogiParams,
    HeadPrediction, ProximalTerm, SegViz, SegVizParams, Weights,
};
use ndarray::{arr1, ArrayD, IxDyn};

/// Deterministic values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn array(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), values(seed, n)).unwrap()
}

/// A small hand-made model: a conv, a batch norm, a group norm, a PReLU and
/// a head.
fn model(seed: u64) -> Weights {
    let mut w = Weights::new();
    w.insert("enc.conv.0.weight", array(seed, &[4, 2, 3, 3]));
    w.insert("enc.conv.0.bias", array(seed + 1, &[4]));
    w.insert("enc.conv.1.weight", array(seed + 2, &[4]));
    w.insert("enc.conv.1.bias", array(seed + 3, &[4]));
    w.insert("enc.conv.1.running_mean", array(seed + 4, &[4]));
    w.insert(
        "enc.conv.1.running_var",
        array(seed + 5, &[4]).mapv(f32::abs),
    );
    w.insert("enc.gn.weight", array(seed + 6, &[4]));
    w.insert("enc.gn.bias", array(seed + 7, &[4]));
    w.insert("enc.act.weight", array(seed + 8, &[1]));
    w.insert("decoder.out_conv.weight", array(seed + 9, &[2, 4, 1, 1]));
    w.insert("decoder.out_conv.bias", array(seed + 10, &[2]));
    w
}

fn update(site: &str, seed: u64, n: usize) -> ClientUpdate {
    ClientUpdate::new(site, model(seed), n)
}

/// The exact weighted mean, computed independently.
fn mean_of(key: &str, updates: &[ClientUpdate]) -> ArrayD<f32> {
    let shape = updates[0].weights.get(key).unwrap().shape().to_vec();
    let len: usize = shape.iter().product();
    let total: f64 = updates.iter().map(|u| u.num_examples as f64).sum();
    let mut acc = vec![0f64; len];
    for u in updates {
        let w = u.weights.get(key).unwrap();
        for (a, x) in acc.iter_mut().zip(w.iter()) {
            *a += u.num_examples as f64 * f64::from(*x);
        }
    }
    ArrayD::from_shape_vec(
        IxDyn(&shape),
        acc.iter().map(|a| (a / total) as f32).collect(),
    )
    .unwrap()
}

fn unet_weights(name: &str, extra: serde_json::Value) -> Weights {
    let mut cfg = serde_json::json!({
        "name": name, "in_chns": 1, "class_num": 3, "feature_chns": [4, 8, 16, 32, 64]
    });
    if name.contains("Dense") {
        cfg.as_object_mut().unwrap().remove("feature_chns");
    }
    if name.contains("CE") {
        cfg["feature_chns"] = serde_json::json!([8, 16, 32, 64]);
    }
    if name == "UNet" || name == "AttentionUNet" {
        cfg["dimension"] = 2.into();
    }
    if name.contains("PSPNet") || name.contains("DeepLab") {
        cfg.as_object_mut().unwrap().remove("feature_chns");
    }
    // attention heads on a dilated ResNet: a narrow, shallow backbone
    if ["DANet", "OCNet", "OCRNet", "EANet"].contains(&name) {
        cfg = serde_json::json!({"name": name, "in_chns": 1, "class_num": 3,
            "backbone": "resnet50", "backbone_width": 2, "backbone_blocks": [1, 1, 1]});
        if name == "OCRNet" {
            cfg["ocr_channels"] = 8.into();
        }
        if name == "EANet" {
            cfg["memory_units"] = 4.into();
        }
    }
    // U2Net: small widths (its default has 44 M parameters); CS-Net takes
    // the feature_chns above
    if name.starts_with("U2Net") {
        let o = cfg.as_object_mut().unwrap();
        o.remove("feature_chns");
        o.insert(
            "encoder_mid_chns".into(),
            serde_json::json!([2, 2, 2, 2, 2, 2]),
        );
        o.insert(
            "encoder_out_chns".into(),
            serde_json::json!([4, 4, 4, 4, 4, 4]),
        );
        o.insert(
            "decoder_mid_chns".into(),
            serde_json::json!([2, 2, 2, 2, 2]),
        );
        o.insert(
            "decoder_out_chns".into(),
            serde_json::json!([4, 4, 4, 4, 4]),
        );
    }
    // HRNet, D-LinkNet and JMedSeg's light networks: small widths
    if ["OneNet", "LightNet", "HRNet"].contains(&name) {
        cfg.as_object_mut().unwrap().remove("feature_chns");
        let small = match name {
            "HRNet" => serde_json::json!({"width": 2, "stem_chns": 8}),
            _ => serde_json::json!({"group_width": 2}),
        };
        for (k, v) in small.as_object().unwrap() {
            cfg[k] = v.clone();
        }
    }
    if name.contains("LinkNet") {
        cfg["feature_chns"] = serde_json::json!([8, 16, 32, 64]);
    }
    if name.starts_with("UNETR") {
        let img = if name == "UNETR2D" {
            vec![16, 16]
        } else {
            vec![16, 16, 16]
        };
        cfg = serde_json::json!({"name": name, "in_chns": 1, "class_num": 3, "img_size": img,
            "feature_size": 2, "hidden_size": 8, "mlp_dim": 8, "num_heads": 2});
    }
    if name.starts_with("Swin") {
        // a small Swin-UNet: the default (224 x 224, 27 M parameters) is slow here
        cfg = serde_json::json!({"name": name, "in_chns": 1, "class_num": 3, "img_size": 32,
            "embed_dim": 4, "num_heads": [1, 1, 1, 1], "window_size": 2});
    }
    if name == "TransUNet" {
        cfg = serde_json::json!({"name": name, "in_chns": 1, "class_num": 3, "img_size": 32,
            "resnet_units": [1, 1, 1], "resnet_width": 4, "gn_groups": 2, "hidden_size": 8,
            "mlp_dim": 8, "num_heads": 2, "num_layers": 1, "head_channels": 8,
            "decoder_channels": [8, 8, 8, 8]});
    }
    // HarDNet-MSEG and SETR: small widths
    if name.starts_with("HarDNet") {
        cfg = serde_json::json!({"name": name, "in_chns": 1, "class_num": 3, "channel": 4,
            "first_chns": [4, 8], "block_chns": [8, 8, 12, 12, 16],
            "growth_rates": [4, 4, 4, 4, 4], "block_layers": [2, 2, 2, 2, 2]});
    }
    if name == "SETR" {
        cfg = serde_json::json!({"name": name, "in_chns": 1, "class_num": 3,
            "patch_size": [16, 16], "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "decode_features": [4, 4, 4, 4], "intermediate_size": 8,
            "max_position_embeddings": 16});
    }
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    medseg_nets::build_network(&cfg, vb).unwrap_or_else(|e| panic!("{name}: {e}"));
    Weights::from_varmap(&vm).unwrap()
}

fn perturbed(w: &Weights, seed: u64) -> Weights {
    w.iter()
        .enumerate()
        .map(|(i, (k, a))| {
            let noise = array(seed * 1000 + i as u64, a.shape());
            (k.to_string(), a + &noise)
        })
        .collect()
}

// ---------------------------------------------------------------- FedAvg

#[test]
fn fedavg_is_the_exact_weighted_mean() {
    let global = model(1);
    let updates = vec![update("a", 10, 7), update("b", 20, 13), update("c", 30, 1)];
    let out = FedAvg::new().aggregate(1, &global, &updates).unwrap();
    assert_eq!(out.len(), global.len());
    for k in global.keys() {
        assert_eq!(out.get(k).unwrap(), &mean_of(k, &updates), "{k}");
    }
    // a hand case: (3 * 1 + 1 * 5) / 4 = 2, (3 * -2 + 1 * 2) / 4 = -1
    let g: Weights = [("w".to_string(), arr1(&[0f32, 0.0]).into_dyn())]
        .into_iter()
        .collect();
    let u = |v: [f32; 2], n| {
        ClientUpdate::new(
            format!("s{n}"),
            [("w".to_string(), arr1(&v).into_dyn())]
                .into_iter()
                .collect(),
            n,
        )
    };
    let out = FedAvg::new()
        .aggregate(1, &g, &[u([1.0, -2.0], 3), u([5.0, 2.0], 1)])
        .unwrap();
    assert_eq!(out.get("w").unwrap(), &arr1(&[2f32, -1.0]).into_dyn());
}

#[test]
fn aggregation_over_a_subset_of_sites_uses_only_those_present() {
    let global = model(1);
    let all = vec![update("a", 10, 5), update("b", 20, 9), update("c", 30, 2)];
    let present = vec![all[0].clone(), all[2].clone()];
    for mut agg in [
        Box::new(FedAvg::new()) as Box<dyn Aggregator>,
        Box::new(FedBN::default()),
        Box::new(SegViz::default()),
    ] {
        let out = agg.aggregate(3, &global, &present).unwrap();
        let full = agg.aggregate(3, &global, &all).unwrap();
        for k in global.keys().filter(|k| !agg.is_local(k)) {
            assert_eq!(
                out.get(k).unwrap(),
                &mean_of(k, &present),
                "{}: {k}",
                agg.name()
            );
            assert_ne!(out.get(k), full.get(k), "{}: {k}", agg.name());
        }
    }
}

#[test]
fn weighted_metrics_average_over_reporting_sites() {
    let u = vec![
        update("a", 1, 1)
            .with_metric("loss", 1.0)
            .with_metric("dice", 0.5),
        update("b", 2, 3).with_metric("loss", 3.0),
    ];
    let m = medseg_federated::weighted_metrics(&u);
    assert_eq!(m["loss"], 2.5);
    assert_eq!(m["dice"], 0.5);
}

// ---------------------------------------------------------------- FedBN

#[test]
fn fedbn_keeps_normalisation_arrays_and_averages_the_rest() {
    let global = model(1);
    let updates = vec![update("a", 10, 4), update("b", 20, 6)];
    let mut agg = FedBN::default();
    agg.prepare(&global).unwrap();
    let norms: BTreeSet<&str> = [
        "enc.conv.1.weight",
        "enc.conv.1.bias",
        "enc.conv.1.running_mean",
        "enc.conv.1.running_var",
        "enc.gn.weight",
        "enc.gn.bias",
    ]
    .into_iter()
    .collect();
    for k in global.keys() {
        assert_eq!(agg.is_local(k), norms.contains(k), "{k}");
    }
    let out = agg.aggregate(1, &global, &updates).unwrap();
    for k in global.keys() {
        if norms.contains(k) {
            assert_eq!(out.get(k), global.get(k), "{k} must stay as the global's");
        } else {
            assert_eq!(out.get(k).unwrap(), &mean_of(k, &updates), "{k}");
        }
    }
    // sites may leave their norm arrays out of the update
    let lean: Vec<ClientUpdate> = updates
        .iter()
        .map(|u| {
            ClientUpdate::new(
                &u.site,
                u.weights.filtered(|k| !agg.is_local(k)),
                u.num_examples,
            )
        })
        .collect();
    assert_eq!(agg.aggregate(1, &global, &lean).unwrap(), out);
}

#[test]
fn fedbn_patterns_only_when_detection_is_off() {
    let global = model(1);
    let mut agg = FedBN::from_json(&serde_json::json!({
        "detect_norm_layers": false,
        "norm_patterns": ["*.running_*", "enc.gn.*"]
    }))
    .unwrap();
    agg.prepare(&global).unwrap();
    assert!(agg.is_local("enc.conv.1.running_var"));
    assert!(agg.is_local("enc.gn.bias"));
    assert!(!agg.is_local("enc.conv.1.weight"));
}

#[test]
fn fedbn_on_unet2d_keeps_every_batch_norm_local() {
    let global = unet_weights("UNet2D", serde_json::json!({}));
    let updates = vec![
        ClientUpdate::new("a", perturbed(&global, 1), 3),
        ClientUpdate::new("b", perturbed(&global, 2), 5),
    ];
    let mut agg = FedBN::default();
    agg.prepare(&global).unwrap();
    assert!(agg.is_local("encoder.in_conv.conv_conv.1.weight"));
    assert!(agg.is_local("encoder.in_conv.conv_conv.1.bias"));
    assert!(agg.is_local("decoder.up1.conv.conv_conv.5.running_var"));
    assert!(!agg.is_local("encoder.in_conv.conv_conv.0.weight"));
    assert!(!agg.is_local("encoder.in_conv.conv_conv.0.bias"));
    assert!(!agg.is_local("decoder.out_conv.bias"));
    let out = agg.aggregate(1, &global, &updates).unwrap();
    let mut local = 0;
    for k in global.keys() {
        if agg.is_local(k) {
            local += 1;
            assert_eq!(out.get(k), global.get(k), "{k}");
        } else {
            assert_eq!(out.get(k).unwrap(), &mean_of(k, &updates), "{k}");
        }
    }
    // 18 batch norms of 4 arrays each
    assert_eq!(local, 18 * 4);
}

/// The layer of a key.
fn layer(k: &str) -> &str {
    k.rsplit_once('.').map_or("", |(l, _)| l)
}

#[test]
fn norm_detection_matches_every_medseg_network() {
    let names = medseg_nets::NetRegistry::with_builtins().names();
    for name in &names {
        for extra in [
            serde_json::json!({}),
            serde_json::json!({"norm_type": "group_norm", "group_num": 1}),
        ] {
            let grouped = extra.get("norm_type").is_some();
            if grouped
                && [
                    "CE", "Dense", "MultiRes", "SegNet", "Ternaus", "PSPNet", "DeepLab", "UNETR",
                    "Swin", "DANet", "OCNet", "OCRNet", "EANet", "U2Net", "CSNet", "CS-Net",
                    "HarDNet", "SETR", "OneNet", "LightNet", "HRNet", "LinkNet",
                ]
                .iter()
                .any(|n| name.contains(n))
            {
                continue; // fixed norms (BatchNorm, or EANet's GroupNorms): no norm_type key
            }
            if grouped && name == "TransUNet" {
                continue; // fixed norms (GroupNorm, LayerNorm, BatchNorm), no norm_type
            }
            let w = unet_weights(name, extra);
            let found = detect_norm_keys(&w);
            for (k, a) in w.iter() {
                let l = layer(k);
                let batch = w.contains_key(&format!("{l}.running_mean"));
                // group norms: a 1-D weight with a 1-D bias of the same length
                let group = grouped
                    && matches!(
                        (w.get(&format!("{l}.weight")), w.get(&format!("{l}.bias"))),
                        (Some(x), Some(y)) if x.ndim() == 1 && y.ndim() == 1 && x.len() == y.len()
                    );
                // UNETR's and Swin-UNet's layer norms (`norm1`, `norm2`, `norm`, ...): a
                // 1-D weight and bias, kept local like any other norm
                let layer_norm = (name.starts_with("UNETR") || name.starts_with("Swin"))
                    && l.rsplit('.').next().is_some_and(|t| t.starts_with("norm"));
                // TransUNet's ResNetV2 group norms (`gn`, `gn1`, `gn_proj`)
                // and its ViT's layer norms (`attention_norm`, ...)
                let tail = l.rsplit('.').next().unwrap_or("");
                let layer_norm = layer_norm
                    || (name == "TransUNet" && (tail.starts_with("gn") || tail.ends_with("_norm")));
                // OneNet's, LightNet's and EANet's group norms (JMedSeg's
                // `NormLayer`: `...<layer>.norm`)
                let layer_norm = layer_norm
                    || (["OneNet", "LightNet", "EANet"].contains(&name.as_str()) && tail == "norm");
                assert_eq!(
                    found.contains(k),
                    batch || group || layer_norm,
                    "{name}: {k}"
                );
                if a.ndim() >= 2 {
                    assert!(
                        !found.contains(k),
                        "{name}: a conv weight {k} taken for a norm"
                    );
                }
            }
            if name == "UNet2D5" {
                assert!(
                    !found.contains("encoder.block0.conv.conv_conv.2.weight"),
                    "PReLU"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- FedAdam / FedYogi

/// One-array weights.
fn one(v: &[f32]) -> Weights {
    [("w".to_string(), arr1(v).into_dyn())]
        .into_iter()
        .collect()
}

fn upd(site: &str, v: &[f32], n: usize) -> ClientUpdate {
    ClientUpdate::new(site, one(v), n)
}

fn close(a: f32, b: f64, what: &str) {
    let tol = 1e-6 * b.abs().max(1.0);
    assert!((f64::from(a) - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn fedadam_one_and_two_steps_match_hand_computed_values() {
    let (eta, b1, b2, tau) = (0.1f64, 0.9f64, 0.99f64, 1e-3f64);
    let mut agg = FedAdam::new(FedAdamParams {
        eta,
        beta1: b1,
        beta2: b2,
        tau,
        bias_correction: false,
    })
    .unwrap();
    let g0 = [1.0f32, -2.0, 0.5];
    // round 1: sites (n=1) [2, -2, 0.5], (n=3) [2, -1, 0.5] → mean [2, -1.25, 0.5]
    let r1 = [
        upd("a", &[2.0, -2.0, 0.5], 1),
        upd("b", &[2.0, -1.0, 0.5], 3),
    ];
    let w1 = agg.aggregate(1, &one(&g0), &r1).unwrap();
    let mean1 = [2.0f64, -1.25, 0.5];
    let mut m = [0f64; 3];
    let mut v = [0f64; 3];
    let mut expect1 = [0f64; 3];
    for i in 0..3 {
        let d = mean1[i] - f64::from(g0[i]);
        m[i] = (1.0 - b1) * d;
        v[i] = (1.0 - b2) * d * d;
        expect1[i] = f64::from(g0[i]) + eta * m[i] / (v[i].sqrt() + tau);
    }
    // Δ=1: m=0.1, v=0.01 → w = 1 + 0.1 * 0.1 / (0.1 + 1e-3)
    close(
        w1.get("w").unwrap()[0],
        1.0 + 0.01 / 0.101,
        "step 1 by hand",
    );
    // Δ=0 leaves the weight alone
    assert_eq!(w1.get("w").unwrap()[2], 0.5);
    for (i, e) in expect1.iter().enumerate() {
        close(w1.get("w").unwrap()[i], *e, "step 1");
    }
    // round 2 from the new global; only site b answers
    let g1: Vec<f32> = w1.get("w").unwrap().iter().copied().collect();
    let r2 = [upd("b", &[0.0, 0.0, 1.5], 2)];
    let w2 = agg.aggregate(2, &w1, &r2).unwrap();
    for i in 0..3 {
        let g = f64::from(g1[i]);
        let d = [0.0, 0.0, 1.5][i] - g;
        let m2 = b1 * f64::from(m[i] as f32) + (1.0 - b1) * d;
        let v2 = b2 * f64::from(v[i] as f32) + (1.0 - b2) * d * d;
        close(
            w2.get("w").unwrap()[i],
            g + eta * m2 / (v2.sqrt() + tau),
            "step 2",
        );
    }
    assert_eq!(agg.steps(), 2);
}

#[test]
fn fedadam_bias_correction_scales_eta() {
    let mut agg = FedAdam::new(FedAdamParams {
        bias_correction: true,
        ..FedAdamParams::default()
    })
    .unwrap();
    let w = agg
        .aggregate(1, &one(&[0.0]), &[upd("a", &[1.0], 1)])
        .unwrap();
    // t = 1: eta * sqrt(1 - 0.99) / (1 - 0.9) = 0.1 * 0.1 / 0.1; m = 0.1, v = 0.01
    let eta_t = 0.1 * (1.0f64 - 0.99).sqrt() / (1.0 - 0.9);
    close(
        w.get("w").unwrap()[0],
        eta_t * 0.1 / (0.1 + 1e-9),
        "bias-corrected",
    );
}

#[test]
fn fedyogi_one_and_two_steps_match_hand_computed_values() {
    let (eta, b1, b2, tau) = (0.01f64, 0.9f64, 0.99f64, 1e-3f64);
    let mut agg = FedYogi::new(FedYogiParams {
        eta,
        beta1: b1,
        beta2: b2,
        tau,
    })
    .unwrap();
    let g0 = [0.0f32, 1.0, -1.0];
    let r1 = [
        upd("a", &[2.0, 1.0, -3.0], 1),
        upd("b", &[0.0, 1.0, -1.0], 1),
    ];
    let w1 = agg.aggregate(1, &one(&g0), &r1).unwrap();
    // mean [1, 1, -2], Δ = [1, 0, -1]; v starts at 0: v - (1-b2) Δ² sign(0 - Δ²) = (1-b2) Δ²,
    // and sign(0) = 0 where Δ = 0
    let sign = |x: f64| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let delta1 = [1.0f64, 0.0, -1.0];
    let mut m = [0f64; 3];
    let mut v = [0f64; 3];
    for i in 0..3 {
        let d = delta1[i];
        m[i] = (1.0 - b1) * d;
        v[i] = 0.0 - (1.0 - b2) * d * d * sign(0.0 - d * d);
        let e = f64::from(g0[i]) + eta * m[i] / (v[i].sqrt() + tau);
        close(w1.get("w").unwrap()[i], e, "yogi step 1");
    }
    // by hand, element 0: m = 0.1, v = 0.01 → 0 + 0.01 * 0.1 / (0.1 + 1e-3)
    close(w1.get("w").unwrap()[0], 0.001 / 0.101, "yogi by hand");
    assert_eq!(w1.get("w").unwrap()[1], 1.0);
    let g1: Vec<f64> = w1.get("w").unwrap().iter().map(|&x| f64::from(x)).collect();
    let target = [0.05f64, 1.0, 2.0];
    let r2 = [upd("a", &[0.05, 1.0, 2.0], 5)];
    let w2 = agg.aggregate(2, &w1, &r2).unwrap();
    for i in 0..3 {
        let d = f64::from(target[i] as f32) - g1[i];
        let m0 = f64::from(m[i] as f32);
        let v0 = f64::from(v[i] as f32);
        let m2 = b1 * m0 + (1.0 - b1) * d;
        let v2 = v0 - (1.0 - b2) * d * d * sign(v0 - d * d);
        close(
            w2.get("w").unwrap()[i],
            g1[i] + eta * m2 / (v2.sqrt() + tau),
            "yogi step 2",
        );
    }
}

#[test]
fn server_state_round_trips() {
    let global = model(1);
    let r1 = vec![update("a", 10, 4), update("b", 20, 6)];
    let r2 = vec![update("a", 11, 4), update("b", 21, 6)];
    for (mut a, mut b) in [
        (
            Box::new(FedAdam::default()) as Box<dyn Aggregator>,
            Box::new(FedAdam::default()) as Box<dyn Aggregator>,
        ),
        (Box::new(FedYogi::default()), Box::new(FedYogi::default())),
    ] {
        let g1 = a.aggregate(1, &global, &r1).unwrap();
        let state = a.state();
        assert!(state.contains_key("steps") && state.contains_key("m/enc.conv.0.weight"));
        let state =
            Weights::from_safetensors_bytes(&state.to_safetensors_bytes().unwrap()).unwrap();
        b.load_state(&state).unwrap();
        assert_eq!(
            a.aggregate(2, &g1, &r2).unwrap(),
            b.aggregate(2, &g1, &r2).unwrap(),
            "{}",
            a.name()
        );
    }
    let err = FedAvg::new().load_state(&one(&[1.0])).unwrap_err();
    assert!(err.to_string().contains("`w`"), "{err}");
}

// ---------------------------------------------------------------- FedProx

#[test]
fn proximal_term_value_and_gradient_match_the_closed_form() {
    let dev = Device::Cpu;
    let global = model(1);
    let local = model(2);
    let mu = 0.3;
    let names = [
        "enc.conv.0.weight",
        "enc.conv.0.bias",
        "decoder.out_conv.weight",
    ];
    let vars: Vec<(String, Var)> = names
        .iter()
        .map(|k| {
            let a = local.get(k).unwrap();
            let t = medseg_federated::array_to_tensor(a, &dev).unwrap();
            (k.to_string(), Var::from_tensor(&t).unwrap())
        })
        .collect();
    let mut expect = 0f64;
    for k in names {
        for (w, g) in local
            .get(k)
            .unwrap()
            .iter()
            .zip(global.get(k).unwrap().iter())
        {
            expect += f64::from(w - g).powi(2);
        }
    }
    expect *= mu / 2.0;
    let prox = ProximalTerm::new(&global, mu, &dev).unwrap();
    let term = prox.compute(&vars).unwrap();
    let value = f64::from(term.to_scalar::<f32>().unwrap());
    assert!(
        (value - expect).abs() <= 1e-5 * expect,
        "{value} vs {expect}"
    );
    let grads = term.backward().unwrap();
    for (k, var) in &vars {
        let g = grads.get(var.as_tensor()).unwrap();
        let got = medseg_federated::tensor_to_array(g).unwrap();
        let want = (local.get(k).unwrap() - global.get(k).unwrap()).mapv(|d| mu as f32 * d);
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-6, "{k}: {a} vs {b}");
        }
    }
    // the free function on plain tensors gives the same value
    let tensors: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let free = proximal_term(&tensors, &global, mu).unwrap();
    assert_eq!(
        free.to_scalar::<f32>().unwrap(),
        term.to_scalar::<f32>().unwrap()
    );
    // a variable the global weights lack is named
    let stray = vec![("nope".to_string(), tensors[0].1.clone())];
    let err = proximal_term(&stray, &global, mu).unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[test]
fn proximal_term_skips_local_arrays_for_an_aggregator() {
    let dev = Device::Cpu;
    let global = model(1);
    let mut agg = FedBN::default();
    agg.prepare(&global).unwrap();
    let prox = ProximalTerm::for_aggregator(&global, &agg, 1.0, &dev).unwrap();
    let shifted = medseg_federated::array_to_tensor(global.get("enc.conv.1.weight").unwrap(), &dev)
        .unwrap()
        .affine(1.0, 5.0)
        .unwrap();
    let t = prox
        .compute(&[("enc.conv.1.weight".to_string(), shifted)])
        .unwrap();
    assert_eq!(t.to_scalar::<f32>().unwrap(), 0.0);
    let prox_all = ProximalTerm::new(&global, 1.0, &dev).unwrap();
    assert_eq!(prox_all.mu(), 1.0);
    assert!(ProximalTerm::new(&global, -1.0, &dev).is_err());
}

// ---------------------------------------------------------------- SegViz

#[test]
fn segviz_keeps_heads_local_even_with_different_class_counts() {
    let global = model(1);
    let mut a = model(10);
    let mut b = model(20);
    // site b segments 3 classes: its head has another shape
    b.insert("decoder.out_conv.weight", array(5, &[3, 4, 1, 1]));
    b.insert("decoder.out_conv.bias", array(6, &[3]));
    a.insert("decoder.out_conv.bias", array(7, &[2]));
    let updates = vec![
        ClientUpdate::new("a", a, 2),
        ClientUpdate::new("b", b.clone(), 6),
    ];
    let mut agg = SegViz::default();
    agg.prepare(&global).unwrap();
    let out = agg.aggregate(1, &global, &updates).unwrap();
    for k in global.keys() {
        if k.starts_with("decoder.out_conv") {
            assert!(agg.is_local(k));
            assert_eq!(out.get(k), global.get(k), "{k}");
        } else {
            assert!(!agg.is_local(k), "{k}");
            assert_eq!(out.get(k).unwrap(), &mean_of(k, &updates), "{k}");
        }
    }
    // site b's model: the new body with its own head
    let site_b = out.merge_local(&b, |k| agg.is_local(k));
    assert_eq!(
        site_b.get("decoder.out_conv.weight"),
        b.get("decoder.out_conv.weight")
    );
    assert_eq!(
        site_b.get("enc.conv.0.weight"),
        out.get("enc.conv.0.weight")
    );

    // with local_norms the norm layers stay too
    let mut with_norms = SegViz::new(SegVizParams {
        local_norms: true,
        ..SegVizParams::default()
    })
    .unwrap();
    with_norms.prepare(&global).unwrap();
    assert!(with_norms.is_local("enc.conv.1.running_mean"));
    assert!(with_norms.is_local("enc.gn.weight"));
    assert!(!agg.is_local("enc.gn.weight"));
}

#[test]
fn default_head_patterns_find_the_output_layer_of_every_medseg_network() {
    let agg = SegViz::default();
    for name in medseg_nets::NetRegistry::with_builtins().names() {
        // 7 classes: no inner layer of these networks has 7 channels
        for extra in [
            serde_json::json!({"class_num": 7}),
            serde_json::json!({"class_num": 7, "multiscale_pred": true}),
        ] {
            if extra.get("multiscale_pred").is_some()
                && [
                    "CE", "Dense", "MultiRes", "SegNet", "Ternaus", "PSPNet", "DeepLab", "UNETR",
                    "Swin", "DANet", "OCNet", "OCRNet", "EANet", "U2Net", "CSNet", "CS-Net",
                    "HarDNet", "SETR", "OneNet", "LightNet", "HRNet", "LinkNet",
                ]
                .iter()
                .any(|n| name.contains(n))
            {
                continue;
            }
            if extra.get("multiscale_pred").is_some() && name == "TransUNet" {
                continue; // no multiscale output
            }
            let w = unet_weights(&name, extra);
            // layers producing the 7 classes (a transposed convolution's
            // weight is `[in, out, k...]`; no layer has 7 inputs)
            let outputs: BTreeSet<&str> = w
                .iter()
                .filter(|(k, a)| {
                    k.ends_with(".weight")
                        && a.ndim() >= 3
                        && (a.shape()[0] == 7 || a.shape()[1] == 7)
                })
                .map(|(k, _)| layer(k))
                .collect();
            assert!(!outputs.is_empty(), "{name}");
            let heads: BTreeSet<&str> = w.keys().filter(|k| agg.is_local(k)).map(layer).collect();
            let mut expected = outputs.clone();
            if name == "MultiResUNet" {
                expected.insert("conv_final.batchnorm");
            }
            if name == "HRNet" {
                // its stem `conv2` has DenseUNet's output name
                expected.insert("conv2");
            }
            if name == "LightNet" {
                // its inner `fuse.4.conv` has OneNet's output name
                expected.insert("fuse.4.conv");
            }
            assert_eq!(heads, expected, "{name}");
        }
    }
}

#[test]
fn assemble_heads_lets_the_most_confident_foreground_vote_win() {
    // 4 voxels; liver site [bg, liver=1], kidney site [bg, kidney=3]
    let liver = ArrayD::from_shape_vec(
        IxDyn(&[2, 2, 2]),
        vec![0.9, 0.4, 0.3, 0.6, 0.1, 0.6, 0.7, 0.4],
    )
    .unwrap();
    let kidney = ArrayD::from_shape_vec(
        IxDyn(&[2, 2, 2]),
        vec![0.8, 0.9, 0.2, 0.3, 0.2, 0.1, 0.8, 0.7],
    )
    .unwrap();
    let labels = assemble_heads(&[
        HeadPrediction {
            site: "liver",
            probabilities: liver.view(),
            labels: &[0, 1],
        },
        HeadPrediction {
            site: "kidney",
            probabilities: kidney.view(),
            labels: &[0, 3],
        },
    ])
    .unwrap();
    // voxel 0: both background; 1: liver 0.6 (kidney says bg); 2: liver 0.7 vs kidney 0.8;
    // 3: liver says bg 0.6 > 0.4, kidney 0.7
    assert_eq!(
        labels,
        ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0u16, 1, 3, 3]).unwrap()
    );
    let bad = assemble_heads(&[
        HeadPrediction {
            site: "liver",
            probabilities: liver.view(),
            labels: &[0, 1],
        },
        HeadPrediction {
            site: "odd",
            probabilities: kidney.view(),
            labels: &[0],
        },
    ])
    .unwrap_err();
    assert!(bad.to_string().contains("`odd`"), "{bad}");
}

// ---------------------------------------------------------------- errors

fn err_of(global: &Weights, updates: &[ClientUpdate]) -> String {
    FedAvg::new()
        .aggregate(4, global, updates)
        .unwrap_err()
        .to_string()
}

#[test]
fn errors_name_the_site_and_the_key() {
    let global = model(1);
    let good = update("good", 2, 3);

    let mut missing = update("hospital-b", 3, 3);
    missing.weights.remove("enc.gn.bias");
    let e = err_of(&global, &[good.clone(), missing]);
    assert!(
        e.contains("`hospital-b`") && e.contains("`enc.gn.bias`") && e.contains("missing"),
        "{e}"
    );

    let mut extra = update("hospital-c", 3, 3);
    extra.weights.insert("enc.extra.weight", array(1, &[2]));
    let e = err_of(&global, &[good.clone(), extra]);
    assert!(
        e.contains("`hospital-c`") && e.contains("`enc.extra.weight`"),
        "{e}"
    );

    let mut shape = update("hospital-d", 3, 3);
    shape.weights.insert("enc.conv.0.bias", array(1, &[5]));
    let e = err_of(&global, &[good.clone(), shape]);
    assert!(
        e.contains("`hospital-d`")
            && e.contains("`enc.conv.0.bias`")
            && e.contains("[5]")
            && e.contains("[4]"),
        "{e}"
    );

    let mut nan = update("hospital-e", 3, 3);
    nan.weights.get_mut("enc.conv.0.weight").unwrap()[[0, 0, 1, 1]] = f32::NAN;
    let e = err_of(&global, &[good.clone(), nan]);
    assert!(
        e.contains("`hospital-e`") && e.contains("`enc.conv.0.weight`") && e.contains("non-finite"),
        "{e}"
    );

    let zero = update("hospital-f", 3, 0);
    let e = err_of(&global, &[good.clone(), zero]);
    assert!(
        e.contains("`hospital-f`") && e.contains("num_examples is 0"),
        "{e}"
    );

    let e = err_of(&global, &[good.clone(), good.clone()]);
    assert!(
        e.contains("`good`") && e.contains("more than one update"),
        "{e}"
    );

    let e = FedAvg::new().aggregate(4, &global, &[]).unwrap_err();
    assert!(matches!(e, FedError::NoUpdates { round: 4 }), "{e}");

    // every strategy checks the same way
    let mut shape = update("hospital-g", 3, 3);
    shape
        .weights
        .insert("enc.conv.0.weight", array(1, &[4, 2, 1, 1]));
    for name in ["FedProx", "FedBN", "FedAdam", "FedYogi", "SegViz"] {
        let mut agg = AggregatorRegistry::with_builtins()
            .build(name, &serde_json::Value::Null)
            .unwrap();
        let e = agg
            .aggregate(1, &global, &[good.clone(), shape.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`hospital-g`") && e.contains("`enc.conv.0.weight`"),
            "{name}: {e}"
        );
    }
}

// ---------------------------------------------------------------- registry

#[test]
fn registry_builds_each_builtin_by_name() {
    let r = AggregatorRegistry::with_builtins();
    assert_eq!(
        r.names(),
        ["FedAdam", "FedAvg", "FedBN", "FedProx", "FedYogi", "SegViz"]
    );
    for name in r.names() {
        let agg = r.build(name, &serde_json::json!({})).unwrap();
        assert_eq!(agg.name(), name);
        let again = r.build(name, &agg.params_json()).unwrap();
        assert_eq!(again.params_json(), agg.params_json(), "{name}");
        assert_eq!(
            r.build(&name.to_lowercase(), &serde_json::Value::Null)
                .unwrap()
                .name(),
            name
        );
    }
    let prox = r.build("FedProx", &serde_json::json!({"mu": 0.5})).unwrap();
    assert_eq!(prox.proximal_mu(), Some(0.5));
    assert_eq!(
        r.build("FedAvg", &serde_json::Value::Null)
            .unwrap()
            .proximal_mu(),
        None
    );
    let adam = r
        .build_config(&serde_json::json!({"name": "FedAdam", "beta_1": 0.5}))
        .unwrap();
    assert_eq!(adam.params_json()["beta1"], 0.5);
    assert_eq!(adam.params_json()["eta"], 0.1);
    assert_eq!(adam.params_json()["tau"], 1e-9);
    let yogi = r.build("FedYogi", &serde_json::Value::Null).unwrap();
    assert_eq!(yogi.params_json()["eta"], 0.01);
    assert_eq!(yogi.params_json()["tau"], 1e-3);
}

#[test]
fn registry_rejects_unknown_params_naming_the_key() {
    let r = AggregatorRegistry::with_builtins();
    for name in r.names() {
        let e = r
            .build(name, &serde_json::json!({"learning_rat": 1.0}))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("learning_rat") && e.contains(name),
            "{name}: {e}"
        );
    }
    let e = r
        .build("FedAdam", &serde_json::json!({"beta2": 1.0}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`beta2`"), "{e}");
    let e = r
        .build("FedProx", &serde_json::json!({"mu": -1.0}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`mu`"), "{e}");
    let e = r
        .build("SegViz", &serde_json::json!({"head_patterns": []}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`head_patterns`"), "{e}");
    let e = r
        .build("FedMedian", &serde_json::Value::Null)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("FedMedian") && e.contains("FedAvg, FedBN"),
        "{e}"
    );
}

#[test]
fn users_register_their_own_aggregator() {
    /// Keeps the global weights (a do-nothing server).
    struct Frozen;
    impl Aggregator for Frozen {
        fn name(&self) -> &str {
            "Frozen"
        }
        fn params_json(&self) -> serde_json::Value {
            serde_json::json!({})
        }
        fn aggregate(
            &mut self,
            round: usize,
            global: &Weights,
            updates: &[ClientUpdate],
        ) -> medseg_federated::Result<Weights> {
            medseg_federated::validate_updates(round, global, updates, &|_| false)?;
            Ok(global.clone())
        }
    }
    let mut r = AggregatorRegistry::with_builtins();
    r.register("Frozen", |_| Ok(Box::new(Frozen)));
    let mut agg = r.build("Frozen", &serde_json::Value::Null).unwrap();
    let global = model(1);
    assert_eq!(
        agg.aggregate(1, &global, &[update("a", 2, 1)]).unwrap(),
        global
    );
}

// ---------------------------------------------------------------- weights

#[test]
fn weights_round_trip_through_varmaps_and_safetensors() {
    let dev = Device::Cpu;
    let global = unet_weights("UNet2D", serde_json::json!({}));
    let vm = global.to_varmap(&dev).unwrap();
    assert_eq!(Weights::from_varmap(&vm).unwrap(), global);

    let other = perturbed(&global, 3);
    other.load_into(&vm).unwrap();
    assert_eq!(Weights::from_varmap(&vm).unwrap(), other);

    let bytes = other.to_safetensors_bytes().unwrap();
    assert_eq!(Weights::from_safetensors_bytes(&bytes).unwrap(), other);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("global.safetensors");
    other.save(&path).unwrap();
    assert_eq!(Weights::load(&path).unwrap(), other);

    // a medseg-nets checkpoint reads as weights with the same names
    let ck = dir.path().join("net.safetensors");
    medseg_nets::save_checkpoint(&ck, &vm, &serde_json::json!({"name": "UNet2D"})).unwrap();
    assert_eq!(Weights::load(&ck).unwrap(), other);

    // mismatches name the array and write nothing
    let mut short = global.clone();
    short.remove("decoder.out_conv.bias");
    let e = short.load_into(&vm).unwrap_err().to_string();
    assert!(e.contains("`decoder.out_conv.bias`"), "{e}");
    assert_eq!(Weights::from_varmap(&vm).unwrap(), other);
    let mut wrong = global.clone();
    wrong.insert("decoder.out_conv.bias", array(1, &[7]));
    let e = wrong.load_into(&vm).unwrap_err().to_string();
    assert!(
        e.contains("`decoder.out_conv.bias`") && e.contains("[7]"),
        "{e}"
    );
    let mut more = global.clone();
    more.insert("stray.weight", array(1, &[1]));
    let e = more.load_into(&vm).unwrap_err().to_string();
    assert!(e.contains("`stray.weight`"), "{e}");
    // …unless skipped
    more.load_into_except(&vm, |k| k.starts_with("stray"))
        .unwrap();
    assert_eq!(Weights::from_varmap(&vm).unwrap(), global);

    // a rank-0 array survives both ways
    let mut scalar = Weights::new();
    scalar.insert("s", ArrayD::from_elem(IxDyn(&[]), 2.5f32));
    let back = Weights::from_safetensors_bytes(&scalar.to_safetensors_bytes().unwrap()).unwrap();
    assert_eq!(back, scalar);
    assert_eq!(
        Weights::from_varmap(&scalar.to_varmap(&dev).unwrap()).unwrap(),
        scalar
    );
}

#[test]
fn key_patterns() {
    assert!(key_matches("*out_conv*", "decoder.out_conv.weight"));
    assert!(key_matches(
        "*out_conv*",
        "aux_decoders.0.decoder.out_conv1.bias"
    ));
    assert!(key_matches("final.*", "final.bias"));
    assert!(!key_matches("final.*", "finalconv3.bias"));
    assert!(key_matches("conv2.weight", "conv2.weight"));
    assert!(!key_matches("conv2.weight", "up1.conv2.weight"));
    assert!(key_matches("enc.?.w*", "enc.1.weight"));
    assert!(!key_matches("enc.?.w*", "enc.12.weight"));
    assert!(key_matches("*", ""));
    assert!(!key_matches("a", ""));
}
