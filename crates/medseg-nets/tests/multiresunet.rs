//! MultiResUNet against a PyTorch transcription of the authors' reference
//! implementation (tools/make_multiresunet_fixtures.py, itself checked
//! against the reference's own code: same state-dict names and shapes, same
//! outputs): outputs to 1e-4 in eval and train mode with imported weights,
//! BatchNorm running statistics after a train pass, parameter counts of the
//! reference configuration, odd input sizes, configuration errors,
//! checkpoints and a few training steps.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{
    adam_losses, build, check_running_stats, config_error, cross_entropy, import_weights,
    labelled_images, load_io, max_abs_diff, read_json, shape_of,
};
use medseg_nets::{
    count_parameters, load_network, save_checkpoint, summarize, MultiResUNet, MultiResUNetConfig,
    SegNetwork,
};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("multiresunet_reference.json")
}

fn with_name(config: &Value) -> Value {
    let mut c = config.clone();
    c["name"] = json!("MultiResUNet");
    c
}

fn run_case(case: &str) {
    let r = reference();
    let info = &r["cases"][case];
    let (varmap, net) = build(&with_name(&info["config"]));
    assert_eq!(
        net.num_parameters() as u64,
        info["num_parameters"].as_u64().unwrap(),
        "{case}: parameter count"
    );
    // PyTorch's state dict also holds one num_batches_tracked per BatchNorm
    let bns = net
        .parameters()
        .iter()
        .filter(|p| p.name.ends_with("running_mean"))
        .count();
    assert_eq!(
        (net.parameters().len() + bns) as u64,
        info["num_tensors"].as_u64().unwrap(),
        "{case}: tensor count"
    );
    import_weights(&varmap, case);
    let io = load_io(case);
    let x = &io["input"];
    assert_eq!(x.dims(), shape_of(&info["input_shape"]).as_slice());
    let out = net.forward_t(x, false).unwrap();
    assert!(out.deep.is_empty() && out.aux.is_empty());
    let d = max_abs_diff(&out.logits, &io["eval"]);
    assert!(d < 1e-4, "{case}: eval logits differ by {d}");
    if let (Some(xo), Some(yo)) = (io.get("input_odd"), io.get("eval_odd")) {
        let d = max_abs_diff(&net.forward(xo).unwrap(), yo);
        assert!(d < 1e-4, "{case}: odd-size eval logits differ by {d}");
    }
    let out = net.forward_t(x, true).unwrap();
    let d = max_abs_diff(&out.logits, &io["train"]);
    assert!(d < 1e-4, "{case}: train logits differ by {d}");
    let checked = check_running_stats(&varmap, &io, case, 1e-4);
    assert_eq!(checked, 2 * bns, "{case}: running statistics checked");
}

#[test]
fn multiresunet2d_matches_reference() {
    run_case("multiresunet2d");
}

#[test]
fn multiresunet2d_other_alpha_and_odd_sizes_match_reference() {
    run_case("multiresunet2d_alpha");
}

#[test]
fn multiresunet3d_matches_reference() {
    run_case("multiresunet3d");
}

#[test]
fn default_parameter_counts_equal_reference() {
    let r = reference();
    let defaults = r["defaults"].as_object().unwrap();
    assert_eq!(defaults.len(), 3);
    for (name, info) in defaults {
        let config = with_name(&info["config"]);
        let (varmap, net) = build(&config);
        assert_eq!(
            net.num_parameters() as u64,
            info["num_parameters"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(count_parameters(&varmap), net.num_parameters(), "{name}");
        // the defaults are the reference's: 32 * [1, 2, 4, 8, 16], alpha 1.67
        let cfg = net.config();
        assert_eq!(cfg["feature_chns"], json!([32, 64, 128, 256, 512]));
        assert_eq!(cfg["alpha"], json!(1.67));
    }
    // block widths with the reference's rounding: int(53.44*0.167) = 8,
    // int(53.44*0.333) = 17, int(53.44*0.5) = 26 -> 51, ...
    let cfg = MultiResUNetConfig::new(1, 2);
    assert_eq!(cfg.block_channels(), vec![51, 105, 212, 426, 853]);
}

fn pseudo(shape: &[usize], seed: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.613 + seed).sin() * 9187.31).fract())
        .collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
}

