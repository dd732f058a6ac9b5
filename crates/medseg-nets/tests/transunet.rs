//! TransUNet and its ResNetV2 backbone: parity with a transcription of the
//! authors' code (fixtures by tools/make_transunet_fixtures.py; that script
//! checks its transcription against the authors' modules themselves), the
//! default parameter counts, the fixed input size, the summary's
//! multiply-adds of the linear layers and configuration errors.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::backbones::resnetv2::{ResNetV2, ResNetV2Spec};
use medseg_nets::{
    count_parameters, load_network, save_checkpoint, summarize, InputSize, SegNetwork, TransUNet,
    TransUNetConfig,
};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("transunet_reference.json")
}

fn tiny_config(case: &str) -> Value {
    let mut c = reference()[case]["config"].clone();
    c["name"] = json!("TransUNet");
    c
}

/// Largest difference relative to the largest magnitude of `want`.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    max_abs_diff(got, want) / max_abs(want).max(1e-6)
}

/// Eval and train parity of the fixture `case` in `dtype`; returns the
/// relative differences.
fn check(case: &str, dtype: DType) -> (f32, f32) {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(case), dtype);
    assert_eq!(
        net.num_parameters() as u64,
        r[case]["num_parameters"].as_u64().unwrap()
    );
    // PyTorch's state dict also holds one `num_batches_tracked` per
    // BatchNorm (conv_more and two per decoder block)
    assert_eq!(
        varmap.all_vars().len() as u64 + 9,
        r[case]["num_tensors"].as_u64().unwrap()
    );
    import_weights(&varmap, case);
    let io = load_io(case);
    let x = pattern(&shape_of(&r[case]["input_shape"]))
        .to_dtype(dtype)
        .unwrap();
    assert!(max_abs(&io["eval"]) > 0.1, "degenerate reference output");
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    let de = rel_diff(&y.logits, &io["eval"]);
    assert!(de < 1e-4, "{case} {dtype:?}: eval logits differ by {de}");
    let yt = net.forward_t(&x, true).unwrap().logits;
    let dt = rel_diff(&yt, &io["train"]);
    assert!(dt < 1e-4, "{case} {dtype:?}: train logits differ by {dt}");
    assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, case, 1e-4);
    assert_eq!(checked, 2 * 9);
    eprintln!("{case} {dtype:?}: relative max differences eval {de:e}, train {dt:e}");
    (de, dt)
}

#[test]
fn r50_vit_matches_reference_in_eval_and_train_mode_with_running_stats() {
    check("transunet_r50_tiny", DType::F32);
}

#[test]
fn pure_vit_matches_reference_in_eval_and_train_mode_with_running_stats() {
    check("transunet_vit_tiny", DType::F32);
}

/// The candle composition path (f64: no `medseg-ops` kernels) agrees too.
#[test]
fn f64_path_matches_reference() {
    check("transunet_r50_tiny", DType::F64);
}

/// The backbone's padded 1/4 skip (the unpadded max pooling gives 15 rows
/// for 64, padded to 16) and its 1/16 output equal the reference's.
#[test]
fn resnetv2_features_match_reference() {
    let r = reference();
    let cfg: TransUNetConfig = serde_json::from_value(tiny_config("transunet_r50_tiny")).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = TransUNet::new(cfg, vb).unwrap();
    import_weights(&varmap, "transunet_r50_tiny");
    let io = load_io("transunet_r50_tiny");
    let x = pattern(&shape_of(&r["transunet_r50_tiny"]["input_shape"]));
    let x3 = Tensor::cat(&[&x, &x, &x], 1).unwrap();
    let feats = net.resnet().unwrap().features(&x3).unwrap();
    let shapes: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![2, 8, 32, 32],
            vec![2, 32, 16, 16],
            vec![2, 64, 8, 8],
            vec![2, 128, 4, 4]
        ]
    );
    for i in [1, 3] {
        let d = rel_diff(&feats[i], &io[&format!("feat.{i}")]);
        assert!(d < 1e-4, "feature {i} differs by {d}");
    }
    // the padding row and column are zeros
    let pad = feats[1].narrow(2, 15, 1).unwrap();
    assert_eq!(max_abs(&pad), 0.0);
    // encode: the three ResNet maps, then the token map
    let enc = net.encode(&x, false).unwrap().unwrap();
    let shapes: Vec<Vec<usize>> = enc.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        shapes[..3],
        [vec![2, 8, 32, 32], vec![2, 32, 16, 16], vec![2, 64, 8, 8]]
    );
    assert_eq!(shapes[3], vec![2, 32, 4, 4]);
    assert_eq!(max_abs_diff(&enc[1], &feats[1]), 0.0);
}

