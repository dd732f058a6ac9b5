//! Swin-UNet: parity with a PyTorch transcription of the authors'
//! `SwinTransformerSys` (HuCaoFighting/Swin-Unet; fixtures by
//! tools/make_swinunet_fixtures.py), the shifted-window masks, the default
//! parameter count, the fixed input size, the recorded multiply-adds,
//! configuration errors and a checkpoint round trip.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{
    build, build_with, config_error, import_weights, load_io, max_abs, max_abs_diff, pattern,
    read_json, shape_of,
};
use medseg_nets::transformer::swin::{shifted_window_mask, window_and_shift};
use medseg_nets::{
    count_parameters, load_network, save_checkpoint, summarize, InputSize, SwinUNet, SwinUNetConfig,
};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("swinunet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("SwinUNet");
    c
}

/// Largest difference relative to the largest magnitude of `want`.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    max_abs_diff(got, want) / max_abs(want).max(1e-6)
}

#[test]
fn matches_reference_in_eval_and_train_mode() {
    let r = reference();
    let (varmap, net) = build(&tiny_config());
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    assert_eq!(
        net.parameters().len() as u64,
        r["tiny"]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, "swinunet_tiny");
    let io = load_io("swinunet_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]));
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    assert!(max_abs(&io["eval"]) > 0.1, "degenerate reference output");
    let d = rel_diff(&y.logits, &io["eval"]);
    eprintln!("Swin-UNet eval: max relative difference {d:e}");
    assert!(d < 1e-4, "eval logits differ by {d} (relative)");
    // train mode: dropout and drop path 0 in the fixture; Swin-UNet has
    // layer norms only, so no running statistics change
    let yt = net.forward_t(&x, true).unwrap().logits;
    let d = rel_diff(&yt, &io["train"]);
    eprintln!("Swin-UNet train: max relative difference {d:e}");
    assert!(d < 1e-4, "train logits differ by {d} (relative)");
    assert!(net.parameters().iter().all(|p| p.trainable));
}

/// The candle composition path in f64 gives the same outputs.
#[test]
fn f64_path_matches_reference() {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(), DType::F64);
    import_weights(&varmap, "swinunet_tiny");
    let io = load_io("swinunet_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]))
        .to_dtype(DType::F64)
        .unwrap();
    let y = net.forward(&x).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let d = rel_diff(&y, &io["eval"]);
    assert!(d < 1e-4, "f64 eval logits differ by {d} (relative)");
}

/// The shifted windows' masks equal the reference's `attn_mask` buffers,
/// and windows are clipped as the reference clips them.
#[test]
fn shifted_window_masks_match_reference() {
    let io = load_io("swinunet_tiny");
    // tiny: 16 x 16 tokens in stage 0 and 8 x 8 in stage 1 (window 4, shift 2)
    let cases = [
        ("layers.0.blocks.1", 16),
        ("layers.1.blocks.1", 8),
        ("layers_up.2.blocks.1", 8),
        ("layers_up.3.blocks.1", 16),
    ];
    for (block, res) in cases {
        let want = &io[&format!("mask.{block}.attn_mask")];
        let (ws, shift) = window_and_shift((res, res), 4, true);
        assert_eq!((ws, shift), (4, 2));
        let got = shifted_window_mask((res, res), ws, shift, &Device::Cpu).unwrap();
        assert_eq!(got.dims(), want.dims(), "{block}");
        assert_eq!(max_abs_diff(&got, want), 0.0, "{block}");
    }
    let masks = io.keys().filter(|k| k.starts_with("mask.")).count();
    assert_eq!(masks, cases.len());
    // resolution == window: one window, no shift; smaller: clipped
    assert_eq!(window_and_shift((4, 4), 4, true), (4, 0));
    assert_eq!(window_and_shift((2, 2), 4, false), (2, 0));
    assert_eq!(window_and_shift((56, 56), 7, true), (7, 3));
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    // SwinTransformerSys() defaults: 224 x 224, 3 input channels, 1000 classes
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 27_264_036);
    let (varmap, net) = build(&json!({"name": "SwinUNet", "in_chns": 3, "class_num": 1000}));
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(count_parameters(&varmap) as u64, want);
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "patch_embed.proj.weight",
        "patch_embed.norm.bias",
        "layers.0.blocks.0.norm1.weight",
        "layers.0.blocks.1.attn.relative_position_bias_table",
        "layers.0.blocks.1.attn.qkv.bias",
        "layers.2.blocks.1.attn.proj.weight",
        "layers.3.blocks.1.mlp.fc2.weight",
        "layers.0.downsample.reduction.weight",
        "layers.2.downsample.norm.weight",
        "norm.weight",
        "layers_up.0.expand.weight",
        "layers_up.0.norm.weight",
        "layers_up.1.blocks.1.norm2.bias",
        "layers_up.2.upsample.expand.weight",
        "layers_up.3.blocks.0.mlp.fc1.weight",
        "concat_back_dim.1.weight",
        "concat_back_dim.3.bias",
        "norm_up.weight",
        "up.expand.weight",
        "up.norm.weight",
        "output.weight",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    for n in [
        "layers.3.downsample.reduction.weight",
        "layers_up.3.upsample.expand.weight",
        "concat_back_dim.0.weight",
        "output.bias",
        "absolute_pos_embed",
    ] {
        assert!(!names.contains(&n), "{n} present");
    }
    assert_eq!(
        net.encoder_prefixes(),
        vec!["patch_embed.", "layers.", "norm."]
    );
    assert_eq!(net.input_size(), InputSize::exact(&[224, 224]));
    // the zoo's 96 x 96 setting (window 6) and 1 channel / 4 classes
    for case in ["default_1_4", "zoo"] {
        let mut c = r[case]["config"].clone();
        c["name"] = json!("Swin-UNet");
        let (_vm, net) = build(&c);
        assert_eq!(
            net.num_parameters() as u64,
            r[case]["num_parameters"].as_u64().unwrap(),
            "{case}"
        );
    }
    assert_eq!(
        r["default_1_4"]["num_parameters"].as_u64().unwrap(),
        27_165_348
    );
    assert_eq!(r["zoo"]["num_parameters"].as_u64().unwrap(), 27_154_404);
}