fn tiny(dimension: usize, levels: usize) -> Value {
    let ft: Vec<usize> = [4, 6, 8, 10, 12][..levels].to_vec();
    json!({"name": "MultiResUNet", "dimension": dimension, "in_chns": 1, "class_num": 2,
           "feature_chns": ft, "seed": 5})
}

#[test]
fn odd_sizes_folding_and_size_limits() {
    // 2D, 5 levels: any size >= 16 works (the reference needs multiples of 16)
    let (_vm, net) = build(&tiny(2, 5));
    let x = pseudo(&[1, 1, 37, 45], 0.3);
    for train in [false, true] {
        let y = net.forward_t(&x, train).unwrap().logits;
        assert_eq!(y.dims(), &[1, 2, 37, 45]);
        let s = y
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s.is_finite() && s > 0.0);
    }
    // smaller than 2^4 on one axis: an error that says why
    let err = net
        .forward(&pseudo(&[1, 1, 15, 40], 0.1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 16"), "{err}");
    // wrong channel count / rank
    let err = net
        .forward(&pseudo(&[1, 3, 16, 16], 0.1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
    let err = net
        .forward(&pseudo(&[1, 16, 16], 0.1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, C, H, W]"), "{err}");

    // a 2D network folds depth into the batch: slice by slice in eval mode
    let x5 = pseudo(&[2, 1, 3, 16, 20], 0.7);
    let y5 = net.forward(&x5).unwrap();
    assert_eq!(y5.dims(), &[2, 2, 3, 16, 20]);
    let slice = x5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap();
    let ys = net.forward(&slice).unwrap();
    let y5s = y5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap();
    assert!(max_abs_diff(&ys, &y5s) < 1e-5);

    // 3D, 3 levels: odd sizes >= 4
    let (_vm, net3) = build(&tiny(3, 3));
    let y = net3.forward(&pseudo(&[1, 1, 5, 9, 6], 0.2)).unwrap();
    assert_eq!(y.dims(), &[1, 2, 5, 9, 6]);
    assert!(net3.forward(&pseudo(&[1, 1, 3, 9, 6], 0.2)).is_err());
    assert!(net3.forward(&pseudo(&[1, 1, 9, 6], 0.2)).is_err());
}

#[test]
fn config_errors_name_the_key() {
    let base = tiny(2, 3);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let cases = [
        (with("alpah", json!(2.0)), "alpah"),
        (with("dropout", json!([0.0, 0.0, 0.0])), "dropout"),
        (with("alpha", json!(-1.0)), "alpha"),
        (with("alpha", json!("big")), "alpha"),
        (with("dimension", json!(4)), "dimension"),
        (with("feature_chns", json!([8])), "feature_chns"),
        // int(3 * 1.67 * 0.167) = 0 channels in the first branch
        (with("feature_chns", json!([3, 8, 8])), "feature_chns"),
        (with("feature_chns", json!([8, -1])), "feature_chns"),
        (with("norm_type", json!("group_norm")), "norm_type"),
        (with("norm_type", json!("layer_norm")), "norm_type"),
        (with("class_num", json!(0)), "class_num"),
        (with("seed", json!(-3)), "seed"),
    ];
    for (config, key) in cases {
        let err = config_error(&config);
        assert!(
            err.contains(key),
            "error for {config} does not name `{key}`: {err}"
        );
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("in_chns");
    let err = config_error(&missing);
    assert!(err.contains("in_chns"), "{err}");
}

#[test]
fn config_is_complete_and_round_trips() {
    // PyMIC's `net_type` spelling and defaults filled in
    let (_vm, net) = build(&json!({"net_type": "MultiResUNet", "in_chns": 3, "class_num": 4}));
    let cfg = net.config();
    assert_eq!(
        cfg,
        json!({"name": "MultiResUNet", "dimension": 2, "in_chns": 3, "class_num": 4,
               "feature_chns": [32, 64, 128, 256, 512], "alpha": 1.67,
               "norm_type": "batch_norm", "seed": 0})
    );
    assert_eq!((net.dimension(), net.in_chns(), net.class_num()), (2, 3, 4));
    let parsed = MultiResUNetConfig::from_json(&cfg).unwrap();
    assert_eq!(parsed, MultiResUNetConfig::new(3, 4));
    // the same struct through the public constructor
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let direct = MultiResUNet::new(parsed, vb).unwrap();
    assert_eq!(direct.config(), cfg);
    assert_eq!(direct.num_parameters(), net.num_parameters());
}

#[test]
fn parameter_names_summary_and_instance_norm() {
    let (vm, net) = build(&tiny(2, 3));
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "multiresblock1.shortcut.conv1.weight",
        "multiresblock1.conv_7x7.batchnorm.running_var",
        "multiresblock3.batch_norm2.bias",
        "respath1.shortcuts.1.batchnorm.weight",
        "respath1.convs.1.conv1.bias",
        "respath1.bns.1.running_mean",
        "respath2.bns.0.weight",
        "upsample4.weight",
        "multiresblock5.batch_norm1.weight",
        "conv_final.batchnorm.bias",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    // Res path lengths L-1 .. 1
    assert!(!names.iter().any(|n| n.starts_with("respath1.bns.2")));
    assert!(!names.iter().any(|n| n.starts_with("respath2.bns.1")));
    assert!(!names.iter().any(|n| n.starts_with("respath3")));
    assert_eq!(vm.all_vars().len(), names.len());
    let s = summarize(net.as_ref(), &[1, 1, 16, 16], &Device::Cpu).unwrap();
    assert_eq!(s.total_params, net.num_parameters());

    // instance norm drops exactly the BatchNorm parameters and buffers
    let mut cfg = tiny(2, 3);
    cfg["norm_type"] = json!("instance_norm");
    let (_vm, inet) = build(&cfg);
    let bn_params: usize = net
        .parameters()
        .iter()
        .filter(|p| p.trainable && p.shape.len() == 1 && !p.name.contains("conv1"))
        .filter(|p| !p.name.starts_with("upsample"))
        .map(|p| p.shape[0])
        .sum();
    assert!(bn_params > 0);
    assert_eq!(inet.num_parameters(), net.num_parameters() - bn_params);
    assert!(inet.parameters().iter().all(|p| p.trainable));
    // conv_final ends in a non-affine instance norm: every output channel
    // of every sample has mean 0 and variance 1 over space
    let y = inet.forward(&pseudo(&[2, 1, 16, 12], 0.4)).unwrap();
    let flat = y.reshape((4, 16 * 12)).unwrap();
    let mean = flat.mean(1).unwrap().to_vec1::<f32>().unwrap();
    let var = flat
        .broadcast_sub(&flat.mean_keepdim(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (m, v) in mean.iter().zip(&var) {
        assert!(m.abs() < 1e-4, "mean {m}");
        assert!((v - 1.0).abs() < 1e-2, "variance {v}");
    }
}

#[test]
fn checkpoint_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multiresunet.safetensors");
    let (vm, net) = build(&tiny(2, 3));
    let x = pseudo(&[2, 1, 12, 16], 0.9);
    // a train pass moves the running statistics, which must be saved too
    net.forward_t(&x, true).unwrap();
    let y = net.forward(&x).unwrap();
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    let (_vm2, net2) = load_network(&path, &Device::Cpu).unwrap();
    assert_eq!(net2.config(), net.config());
    assert_eq!(max_abs_diff(&net2.forward(&x).unwrap(), &y), 0.0);
    // another seed builds other weights (the check above could fail)
    let mut other = tiny(2, 3);
    other["seed"] = json!(6);
    let (_vm3, net3) = build(&other);
    assert!(max_abs_diff(&net3.forward(&x).unwrap(), &y) > 1e-3);
}

#[test]
fn adam_steps_decrease_cross_entropy() {
    let (vm, net) = build(&tiny(2, 3));
    // a bright disc on a noisy background, its mask as the label
    let (n, s) = (2usize, 16usize);
    let noise = pseudo(&[n * s * s], 0.5).to_vec1::<f32>().unwrap();
    let (x, y) = labelled_images(n, s, |b, i, j| {
        let (cy, cx, r) = (7.0 + b as f32, 8.0 - b as f32, 4.5);
        let inside = (i as f32 - cy).powi(2) + (j as f32 - cx).powi(2) < r * r;
        (inside, 0.3 * noise[(b * s + i) * s + j])
    });
    let losses = adam_losses(&vm, 8, || {
        cross_entropy(&net.forward_t(&x, true).unwrap().logits, &y)
    });
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.7 * first, "loss {losses:?}");
}