/// Parameter counts of the authors' `VisionTransformer` (written by the
/// fixture script, which checks them against the authors' own modules).
#[test]
fn default_parameter_counts_equal_reference() {
    let r = &reference()["default"];
    let count = |cfg: TransUNetConfig| -> (usize, TransUNet) {
        let net = TransUNet::new(cfg, VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap();
        (net.num_parameters(), net)
    };
    // R50-ViT-B_16 at 224x224 (the authors' defaults), 2 classes (their
    // config's `n_classes`) and 9 (Synapse)
    let (n, net) = count(TransUNetConfig::new(1, 2));
    assert_eq!(n, 105_276_066);
    assert_eq!(n as u64, r["r50_224_2"]["num_parameters"].as_u64().unwrap());
    let (n, _) = count(TransUNetConfig::new(3, 9));
    assert_eq!(n, 105_277_081);
    assert_eq!(n as u64, r["r50_224_9"]["num_parameters"].as_u64().unwrap());
    // configs/zoo/transunet.toml: 96x96, 4 classes
    let mut c = TransUNetConfig::new(1, 4);
    c.img_size = 96;
    let (n, _) = count(c);
    assert_eq!(n, 105_153_476);
    assert_eq!(n as u64, r["r50_96_4"]["num_parameters"].as_u64().unwrap());
    let mut c = TransUNetConfig::new(1, 9);
    c.n_skip = Some(0);
    let (n, _) = count(c);
    assert_eq!(
        n as u64,
        r["r50_224_9_skip0"]["num_parameters"].as_u64().unwrap()
    );
    // the pure ViT-B_16
    let mut c = TransUNetConfig::new(3, 9);
    c.hybrid = false;
    let (n, vit) = count(c);
    assert_eq!(n, 91_674_201);
    assert_eq!(n as u64, r["vit_224_9"]["num_parameters"].as_u64().unwrap());
    assert!(vit.resnet().is_none());
    assert_eq!(vit.cfg().n_skip, Some(0));

    // the authors' names
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for want in [
        "transformer.embeddings.hybrid_model.root.conv.weight",
        "transformer.embeddings.hybrid_model.root.gn.bias",
        "transformer.embeddings.hybrid_model.body.block1.unit1.downsample.weight",
        "transformer.embeddings.hybrid_model.body.block1.unit1.gn_proj.weight",
        "transformer.embeddings.hybrid_model.body.block3.unit9.conv3.weight",
        "transformer.embeddings.patch_embeddings.weight",
        "transformer.embeddings.position_embeddings",
        "transformer.encoder.layer.11.attn.query.weight",
        "transformer.encoder.layer.0.attn.out.bias",
        "transformer.encoder.layer.3.ffn.fc2.weight",
        "transformer.encoder.layer.5.attention_norm.weight",
        "transformer.encoder.layer.5.ffn_norm.bias",
        "transformer.encoder.encoder_norm.weight",
        "decoder.conv_more.0.weight",
        "decoder.conv_more.1.running_var",
        "decoder.blocks.3.conv2.1.weight",
        "segmentation_head.0.weight",
        "segmentation_head.0.bias",
    ] {
        assert!(names.contains(&want), "{want} missing");
    }
    assert!(
        !names.contains(&"transformer.embeddings.hybrid_model.body.block2.unit2.downsample.weight")
    );
    let shape = |n: &str| {
        net.parameters()
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .shape
            .clone()
    };
    assert_eq!(
        shape("transformer.embeddings.position_embeddings"),
        vec![1, 196, 768]
    );
    assert_eq!(
        shape("transformer.embeddings.patch_embeddings.weight"),
        vec![768, 1024, 1, 1]
    );
    assert_eq!(
        shape("transformer.embeddings.hybrid_model.root.conv.weight"),
        vec![64, 3, 7, 7]
    );
    // decoder block 0 takes the 1/8 skip (512), block 3 none
    assert_eq!(
        shape("decoder.blocks.0.conv1.0.weight"),
        vec![256, 512 + 512, 3, 3]
    );
    assert_eq!(
        shape("decoder.blocks.2.conv1.0.weight"),
        vec![64, 128 + 64, 3, 3]
    );
    assert_eq!(shape("decoder.blocks.3.conv1.0.weight"), vec![16, 64, 3, 3]);
    assert_eq!(net.encoder_prefixes(), vec!["transformer.".to_string()]);
    assert_eq!(net.input_size(), InputSize::exact(&[224, 224]));

    // the backbone alone: the authors' ResNetV2((3, 4, 9), 1)
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let resnet = ResNetV2::from_varbuilder(vb, 0, ResNetV2Spec::r50(3)).unwrap();
    assert_eq!(count_parameters(&vm), 11_894_848);
    assert_eq!(
        count_parameters(&vm) as u64,
        r["r50_224_9"]["num_parameters_resnetv2"].as_u64().unwrap()
    );
    assert_eq!(resnet.parameters().len(), vm.all_vars().len());
    assert_eq!(resnet.spec().channels(), [64, 256, 512, 1024]);
}

#[test]
fn input_size_is_fixed_and_volumes_are_folded() {
    let (_vm, net) = build(&tiny_config("transunet_r50_tiny"));
    assert_eq!(net.input_size(), InputSize::exact(&[64, 64]));
    let err = net
        .forward(&pattern(&[1, 1, 32, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("img_size 64"), "{err}");
    let err = net
        .forward(&pattern(&[1, 2, 64, 64]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
    // 5D input: depth folded into the batch, slice by slice
    let x5 = pattern(&[1, 1, 2, 64, 64]);
    let y5 = net.forward(&x5).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 64, 64]);
    let s1 = x5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap();
    let y1 = net.forward(&s1).unwrap();
    let d = max_abs_diff(&y5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap(), &y1);
    assert!(d < 1e-5, "{d}");
    let enc = net.encode(&x5, false).unwrap().unwrap();
    assert_eq!(enc[3].dims(), &[2, 32, 4, 4]);
    // the pure ViT: 16x16 patches, the token map alone
    let (_vm, vit) = build(&tiny_config("transunet_vit_tiny"));
    let enc = vit
        .encode(&pattern(&[1, 3, 32, 32]), false)
        .unwrap()
        .unwrap();
    assert_eq!(enc.len(), 1);
    assert_eq!(enc[0].dims(), &[1, 16, 2, 2]);
}

/// The summary counts the multiply-adds of the linear layers (4 attention
/// and 2 MLP layers per block) besides the convolutions.
#[test]
fn summary_counts_linear_layers() {
    let (_vm, net) = build(&tiny_config("transunet_r50_tiny"));
    let s = summarize(net.as_ref(), &[1, 1, 64, 64], &Device::Cpu).unwrap();
    let linear: Vec<_> = s.layers.iter().filter(|l| l.kind == "Linear").collect();
    assert_eq!(linear.len(), 2 * 6);
    // 16 tokens of width 32: query 16 * 32 * 32, fc1 16 * 32 * 64
    let q = linear
        .iter()
        .find(|l| l.name == "transformer.encoder.layer.0.attn.query")
        .unwrap();
    assert_eq!(q.macs, 16 * 32 * 32);
    let fc1 = linear
        .iter()
        .find(|l| l.name == "transformer.encoder.layer.1.ffn.fc1")
        .unwrap();
    assert_eq!(fc1.macs, 16 * 32 * 64);
    assert_eq!(fc1.params, 32 * 64 + 64);
    assert!(s.layers.iter().any(|l| l.kind == "StdConv2d" && l.macs > 0));
    assert_eq!(s.total_params, net.num_parameters());
    assert_eq!(s.total_macs, s.layers.iter().map(|l| l.macs).sum::<u64>());
}

#[test]
fn config_errors_name_the_key_and_config_round_trips() {
    let mut c = tiny_config("transunet_r50_tiny");
    c["num_head"] = json!(4);
    assert!(config_error(&c).contains("num_head"));
    for (key, val) in [
        ("img_size", json!(72)),
        ("resnet_units", json!([1, 1])),
        ("resnet_units", json!([1, 0, 1])),
        ("gn_groups", json!(3)),
        ("num_heads", json!(5)),
        ("decoder_channels", json!([16, 16, 8])),
        ("n_skip", json!(4)),
        ("dropout_rate", json!(1.0)),
        ("attention_dropout_rate", json!(-0.1)),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
        ("head_channels", json!(0)),
    ] {
        let mut c = tiny_config("transunet_r50_tiny");
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    let mut c = tiny_config("transunet_vit_tiny");
    c["n_skip"] = json!(2);
    let e = config_error(&c);
    assert!(e.contains("n_skip") && e.contains("hybrid"), "{e}");
    for (key, val) in [("hybrid", json!("yes")), ("resnet_units", json!(3))] {
        let mut c = tiny_config("transunet_r50_tiny");
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    let (_vm, net) = build(
        &json!({"net_type": "TransUNet", "in_chns": 1, "class_num": 2,
        "img_size": 32, "hidden_size": 16, "mlp_dim": 16, "num_heads": 2, "num_layers": 1,
        "resnet_width": 32, "resnet_units": [1, 1, 1], "head_channels": 8,
        "decoder_channels": [8, 8, 8, 8]}),
    );
    let mut want = TransUNetConfig::new(1, 2);
    want.img_size = 32;
    want.hidden_size = 16;
    want.mlp_dim = 16;
    want.num_heads = 2;
    want.num_layers = 1;
    want.resnet_width = 32;
    want.resnet_units = vec![1, 1, 1];
    want.head_channels = 8;
    want.decoder_channels = vec![8; 4];
    want.n_skip = Some(3);
    assert_eq!(net.config(), serde_json::to_value(&want).unwrap());
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());
}

#[test]
fn checkpoint_round_trip_gradients_and_dropout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transunet.safetensors");
    let mut config = tiny_config("transunet_r50_tiny");
    config["seed"] = json!(5);
    config["dropout_rate"] = json!(0.1);
    let (vm, net) = build(&config);
    let x = pattern(&[2, 1, 64, 64]);
    let yt = net.forward_t(&x, true).unwrap().logits;
    // dropout draws new masks at every train pass
    let yt2 = net.forward_t(&x, true).unwrap().logits;
    assert!(max_abs_diff(&yt, &yt2) > 0.0);
    let grads = yt.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    {
        let data = vm.data().lock().unwrap();
        for n in [
            "transformer.embeddings.hybrid_model.root.conv.weight",
            "transformer.embeddings.hybrid_model.body.block1.unit1.gn1.weight",
            "transformer.embeddings.position_embeddings",
            "transformer.encoder.layer.0.attn.key.weight",
            "decoder.blocks.2.conv1.0.weight",
            "segmentation_head.0.bias",
        ] {
            let g = grads.get(data[n].as_tensor()).expect(n);
            assert!(max_abs(g) > 0.0, "{n}: no gradient");
        }
    }
    let y = net.forward(&x).unwrap();
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    let (_vm2, net2) = load_network(&path, &Device::Cpu).unwrap();
    assert_eq!(net2.config(), net.config());
    assert_eq!(max_abs_diff(&net2.forward(&x).unwrap(), &y), 0.0);
}
