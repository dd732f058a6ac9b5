//! DenseUNet (H-DenseUNet's 2D network): parity with a PyTorch transcription
//! of its reference implementation (tools/make_denseunet_fixtures.py; TCSM's
//! `DenseUnet_2d`), the parameter count of the default DenseNet-161
//! configuration, odd and 5D input sizes, configuration errors, checkpoints
//! and a few training steps.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{
    adam_losses, build, build_with, check_running_stats, config_error, cross_entropy, fixtures,
    import_weights, labelled_images, load_io, max_abs, max_abs_diff, read_json,
};
use medseg_nets::{
    load_network, read_checkpoint_config, save_checkpoint, trainable_vars, DenseUNet,
    DenseUNetConfig, SegNetwork,
};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("denseunet_reference.json")
}

/// A tiny network (encoder channels 4, 6, 7, 7, 5) for the fast tests.
fn tiny(seed: u64, dropout: f64) -> Value {
    json!({"name": "DenseUNet", "in_chns": 1, "class_num": 2, "growth_rate": 2,
           "block_config": [1, 2, 2, 1], "num_init_features": 4, "bn_size": 2,
           "decoder_chns": [7, 6, 4, 4, 3], "dropout": dropout, "seed": seed})
}

fn smooth_input(shape: &[usize], phase: f64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .reshape(shape)
        .unwrap()
        .affine(0.037, phase)
        .unwrap()
        .sin()
        .unwrap()
}

