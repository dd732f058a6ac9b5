//! CE-Net: parity with a PyTorch transcription of the reference
//! implementation (fixtures by tools/make_cenet_fixtures.py), the default
//! parameter count, accepted input sizes, configuration errors, a
//! checkpoint round trip and a few training steps.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{
    adam_losses, build, build_with, check_running_stats, config_error, import_weights, load_io,
    max_abs, max_abs_diff, pattern, read_json, shape_of,
};
use medseg_nets::{count_parameters, load_network, save_checkpoint, CENet, CENetConfig};
use serde_json::{json, Value};

fn reference() -> Value {
    read_json("cenet_reference.json")
}

fn tiny_config() -> Value {
    let mut c = reference()["tiny"]["config"].clone();
    c["name"] = json!("CENet");
    c
}

fn input_shape() -> Vec<usize> {
    shape_of(&reference()["tiny"]["input_shape"])
}

/// Even rows and columns, as the fixture stores the train-mode output.
fn stride2(t: &Tensor) -> Tensor {
    let (_, _, h, w) = t.dims4().unwrap();
    let rows: Vec<u32> = (0..h as u32).step_by(2).collect();
    let cols: Vec<u32> = (0..w as u32).step_by(2).collect();
    t.index_select(&Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(), 2)
        .unwrap()
        .index_select(&Tensor::new(cols.as_slice(), &Device::Cpu).unwrap(), 3)
        .unwrap()
}

#[test]
fn matches_reference_in_eval_and_train_mode_with_running_stats() {
    let r = reference();
    let (varmap, net) = build(&tiny_config());
    assert_eq!(
        net.num_parameters() as u64,
        r["tiny"]["num_parameters"].as_u64().unwrap()
    );
    import_weights(&varmap, "cenet_tiny");
    let io = load_io("cenet_tiny");
    let x = pattern(&input_shape());
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.deep.is_empty() && y.aux.is_empty());
    let d = max_abs_diff(&y.logits, &io["eval"]);
    assert!(max_abs(&io["eval"]) > 0.1, "degenerate reference output");
    assert!(d < 1e-4, "eval logits differ by {d}");

    let yt = net.forward_t(&x, true).unwrap().logits;
    let d = max_abs_diff(&stride2(&yt), &io["train_s2"]);
    assert!(d < 1e-4, "train logits differ by {d}");
    // train mode really differs from eval mode here
    assert!(max_abs_diff(&stride2(&y.logits), &io["train_s2"]) > 1e-2);
    let checked = check_running_stats(&varmap, &io, "cenet_tiny", 1e-4);
    // 2 per BatchNorm: stem, 6 blocks x 2, 3 downsamples, 4 decoders x 3
    assert_eq!(checked, 2 * (1 + 2 * 6 + 3 + 4 * 3));
}

/// In f64 the network runs on candle's own ops (transposed convolutions,
/// pooling, resizing, normalisation) instead of the `medseg-ops` kernels;
/// both paths give the reference's outputs and running statistics.
#[test]
fn candle_fallback_path_matches_reference() {
    let (varmap, net) = build_with(&tiny_config(), DType::F64);
    import_weights(&varmap, "cenet_tiny");
    let x = pattern(&input_shape()).to_dtype(DType::F64).unwrap();
    let y = net.forward(&x).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let io = load_io("cenet_tiny");
    let d = max_abs_diff(&y, &io["eval"]);
    assert!(d < 1e-4, "f64 eval logits differ by {d}");
    let yt = net.forward_t(&x, true).unwrap().logits;
    let d = max_abs_diff(&stride2(&yt), &io["train_s2"]);
    assert!(d < 1e-4, "f64 train logits differ by {d}");
    let data = varmap.data().lock().unwrap();
    for name in ["firstbn.running_var", "decoder4.norm2.running_mean"] {
        let d = max_abs_diff(data[name].as_tensor(), &io[&format!("after_train.{name}")]);
        assert!(d < 1e-4, "f64 {name} differs by {d}");
    }
}