#[test]
fn fixed_input_size_encode_and_folded_depth() {
    let (_vm, net) = build(&tiny_config());
    assert_eq!(net.input_size(), InputSize::exact(&[64, 64]));
    let x = pattern(&[1, 2, 64, 64]);
    let feats = net.encode(&x, false).unwrap().unwrap();
    let shapes: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![1, 8, 16, 16],
            vec![1, 16, 8, 8],
            vec![1, 32, 4, 4],
            vec![1, 64, 2, 2]
        ]
    );
    // 5D input: depth folded into the batch
    let y5 = net.forward(&pattern(&[1, 2, 3, 64, 64])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 3, 64, 64]);
    let err = net
        .forward(&pattern(&[1, 2, 32, 64]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("img_size 64"), "{err}");
    let err = net
        .forward(&pattern(&[1, 3, 64, 64]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
}

/// The summary counts the linear layers' multiply-adds.
#[test]
fn summary_records_linear_layers() {
    let (_vm, net) = build(&tiny_config());
    let s = summarize(net.as_ref(), &[1, 2, 64, 64], &Device::Cpu).unwrap();
    let macs = |name: &str| {
        s.layers
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name} not recorded"))
            .macs
    };
    // 16 x 16 tokens of 8 channels
    assert_eq!(macs("layers.0.blocks.0.attn.qkv"), 256 * 8 * 24);
    assert_eq!(macs("layers.0.blocks.1.mlp.fc1"), 256 * 8 * 16);
    assert_eq!(macs("layers.0.downsample.reduction"), 64 * 32 * 16);
    assert_eq!(macs("concat_back_dim.3"), 256 * 16 * 8);
    assert_eq!(macs("up.expand"), 256 * 8 * 128);
    assert_eq!(macs("output"), 64 * 64 * 8 * 3);
    assert_eq!(macs("patch_embed.proj"), 256 * 8 * 2 * 16);
    let linear = s.layers.iter().filter(|l| l.kind == "Linear").count();
    // per block qkv, proj, fc1, fc2 (7 encoder blocks; the decoder mirrors
    // depths[..3]: 6), 3 mergings, 3 expansions, 3 concat layers, the final
    // expansion
    assert_eq!(linear, 4 * 13 + 3 + 3 + 3 + 1);
    assert!(s.total_macs > macs("up.expand") + macs("output"));
}

#[test]
fn config_errors_name_the_key_and_config_round_trips() {
    let mut c = tiny_config();
    c["window"] = json!(4);
    assert!(config_error(&c).contains("window"));
    for (key, val) in [
        ("img_size", json!(48)),
        ("window_size", json!(3)),
        ("window_size", json!(0)),
        ("num_heads", json!([1, 2, 2])),
        ("num_heads", json!([3, 2, 2, 4])),
        ("depths", json!([2, 0, 2, 1])),
        ("embed_dim", json!(7)),
        ("patch_size", json!(0)),
        ("mlp_ratio", json!(0.0)),
        ("drop_path_rate", json!(1.0)),
        ("final_upsample", json!("deconv")),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("depths", json!(2)), ("ape", json!("yes"))] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    let (_vm, net) = build(&json!({"net_type": "SwinUNet", "in_chns": 1, "class_num": 2}));
    assert_eq!(
        net.config(),
        serde_json::to_value(SwinUNetConfig::new(1, 2)).unwrap()
    );
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());
    let mut cfg = SwinUNetConfig::new(1, 2);
    cfg.window_size = 5;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = SwinUNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("window_size"), "{err}");
}

#[test]
fn checkpoint_round_trip_and_gradients_reach_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swinunet.safetensors");
    let mut config = tiny_config();
    config["seed"] = json!(5);
    config["ape"] = json!(true);
    config["drop_path_rate"] = json!(0.2);
    config["drop_rate"] = json!(0.1);
    let (vm, net) = build(&config);
    let x = pattern(&[2, 2, 64, 64]);
    let yt = net.forward_t(&x, true).unwrap().logits;
    let grads = yt.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    {
        let data = vm.data().lock().unwrap();
        for n in [
            "patch_embed.proj.weight",
            "absolute_pos_embed",
            "layers.0.blocks.1.attn.relative_position_bias_table",
            "layers_up.1.blocks.0.attn.qkv.weight",
            "output.weight",
        ] {
            let g = grads.get(data[n].as_tensor()).expect(n);
            assert!(max_abs(g) > 0.0, "{n}: no gradient");
        }
    }
    let y = net.forward(&x).unwrap();
    // dropout and drop path act in training only
    assert!(max_abs_diff(&y, &yt) > 1e-3);
    assert_eq!(max_abs_diff(&net.forward(&x).unwrap(), &y), 0.0);
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    let (_vm2, net2) = load_network(&path, &Device::Cpu).unwrap();
    assert_eq!(net2.config(), net.config());
    assert_eq!(max_abs_diff(&net2.forward(&x).unwrap(), &y), 0.0);
    assert!(net2
        .encoder_prefixes()
        .contains(&"absolute_pos_embed".to_string()));
}
