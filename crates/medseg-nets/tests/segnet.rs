//! SegNet and the pooling with indices it needs: parity with a PyTorch
//! transcription (fixtures by tools/make_segnet_fixtures.py), PyTorch's
//! tie rule for the indices, finite-difference gradients of pooling and
//! unpooling, the default parameter count, configuration errors and a
//! checkpoint round trip.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{
    build, build_with, check_running_stats, config_error, import_weights, load_io, max_abs,
    max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{
    count_parameters, load_network, max_pool2d_with_indices, max_unpool2d, save_checkpoint, SegNet,
    SegNetConfig,
};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("segnet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("SegNet");
    c
}

/// Largest difference relative to the largest magnitude of `want`.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    max_abs_diff(got, want) / max_abs(want).max(1e-6)
}

#[test]
fn matches_reference_in_eval_and_train_mode_with_running_stats() {
    let r = reference();
    let (varmap, net) = build(&tiny_config());
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    import_weights(&varmap, "segnet_tiny");
    let io = load_io("segnet_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]));
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    assert!(max_abs(&io["eval"]) > 0.1, "degenerate reference output");
    let d = rel_diff(&y.logits, &io["eval"]);
    eprintln!("SegNet eval: max relative difference {d:e}");
    assert!(d < 1e-4, "eval logits differ by {d} (relative)");

    // any size of at least 32: poolings floor, unpoolings restore the size
    let xo = pattern(&shape_of(&r["tiny"]["odd_input_shape"]));
    let yo = net.forward(&xo).unwrap();
    let d = rel_diff(&yo, &io["eval_odd"]);
    eprintln!("SegNet eval 45x38: max relative difference {d:e}");
    assert!(d < 1e-4, "45x38 eval logits differ by {d} (relative)");

    let yt = net.forward_t(&x, true).unwrap().logits;
    let d = rel_diff(&yt, &io["train"]);
    eprintln!("SegNet train: max relative difference {d:e}");
    assert!(d < 1e-4, "train logits differ by {d} (relative)");
    assert!(max_abs_diff(&y.logits, &io["train"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, "segnet_tiny", 1e-4);
    // 2 per BatchNorm: 8 encoder convolutions, 8 - 1 decoder convolutions
    assert_eq!(checked, 2 * (8 + 7));
}

/// The candle composition path (f64: no `medseg-ops` kernels) gives the
/// same outputs.
#[test]
fn f64_path_matches_reference() {
    let r = reference();
    let (varmap, net) = build_with(&tiny_config(), DType::F64);
    import_weights(&varmap, "segnet_tiny");
    let io = load_io("segnet_tiny");
    let x = pattern(&shape_of(&r["tiny"]["input_shape"]))
        .to_dtype(DType::F64)
        .unwrap();
    let y = net.forward(&x).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let d = rel_diff(&y, &io["eval"]);
    assert!(d < 1e-4, "f64 eval logits differ by {d} (relative)");
}

#[test]
fn pooling_indices_follow_pytorch_including_ties() {
    let io = load_io("segnet_tiny");
    let x = &io["pool_x"];
    for (k, s, case) in [(2, 2, "k2"), (3, 2, "k3s2")] {
        let (v, i) = max_pool2d_with_indices(x, k, s).unwrap();
        assert_eq!(i.dtype(), DType::U32);
        assert_eq!(max_abs_diff(&v, &io[&format!("pool_{case}_val")]), 0.0);
        let want = io[&format!("pool_{case}_idx")]
            .to_dtype(DType::F32)
            .unwrap();
        let got = i.to_dtype(DType::F32).unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0, "{case} indices");
    }
    // a plane of equal values: every window picks its top-left element
    let (_, i) = max_pool2d_with_indices(x, 2, 2).unwrap();
    let first: Vec<u32> = i
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<u32> = (0..3u32)
        .flat_map(|r| (0..4u32).map(move |c| 2 * r * 9 + 2 * c))
        .collect();
    assert_eq!(first, want);
    let (v, i) = max_pool2d_with_indices(x, 2, 2).unwrap();
    let u = max_unpool2d(&v, &i, [7, 9]).unwrap();
    assert_eq!(max_abs_diff(&u, &io["unpool_k2"]), 0.0);
    // int64 indices (PyTorch's dtype) are accepted too
    let u64i = max_unpool2d(&v, &i.to_dtype(DType::I64).unwrap(), [7, 9]).unwrap();
    assert_eq!(max_abs_diff(&u64i, &u), 0.0);
    // errors: mismatched indices, an output plane too small
    assert!(max_unpool2d(&v, &i.narrow(3, 0, 2).unwrap(), [7, 9]).is_err());
    let e = max_unpool2d(&v, &i, [3, 3]).unwrap_err().to_string();
    assert!(e.contains("outside"), "{e}");
    assert!(max_pool2d_with_indices(x, 8, 2).is_err());
}

/// Central finite differences of `sum(w * unpool(pool(x) * g))` against
/// autograd, in f64 on an input without ties (for x) and with them (the
/// gradient goes to the first maximum only).
#[test]
fn pooling_and_unpooling_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let (n, c, h, w) = (1usize, 2usize, 5usize, 6usize);
    let len = n * c * h * w;
    // distinct values: a permutation of 0..len, scaled
    let vals: Vec<f64> = (0..len).map(|i| ((i * 37) % len) as f64 / 7.0).collect();
    let weights: Vec<f64> = (0..len)
        .map(|i| ((i * 13 % 17) as f64 - 8.5) / 5.0)
        .collect();
    let wt = Tensor::from_vec(weights, (n, c, h, w), &dev).unwrap();
    let g = Tensor::from_vec(
        (0..n * c * 2 * 3)
            .map(|i| 1.0 + i as f64 / 4.0)
            .collect::<Vec<_>>(),
        (n, c, 2, 3),
        &dev,
    )
    .unwrap();
    let loss = |x: &Tensor| -> Tensor {
        let (p, i) = max_pool2d_with_indices(x, 2, 2).unwrap();
        let u = max_unpool2d(&(p * &g).unwrap().sqr().unwrap(), &i, [h, w]).unwrap();
        (u * &wt).unwrap().sum_all().unwrap()
    };
    let var = candle_core::Var::from_vec(vals.clone(), (n, c, h, w), &dev).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let ga: Vec<f64> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let eps = 1e-5;
    let mut nonzero = 0;
    for k in 0..len {
        let mut plus = vals.clone();
        plus[k] += eps;
        let mut minus = vals.clone();
        minus[k] -= eps;
        let f = |v: Vec<f64>| {
            loss(&Tensor::from_vec(v, (n, c, h, w), &dev).unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        let fd = (f(plus) - f(minus)) / (2.0 * eps);
        assert!(
            (fd - ga[k]).abs() < 1e-6 * (1.0 + fd.abs()),
            "element {k}: finite difference {fd}, autograd {}",
            ga[k]
        );
        nonzero += (ga[k] != 0.0) as usize;
    }
    // one selected element per 2x2 window (2 x 3 windows per plane)
    assert_eq!(nonzero, n * c * 6);

    // ties: the whole gradient of a tied window reaches its first maximum
    let x = Tensor::ones((1, 1, 2, 2), DType::F64, &dev).unwrap();
    let var = candle_core::Var::from_tensor(&x).unwrap();
    let (p, _) = max_pool2d_with_indices(var.as_tensor(), 2, 2).unwrap();
    let gr = p.sum_all().unwrap().backward().unwrap();
    let gx: Vec<f64> = gr
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(gx, vec![1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("SegNet");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 29_444_162);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(count_parameters(&varmap) as u64, want);
    // the encoder equals torchvision's vgg16_bn().features (3 input channels)
    let enc: usize = net
        .parameters()
        .iter()
        .filter(|p| p.trainable && p.name.starts_with("encoder."))
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        enc as u64,
        r["default"]["num_parameters_vgg16_bn_encoder"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    // torchvision's vgg16_bn feature indices: the last convolution is 40
    for n in [
        "encoder.0.weight",
        "encoder.1.running_var",
        "encoder.40.weight",
        "encoder.41.bias",
        "decoders.0.6.weight",
        "decoders.4.1.running_mean",
        "classifier.weight",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert!(!names.contains(&"decoders.4.3.weight"));
    assert_eq!(net.encoder_prefixes(), vec!["encoder.".to_string()]);
    assert_eq!(net.input_size(), medseg_nets::InputSize::pooled(2, 5));
}

#[test]
fn encode_returns_the_five_block_outputs_and_sizes_are_checked() {
    let (_vm, net) = build(&tiny_config());
    let x = pattern(&[2, 2, 64, 32]);
    let feats = net.encode(&x, false).unwrap().unwrap();
    let shapes: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![2, 4, 64, 32],
            vec![2, 8, 32, 16],
            vec![2, 8, 16, 8],
            vec![2, 16, 8, 4],
            vec![2, 16, 4, 2]
        ]
    );
    // 5D input: depth folded into the batch
    let y5 = net.forward(&pattern(&[1, 2, 2, 32, 32])).unwrap();
    assert_eq!(y5.dims(), &[1, 3, 2, 32, 32]);
    let err = net
        .forward(&pattern(&[1, 2, 31, 64]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 32"), "{err}");
    let err = net
        .forward(&pattern(&[1, 3, 32, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
}

#[test]
fn config_errors_name_the_key_and_config_round_trips() {
    let mut c = tiny_config();
    c["feature_chn"] = json!([4, 8, 8, 16, 16]);
    assert!(config_error(&c).contains("feature_chn"));
    for (key, val) in [
        ("feature_chns", json!([4, 8, 16, 16])),
        ("feature_chns", json!([4, 8, 0, 16, 16])),
        ("block_convs", json!([1, 0, 1, 1, 1])),
        ("block_convs", json!([1, 1, 1])),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [("in_chns", json!("two")), ("block_convs", json!(2))] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    let (_vm, net) = build(&json!({"net_type": "SegNet", "in_chns": 1, "class_num": 2}));
    assert_eq!(
        net.config(),
        serde_json::to_value(SegNetConfig::new(1, 2)).unwrap()
    );
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());
    let mut cfg = SegNetConfig::new(1, 2);
    cfg.block_convs = vec![2, 2];
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = SegNet::new(cfg, vb).err().unwrap().to_string();
    assert!(err.contains("block_convs"), "{err}");
}

#[test]
fn checkpoint_round_trip_and_gradients_reach_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segnet.safetensors");
    let mut config = tiny_config();
    config["seed"] = json!(5);
    let (vm, net) = build(&config);
    let x = pattern(&[2, 2, 32, 32]);
    let yt = net.forward_t(&x, true).unwrap().logits;
    let grads = yt.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    {
        let data = vm.data().lock().unwrap();
        for n in ["encoder.0.weight", "decoders.0.0.weight", "classifier.bias"] {
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

/// The shared backbone, built on its own: torchvision's `vgg16_bn` and
/// `vgg11` feature extractors have 14,723,136 and 9,220,480 parameters
/// (their documented totals less the classifier), with torchvision's
/// module indices.
#[test]
fn vgg_backbone_matches_torchvision_layouts() {
    use medseg_nets::backbones::{Vgg, VGG11_CONVS, VGG16_CONVS, VGG_WIDTHS};
    for (convs, bn, want, last) in [
        (&VGG16_CONVS, true, 14_723_136usize, "features.40.weight"),
        (&VGG11_CONVS, false, 9_220_480, "features.18.weight"),
    ] {
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let vgg = Vgg::from_varbuilder(vb.pp("features"), 0, 3, &VGG_WIDTHS, convs, bn).unwrap();
        assert_eq!(count_parameters(&vm), want);
        assert!(vm.data().lock().unwrap().contains_key(last), "{last}");
        assert_eq!(vgg.num_blocks(), 5);
        let feats = vgg.forward(&pattern(&[1, 3, 32, 32]), false).unwrap();
        assert_eq!(feats[4].dims(), &[1, 512, 2, 2]);
    }
    assert_eq!(Vgg::conv_index(&VGG16_CONVS, true, 4, 2), 40);
    assert_eq!(Vgg::conv_index(&VGG11_CONVS, false, 2, 1), 8);
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    assert!(Vgg::from_varbuilder(vb, 0, 3, &[4, 0], &[1, 1], false).is_err());
}