#[test]
fn default_parameter_count_equals_reference() {
    let r = reference();
    let mut config = r["default"]["config"].clone();
    config["name"] = json!("CE-Net");
    let (varmap, net) = build(&config);
    let want = r["default"]["num_parameters"].as_u64().unwrap();
    assert_eq!(want, 29_003_093);
    assert_eq!(net.num_parameters() as u64, want);
    assert_eq!(count_parameters(&varmap) as u64, want);
    // the ResNet-34 part equals torchvision's resnet34 without its fc layer
    let enc: usize = net
        .parameters()
        .iter()
        .filter(|p| p.trainable && (p.name.starts_with("first") || p.name.starts_with("encoder")))
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        enc as u64,
        r["default"]["num_parameters_resnet34_encoder"]
            .as_u64()
            .unwrap()
    );
    // parameters() lists every tensor of the VarMap, with the reference's names
    assert_eq!(net.parameters().len(), varmap.all_vars().len());
    let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
    for n in [
        "firstconv.weight",
        "encoder2.0.downsample.0.weight",
        "encoder3.5.bn2.running_var",
        "dblock.dilate3.bias",
        "spp.conv.weight",
        "decoder4.deconv2.weight",
        "finalconv3.bias",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let find = |n: &str| {
        net.parameters()
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .clone()
    };
    assert_eq!(find("decoder4.conv1.weight").shape, vec![129, 516, 1, 1]);
    assert_eq!(find("finaldeconv1.weight").shape, vec![64, 32, 4, 4]);
    assert!(!names.iter().any(|n| n.starts_with("encoder1.0.downsample")));
}

#[test]
fn dac_biases_start_at_zero_as_in_the_reference() {
    let (varmap, _net) = build(&tiny_config());
    let data = varmap.data().lock().unwrap();
    for n in ["dilate1", "dilate2", "dilate3", "conv1x1"] {
        let b = data[&format!("dblock.{n}.bias")].as_tensor();
        assert_eq!(max_abs(b), 0.0, "dblock.{n}.bias");
        assert!(max_abs(data[&format!("dblock.{n}.weight")].as_tensor()) > 0.0);
    }
    // other biases are random (PyTorch's default initialisation)
    assert!(max_abs(data["finalconv2.bias"].as_tensor()) > 0.0);
}

