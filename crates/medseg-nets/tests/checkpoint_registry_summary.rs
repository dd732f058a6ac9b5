//! Checkpoints (round trip, configuration check, named tensor errors),
//! the registry (unknown names/keys, user networks) and the summary
//! (parameters and multiply-adds against closed forms).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{build, max_abs_diff};
use medseg_nets::{
    load_checkpoint, load_network, read_checkpoint_config, save_checkpoint, summarize, NetError,
    NetOutput, NetRegistry, ParamInfo, SegNetwork,
};
use serde_json::json;

fn input() -> Tensor {
    Tensor::arange(0f32, 2.0 * 16.0 * 16.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 1, 16, 16))
        .unwrap()
        .affine(1.0 / 300.0, -0.5)
        .unwrap()
        .sin()
        .unwrap()
}

fn cfg(seed: u64) -> serde_json::Value {
    json!({"name": "UNet", "in_chns": 1, "class_num": 2, "feature_chns": [2, 4, 8],
           "dropout": [0.0, 0.0, 0.0], "seed": seed})
}

#[test]
fn checkpoint_round_trip_keeps_weights_running_stats_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let (vm, net) = build(&cfg(1));
    // a train pass changes the running statistics, which must be saved too
    net.forward_t(&input(), true).unwrap();
    let y = net.forward(&input()).unwrap();
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    assert_eq!(read_checkpoint_config(&path).unwrap(), net.config());

    // another seed gives other weights; loading restores the saved ones
    let (vm2, net2) = build(&cfg(2));
    let before = max_abs_diff(&net2.forward(&input()).unwrap(), &y);
    assert!(before > 1e-3);
    load_checkpoint(&path, &vm2, Some(&net2.config())).unwrap();
    let after = max_abs_diff(&net2.forward(&input()).unwrap(), &y);
    assert_eq!(after, 0.0);

    // load_network rebuilds from the stored configuration
    let (_vm3, net3) = load_network(&path, &Device::Cpu).unwrap();
    let d = max_abs_diff(&net3.forward(&input()).unwrap(), &y);
    assert_eq!(d, 0.0);
    // no temporary files left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn checkpoint_config_mismatch_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let (vm, net) = build(&cfg(1));
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    let mut other = cfg(1);
    other["class_num"] = json!(3);
    let (vm2, net2) = build(&other);
    let err = load_checkpoint(&path, &vm2, Some(&net2.config()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("class_num"), "{err}");
    // without the config check, the shapes give the error, naming tensors
    let err = load_checkpoint(&path, &vm2, None).unwrap_err().to_string();
    assert!(err.contains("decoder.out_conv.weight"), "{err}");
    assert!(err.contains("mis-shaped"), "{err}");
}

#[test]
fn checkpoint_errors_name_missing_and_unexpected_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let (vm, net) = build(&cfg(1));
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    let mut deep = cfg(1);
    deep["multiscale_pred"] = json!(true);
    let (vm2, _net2) = build(&deep);
    let err = load_checkpoint(&path, &vm2, None).unwrap_err().to_string();
    assert!(
        err.contains("missing tensors: decoder.out_conv1.bias"),
        "{err}"
    );
    let err = load_checkpoint(&path.with_extension("nope"), &vm2, None).unwrap_err();
    assert!(matches!(err, NetError::Io { .. }));
    std::fs::write(dir.path().join("bad.safetensors"), b"garbage").unwrap();
    let err = load_checkpoint(&dir.path().join("bad.safetensors"), &vm2, None).unwrap_err();
    assert!(matches!(err, NetError::Checkpoint { .. }), "{err}");
    // a bigger network has tensors the small one lacks: unexpected
    let (vm_big, net_big) = build(&deep);
    save_checkpoint(&path, &vm_big, &net_big.config()).unwrap();
    let err = load_checkpoint(&path, &vm, None).unwrap_err().to_string();
    assert!(
        err.contains("unexpected tensors: decoder.out_conv1.bias"),
        "{err}"
    );
}