#[test]
fn matches_the_pytorch_reference_in_eval_and_train_mode() {
    let r = reference();
    let case = &r["tiny"];
    let mut config = case["config"].clone();
    config["name"] = json!("DenseUNet");
    config["dropout"] = json!(0.0); // the fixture ran the head without dropout
    let (varmap, net) = build(&config);
    assert_eq!(
        net.num_parameters() as u64,
        case["num_parameters"].as_u64().unwrap()
    );
    import_weights(&varmap, "denseunet_tiny");
    // every tensor the network holds has the reference's name and shape
    let sd = candle_core::safetensors::load(
        fixtures().join("denseunet_tiny.weights.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ours: HashMap<&str, &Vec<usize>> = net
        .parameters()
        .iter()
        .map(|p| (p.name.as_str(), &p.shape))
        .collect();
    let theirs: Vec<(&String, &Tensor)> = sd
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(ours.len(), theirs.len());
    for (k, t) in theirs {
        assert_eq!(
            ours.get(k.as_str()).map(|s| s.as_slice()),
            Some(t.dims()),
            "{k}"
        );
    }
    assert!(ours.contains_key("rn.denseblock3.denselayer2.conv2.weight"));
    assert!(ours.contains_key("up1.x_conv_.weight"));

    let io = load_io("denseunet_tiny");
    let x = &io["input"];
    let eval = net.forward_t(x, false).unwrap();
    assert!(eval.deep.is_empty() && eval.aux.is_empty());
    let d = max_abs_diff(&eval.logits, &io["eval"]);
    assert!(d < 1e-4, "eval logits differ by {d}");

    let train = net.forward_t(x, true).unwrap();
    let d = max_abs_diff(&train.logits, &io["train"]);
    assert!(d < 1e-4, "train logits differ by {d}");
    // train mode differs from eval mode (batch statistics), so the check above
    // is not the eval check again
    assert!(max_abs_diff(&train.logits, &eval.logits) > 1e-2);
    let checked = check_running_stats(&varmap, &io, "denseunet_tiny", 1e-4);
    // 2 per BatchNorm: stem, 6 dense layers x 2, 3 transitions, norm5, 4 up blocks, head
    assert_eq!(checked, 2 * (1 + 12 + 3 + 1 + 4 + 1));
}

#[test]
fn default_configuration_has_the_reference_parameter_count() {
    let r = reference();
    let def = &r["default"];
    let mut config = def["config"].clone();
    config["name"] = json!("DenseUNet");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg: DenseUNetConfig = serde_json::from_value(config).unwrap();
    assert_eq!(cfg, DenseUNetConfig::new(3, 2));
    assert_eq!(cfg.encoder_chns(), [96, 384, 768, 2112, 2208]);
    let net = DenseUNet::new(cfg, vb).unwrap();
    assert_eq!(
        net.num_parameters() as u64,
        def["num_parameters"].as_u64().unwrap()
    );
    // the encoder alone is torchvision's densenet161 `features`
    let enc: usize = net
        .parameters()
        .iter()
        .filter(|p| p.trainable && p.name.starts_with("rn."))
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(enc as u64, def["encoder_parameters"].as_u64().unwrap());
    assert_eq!(enc, 26_472_000);
}

#[test]
fn odd_sizes_and_volumes_give_logits_at_the_input_size() {
    let (_vm, net) = build(&tiny(5, 0.3));
    let x = smooth_input(&[1, 1, 37, 45], 0.2);
    let y = net.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 2, 37, 45]);
    let yt = net.forward_t(&x, true).unwrap().logits;
    assert_eq!(yt.dims(), &[1, 2, 37, 45]);

    // a volume is processed slice by slice (eval mode: slices independent)
    let v = smooth_input(&[1, 1, 2, 33, 40], 0.7);
    let yv = net.forward(&v).unwrap();
    assert_eq!(yv.dims(), &[1, 2, 2, 33, 40]);
    for d in 0..2 {
        let slice = v.narrow(2, d, 1).unwrap().squeeze(2).unwrap();
        let ys = net.forward(&slice).unwrap();
        let yd = yv.narrow(2, d, 1).unwrap().squeeze(2).unwrap();
        assert!(max_abs_diff(&ys, &yd) < 1e-6);
    }

    // 29 is the smallest side the five down-samplings accept
    assert_eq!(
        net.forward(&smooth_input(&[1, 1, 29, 29], 0.1))
            .unwrap()
            .dims(),
        &[1, 2, 29, 29]
    );
    let e = net
        .forward(&smooth_input(&[1, 1, 28, 64], 0.1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 29"), "{e}");
    let e = net
        .forward(&smooth_input(&[1, 3, 32, 32], 0.1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("input channels"), "{e}");
}

#[test]
fn head_dropout_acts_in_training_only() {
    let (vm_a, a) = build(&tiny(9, 0.0));
    let (vm_b, b) = build(&tiny(9, 0.5));
    // same seed, same weights
    assert_eq!(trainable_vars(&vm_a).len(), trainable_vars(&vm_b).len());
    let x = smooth_input(&[2, 1, 32, 32], 0.4);
    assert_eq!(
        max_abs_diff(&a.forward(&x).unwrap(), &b.forward(&x).unwrap()),
        0.0
    );
    let ta = a.forward_t(&x, true).unwrap().logits;
    let tb = b.forward_t(&x, true).unwrap().logits;
    assert!(max_abs_diff(&ta, &tb) > 1e-3);
}

#[test]
fn configuration_errors_name_the_key() {
    let mut c = tiny(0, 0.3);
    c["growth_rte"] = json!(2);
    let e = config_error(&c);
    assert!(e.contains("growth_rte"), "{e}");

    let mut c = tiny(0, 0.3);
    c["decoder_chns"] = json!([8, 6, 4, 4, 3]);
    let e = config_error(&c);
    assert!(
        e.contains("decoder_chns[0]") && e.contains("dense block 2"),
        "{e}"
    );

    let mut c = tiny(0, 0.3);
    c["decoder_chns"] = json!([7, 6, 4, 4]);
    assert!(config_error(&c).contains("decoder_chns"));

    let mut c = tiny(0, 0.3);
    c["block_config"] = json!([1, 2, 2]);
    assert!(config_error(&c).contains("block_config"));

    let e = config_error(&tiny(0, 1.5));
    assert!(e.contains("dropout"), "{e}");

    let mut c = tiny(0, 0.3);
    c["dimension"] = json!(3);
    assert!(config_error(&c).contains("dimension"));

    let mut c = tiny(0, 0.3);
    c["growth_rate"] = json!(0);
    assert!(config_error(&c).contains("growth_rate"));

    // missing required key
    let mut c = tiny(0, 0.3);
    c.as_object_mut().unwrap().remove("class_num");
    assert!(config_error(&c).contains("class_num"));

    // PyMIC's `net_type` is accepted for `name`
    let mut c = tiny(0, 0.3);
    c.as_object_mut().unwrap().remove("name");
    c["net_type"] = json!("DenseUNet");
    build(&c);
}

#[test]
fn checkpoint_round_trip_restores_weights_stats_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("denseunet.safetensors");
    let (vm, net) = build(&tiny(1, 0.3));
    let x = smooth_input(&[2, 1, 32, 40], 0.3);
    net.forward_t(&x, true).unwrap(); // moves the running statistics
    let y = net.forward(&x).unwrap();
    let config = net.config();
    // the stored configuration is complete (defaults filled in)
    assert_eq!(config["drop_rate"], json!(0.0));
    assert_eq!(config["dimension"], json!(2));
    save_checkpoint(&path, &vm, &config).unwrap();
    assert_eq!(read_checkpoint_config(&path).unwrap(), config);

    let (_vm2, other) = build(&tiny(2, 0.3));
    assert!(max_abs_diff(&other.forward(&x).unwrap(), &y) > 1e-3);

    let (_vm3, net3) = load_network(&path, &Device::Cpu).unwrap();
    assert_eq!(net3.config(), config);
    assert_eq!(max_abs_diff(&net3.forward(&x).unwrap(), &y), 0.0);
}

#[test]
fn adam_steps_decrease_cross_entropy() {
    let (vm, net) = build(&tiny(3, 0.0));
    // a disc on a noisy background
    let (x, y) = labelled_images(2, 32, |b, i, j| {
        let (di, dj) = (i as f32 - 14.0 - b as f32, j as f32 - 17.0);
        let inside = di * di + dj * dj < 64.0;
        (
            inside,
            ((i * 31 + j * 17 + b * 7) as f32 * 0.61).sin() * 0.2,
        )
    });
    let losses = adam_losses(&vm, 10, || {
        cross_entropy(&net.forward_t(&x, true).unwrap().logits, &y)
    });
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.7 * first, "loss {losses:?}");
}

/// Off the f32 CPU path (here f64) the network runs on candle compositions
/// (max pooling with padding, average pooling, norms, resizing) and gives
/// the same outputs and gradients as the medseg-ops kernels.
#[test]
fn candle_fallback_path_matches_the_kernels() {
    let config = tiny(4, 0.0);
    let (vm32, n32) = build_with(&config, DType::F32);
    let (vm64, n64) = build_with(&config, DType::F64);
    let x = smooth_input(&[2, 1, 33, 35], 0.9);
    let x64 = x.to_dtype(DType::F64).unwrap();
    for train in [false, true] {
        let a = n32.forward_t(&x, train).unwrap().logits;
        let b = n64
            .forward_t(&x64, train)
            .unwrap()
            .logits
            .to_dtype(DType::F32)
            .unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-4, "train {train}: outputs differ by {d}");
    }
    // gradients of the stem convolution agree
    let grad = |vm: &VarMap, net: &dyn SegNetwork, x: &Tensor| {
        let y = net.forward_t(x, true).unwrap().logits;
        let w = smooth_input(y.dims(), 0.5).to_dtype(y.dtype()).unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let data = vm.data().lock().unwrap();
        let v = data["rn.conv0.weight"].as_tensor();
        g.get(v).unwrap().to_dtype(DType::F32).unwrap()
    };
    let g32 = grad(&vm32, n32.as_ref(), &x);
    let g64 = grad(&vm64, n64.as_ref(), &x64);
    let scale = max_abs(&g64);
    let d = max_abs_diff(&g32, &g64);
    assert!(
        d < 1e-3 * scale.max(1.0),
        "gradients differ by {d} (scale {scale})"
    );
}