#[test]
fn input_sizes_multiples_of_32_from_192_work_and_others_are_refused() {
    let (_vm, net) = build(&tiny_config());
    // 2 input channels, 1 class
    let y = net.forward(&pattern(&[1, 2, 192, 224])).unwrap();
    assert_eq!(y.dims(), &[1, 1, 192, 224]);
    // 5D input: depth folded into the batch and unfolded
    let x5 = pattern(&[1, 2, 2, 192, 192]);
    let y5 = net.forward(&x5).unwrap();
    assert_eq!(y5.dims(), &[1, 1, 2, 192, 192]);
    let slice1 = x5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap();
    let d = max_abs_diff(
        &net.forward(&slice1).unwrap(),
        &y5.narrow(2, 1, 1).unwrap().squeeze(2).unwrap(),
    );
    assert!(d < 1e-5, "folded slice differs by {d}");
    for shape in [[1, 2, 37, 45], [1, 2, 160, 192], [1, 2, 192, 200]] {
        let err = net.forward(&pattern(&shape)).unwrap_err().to_string();
        assert!(
            err.contains("multiples of 32") && err.contains("at least 192"),
            "{shape:?}: {err}"
        );
    }
    let err = net
        .forward(&pattern(&[1, 3, 192, 192]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input channels"), "{err}");
    let err = net
        .forward(&pattern(&[2, 192, 192]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, C, H, W]"), "{err}");
}

#[test]
fn config_errors_name_the_key_and_config_round_trips() {
    let vb = || VarBuilder::zeros(DType::F32, &Device::Cpu);
    let mut c = tiny_config();
    c["feature_chn"] = json!([4, 8, 8, 16]);
    assert!(config_error(&c).contains("feature_chn"));
    for (key, val) in [
        ("feature_chns", json!([4, 8, 16])),
        ("feature_chns", json!([4, 8, 2, 16])),
        ("block_nums", json!([1, 0, 1, 1])),
        ("block_nums", json!([1, 1, 1])),
        ("dimension", json!(3)),
        ("in_chns", json!(0)),
        ("class_num", json!(0)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(key), "{key} = {val}: {e}");
    }
    for (key, val) in [
        ("in_chns", json!("two")),
        ("feature_chns", json!(16)),
        ("seed", json!(-1)),
    ] {
        let mut c = tiny_config();
        c[key] = val.clone();
        let e = config_error(&c);
        assert!(e.contains(&format!("`{key}`")), "{key} = {val}: {e}");
    }
    let mut c = tiny_config();
    c.as_object_mut().unwrap().remove("class_num");
    assert!(config_error(&c).contains("class_num"));

    // defaults are filled in and the full configuration is returned; the
    // alias name and PyMIC's `net_type` key build the same network
    let (_vm, net) = build(&json!({"net_type": "CE-Net", "in_chns": 1, "class_num": 2}));
    let mut want = serde_json::to_value(CENetConfig::new(1, 2)).unwrap();
    want["name"] = json!("CE-Net");
    assert_eq!(net.config(), want);
    assert_eq!(net.config()["feature_chns"], json!([64, 128, 256, 512]));
    assert_eq!(net.config()["block_nums"], json!([3, 4, 6, 3]));
    assert_eq!((net.dimension(), net.in_chns(), net.class_num()), (2, 1, 2));
    let (_vm2, again) = build(&net.config());
    assert_eq!(again.config(), net.config());

    // the typed constructor validates too
    let mut cfg = CENetConfig::new(1, 2);
    cfg.feature_chns = vec![64, 128];
    let err = CENet::new(cfg, vb()).err().unwrap().to_string();
    assert!(err.contains("feature_chns"), "{err}");
}

#[test]
fn checkpoint_round_trip_through_load_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cenet.safetensors");
    let mut config = tiny_config();
    config["seed"] = json!(5);
    let (vm, net) = build(&config);
    let x = pattern(&[1, 2, 192, 192]);
    // a train pass moves the running statistics, which must be saved too
    net.forward_t(&x, true).unwrap();
    let y = net.forward(&x).unwrap();
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    let (_vm2, net2) = load_network(&path, &Device::Cpu).unwrap();
    assert_eq!(net2.config(), net.config());
    assert_eq!(max_abs_diff(&net2.forward(&x).unwrap(), &y), 0.0);
    // a network of another seed computes something else
    config["seed"] = json!(6);
    let (_vm3, net3) = build(&config);
    assert!(max_abs_diff(&net3.forward(&x).unwrap(), &y) > 1e-4);
}

#[test]
fn adam_steps_decrease_cross_entropy() {
    let mut config = tiny_config();
    config["class_num"] = json!(2);
    config["block_nums"] = json!([1, 1, 1, 1]);
    config["seed"] = json!(3);
    let (varmap, net) = build(&config);
    // a smooth input; target: class 1 where its first channel is positive
    let (h, w) = (192usize, 192usize);
    let v: Vec<f32> = (0..2 * 2 * h * w)
        .map(|i| {
            let (n, c, y, x) = (i / (2 * h * w), (i / (h * w)) % 2, (i / w) % h, i % w);
            let phase = (n + 2 * c) as f32;
            ((y as f32 / 17.0 + phase).sin() + (x as f32 / 23.0 - phase).cos()) * 0.8
        })
        .collect();
    let x = Tensor::from_vec(v, (2, 2, h, w), &Device::Cpu).unwrap();
    let target = x
        .narrow(1, 0, 1)
        .unwrap()
        .gt(0.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let onehot = Tensor::cat(&[(1.0 - &target).unwrap(), target.clone()], 1).unwrap();
    let loss_of = |train: bool| -> Tensor {
        let logits = net.forward_t(&x, train).unwrap().logits;
        let logp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
        (logp * &onehot)
            .unwrap()
            .sum_keepdim(1)
            .unwrap()
            .neg()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let stem0 = varmap.data().lock().unwrap()["firstconv.weight"]
        .as_tensor()
        .copy()
        .unwrap();
    let losses = adam_losses(&varmap, 6, || loss_of(true));
    let last = loss_of(true).to_scalar::<f32>().unwrap();
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        last < 0.9 * losses[0],
        "cross-entropy did not decrease: {losses:?} then {last}"
    );
    // gradients reach the encoder stem
    let stem = varmap.data().lock().unwrap()["firstconv.weight"]
        .as_tensor()
        .copy()
        .unwrap();
    assert!(max_abs_diff(&stem, &stem0) > 1e-4);
}

/// Gradients of the f32 path (`medseg-ops` kernels: strided and transposed
/// convolutions with padding, padded max pooling) agree with those of the
/// f64 path (candle's own ops), two independent implementations, in train
/// mode with the fixture's weights.
#[test]
fn gradients_of_kernel_and_candle_paths_agree() {
    let shape = input_shape();
    let weights = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect()
    };
    let mut grads = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        let (varmap, net) = build_with(&tiny_config(), dtype);
        import_weights(&varmap, "cenet_tiny");
        let x = pattern(&shape).to_dtype(dtype).unwrap();
        let y = net.forward_t(&x, true).unwrap().logits;
        let w = Tensor::from_vec(weights(y.elem_count()), y.dims(), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let names = [
            "firstconv.weight",
            "encoder2.0.downsample.0.weight",
            "dblock.dilate3.weight",
            "spp.conv.weight",
            "decoder4.deconv2.weight",
            "finaldeconv1.bias",
            "finaldeconv1.weight",
        ];
        grads.push(
            names
                .iter()
                .map(|n| (n.to_string(), g.get(data[*n].as_tensor()).unwrap().clone()))
                .collect::<Vec<_>>(),
        );
    }
    for ((name, a), (_, b)) in grads[0].iter().zip(&grads[1]) {
        let scale = max_abs(b);
        assert!(scale > 1e-3, "{name}: no gradient");
        let d = max_abs_diff(a, b);
        assert!(
            d < 1e-3 * scale,
            "{name}: gradients differ by {d} (scale {scale})"
        );
    }
}

#[test]
fn summary_lists_the_transposed_convolutions_with_their_multiply_adds() {
    let (_varmap, net) = build(&tiny_config());
    let shape = input_shape();
    let s = medseg_nets::summarize(net.as_ref(), &shape, &Device::Cpu).unwrap();
    assert_eq!(s.total_params, net.num_parameters());
    let deconvs: Vec<_> = s
        .layers
        .iter()
        .filter(|l| l.kind == "ConvTranspose2d")
        .collect();
    // four decoder blocks and the final 4x4 deconvolution
    assert_eq!(deconvs.len(), 5, "{:?}", s.layers);
    let last = deconvs.last().unwrap();
    assert!(last.name.ends_with("finaldeconv1"), "{}", last.name);
    // finaldeconv1 maps the half-resolution map of feature_chns[0] channels
    // to 32 channels with a 4x4 kernel: every input element meets 32 * 16 taps
    let f0 = tiny_config()["feature_chns"][0].as_u64().unwrap() as usize;
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    assert_eq!(last.output_shape, vec![n, 32, h, w]);
    assert_eq!(last.macs, (n * f0 * (h / 2) * (w / 2) * 32 * 16) as u64);
    let convs: u64 = s.layers.iter().map(|l| l.macs).sum();
    assert_eq!(convs, s.total_macs);
}