#[test]
fn registry_errors_name_the_problem() {
    let reg = NetRegistry::with_builtins();
    let vm = VarMap::new();
    let vb = || VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let err = reg
        .build(&json!({"name": "VNet", "in_chns": 1, "class_num": 2}), vb())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("VNet") && err.contains("UNetpp"), "{err}");
    let err = reg
        .build(
            &json!({"name": "UNet", "in_chns": 1, "class_num": 2, "feature_chn": [2]}),
            vb(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("feature_chn"), "{err}");
    let err = reg
        .build(
            &json!({"name": "UNet", "in_chns": 1, "class_num": 2, "feature_chns": [2, 4], "dropout": [0.0]}),
            vb(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("dropout"), "{err}");
    let err = reg
        .build(
            &json!({"name": "UNet2D", "dimension": 3, "in_chns": 1, "class_num": 2}),
            vb(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("dimension"), "{err}");
    let err = reg
        .build(
            &json!({"name": "UNet", "in_chns": 1, "class_num": 2, "up_mode": 7}),
            vb(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("up_mode"), "{err}");
    // PyMIC spelling: net_type and integer up_mode
    let net = reg
        .build(
            &json!({"net_type": "UNet3D", "in_chns": 1, "class_num": 2,
                    "feature_chns": [2, 2], "dropout": [0.0, 0.0], "up_mode": 0}),
            vb(),
        )
        .unwrap();
    assert_eq!(net.dimension(), 3);
    assert_eq!(net.config()["up_mode"], json!("transconv"));
}

/// A user network: one 1x1 convolution.
struct Pointwise {
    w: Tensor,
    params: Vec<ParamInfo>,
}

impl SegNetwork for Pointwise {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<NetOutput> {
        Ok(NetOutput {
            logits: x.conv2d(&self.w, 0, 1, 1, 1)?,
            deep: vec![],
            aux: vec![],
        })
    }
    fn config(&self) -> serde_json::Value {
        json!({"name": "Pointwise"})
    }
    fn dimension(&self) -> usize {
        2
    }
    fn in_chns(&self) -> usize {
        1
    }
    fn class_num(&self) -> usize {
        2
    }
    fn parameters(&self) -> &[ParamInfo] {
        &self.params
    }
}

#[test]
fn users_register_their_own_networks() {
    let mut reg = NetRegistry::with_builtins();
    reg.register("Pointwise", |_cfg, vb| {
        let w = vb.get((2, 1, 1, 1), "w")?;
        Ok(Box::new(Pointwise {
            w,
            params: vec![ParamInfo {
                name: "w".into(),
                shape: vec![2, 1, 1, 1],
                trainable: true,
            }],
        }) as Box<dyn SegNetwork>)
    });
    assert!(reg.names().contains(&"Pointwise".to_string()));
    let vm = VarMap::new();
    let net = reg
        .build(
            &json!({"name": "Pointwise"}),
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .unwrap();
    assert_eq!(net.forward(&input()).unwrap().dims(), &[2, 2, 16, 16]);
    assert_eq!(net.num_parameters(), 2);
}

#[test]
fn summary_counts_parameters_and_multiply_adds() {
    // Two-level 2D UNet, transposed convolution, no deep supervision.
    let (ci, c0, c1, k) = (1usize, 2usize, 4usize, 2usize);
    let config = json!({"name": "UNet", "in_chns": ci, "class_num": k, "feature_chns": [c0, c1],
                        "dropout": [0.0, 0.0], "up_mode": "transconv"});
    let (vm, net) = build(&config);
    let (h, w) = (8usize, 12usize);
    let s = summarize(net.as_ref(), &[1, ci, h, w], &Device::Cpu).unwrap();
    // closed form: conv3x3 parameters = cin*cout*9 + cout, BN = 2*cout
    let conv = |a: usize, b: usize| a * b * 9 + b;
    let params = conv(ci, c0) + conv(c0, c0) + 4 * c0           // in_conv
        + conv(c0, c1) + conv(c1, c1) + 4 * c1                  // down1
        + c1 * c0 * 4 + c0                                      // up4.up (transposed 2x2)
        + conv(2 * c0, c0) + conv(c0, c0) + 4 * c0              // up4.conv
        + c0 * k + k; // out_conv
    assert_eq!(s.total_params, params);
    assert_eq!(s.total_params, medseg_nets::count_parameters(&vm));
    let full = (h * w) as u64;
    let half = ((h / 2) * (w / 2)) as u64;
    let macs = full * (c0 * ci * 9) as u64
        + full * (c0 * c0 * 9) as u64
        + half * (c1 * c0 * 9) as u64
        + half * (c1 * c1 * 9) as u64
        + half * (c1 * c0 * 4) as u64                            // transposed conv
        + full * (c0 * 2 * c0 * 9) as u64
        + full * (c0 * c0 * 9) as u64
        + full * (k * c0) as u64;
    assert_eq!(s.total_macs, macs);
    assert_eq!(s.outputs, vec![("logits".to_string(), vec![1, k, h, w])]);
    let text = s.to_string();
    assert!(text.contains("decoder.up4.up"), "{text}");
    assert!(text.contains("encoder.down1.maxpool_conv.0"), "{text}");
    // summary of networks whose eval pass skips decoders still counts them
    let (vm, net) = build(&json!({"name": "MCNet", "in_chns": 1, "class_num": 2,
                                  "feature_chns": [2, 4], "dropout": [0.0, 0.0]}));
    let s = summarize(net.as_ref(), &[1, 1, 8, 8], &Device::Cpu).unwrap();
    assert_eq!(s.total_params, medseg_nets::count_parameters(&vm));
    assert!(!s.layers.iter().any(|l| l.name.starts_with("decoder2")));
}
