//! Helpers shared by the integration tests (each declares `mod common;`):
//! the fixtures folder, reference JSON and safetensors fixtures, building
//! networks, tensor differences, the running-statistics check of the parity
//! tests, cross-entropy and a few Adam steps.

// Every test file uses its own subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use medseg_nets::{build_network, import_pytorch, trainable_vars, NetError, SegNetwork};
use serde_json::Value;

/// `crates/medseg-nets/tests/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The JSON fixture `file` (e.g. `cenet_reference.json`).
pub fn read_json(file: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The tensors of the fixture `<case>.io.safetensors`, converted to f32
/// (inputs are stored as f16, exactly).
pub fn load_io(case: &str) -> HashMap<String, Tensor> {
    let io = candle_core::safetensors::load(
        fixtures().join(format!("{case}.io.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    io.into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
        .collect()
}

/// Loads the PyTorch state dict `<case>.weights.safetensors` into `varmap`
/// by name (every tensor must be there, with its shape).
pub fn import_weights(varmap: &VarMap, case: &str) {
    import_pytorch(
        &fixtures().join(format!("{case}.weights.safetensors")),
        varmap,
    )
    .unwrap();
}

/// The parity fixtures' input, `((i * 7919) mod 1021 - 510) / 256`
/// (exact in f16), of `shape`.
pub fn pattern(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as i64)
        .map(|i| ((i * 7919) % 1021 - 510) as f32 / 256.0)
        .collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
}

/// A JSON array of sizes as a shape.
pub fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .collect()
}

/// Builds the network `config` describes, with parameters of `dtype` on the
/// CPU in a new VarMap.
pub fn build_with(config: &Value, dtype: DType) -> (VarMap, Box<dyn SegNetwork>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let net = build_network(config, vb).unwrap();
    (varmap, net)
}

/// [`build_with`] in f32.
pub fn build(config: &Value) -> (VarMap, Box<dyn SegNetwork>) {
    build_with(config, DType::F32)
}

/// The message of the configuration error (`NetError::Config`) that
/// building `config` gives; panics if it builds or fails otherwise.
pub fn config_error(config: &Value) -> String {
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
    match build_network(config, vb) {
        Ok(_) => panic!("config accepted: {config}"),
        Err(e) => {
            assert!(
                matches!(e, NetError::Config(_)),
                "unexpected error kind {e}"
            );
            e.to_string()
        }
    }
}

/// Largest absolute value, computed in f32.
pub fn max_abs(a: &Tensor) -> f32 {
    a.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest absolute difference of two tensors of the same shape, computed
/// in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap())
}

/// Compares every `after_train.<name>` tensor of `io` (BatchNorm running
/// statistics after the reference's train pass) with `<name>` in `varmap`
/// to `tol`; returns how many were compared.
pub fn check_running_stats(
    varmap: &VarMap,
    io: &HashMap<String, Tensor>,
    case: &str,
    tol: f32,
) -> usize {
    let data = varmap.data().lock().unwrap();
    let mut checked = 0;
    for (k, v) in io {
        if let Some(name) = k.strip_prefix("after_train.") {
            let d = max_abs_diff(data[name].as_tensor(), v);
            assert!(d < tol, "{case}: {name} after a train pass differs by {d}");
            checked += 1;
        }
    }
    checked
}

/// A batch of `n` one-channel `s` x `s` images and their labels: `pixel(b,
/// i, j)` gives whether pixel `(i, j)` of image `b` is foreground (label 1,
/// intensity 1, else 0) and the noise added to its intensity. Returns
/// `([n, 1, s, s]` images, `[n, s, s]` u32 labels`)`.
pub fn labelled_images(
    n: usize,
    s: usize,
    mut pixel: impl FnMut(usize, usize, usize) -> (bool, f32),
) -> (Tensor, Tensor) {
    let mut img = Vec::with_capacity(n * s * s);
    let mut lab = Vec::with_capacity(n * s * s);
    for b in 0..n {
        for i in 0..s {
            for j in 0..s {
                let (inside, noise) = pixel(b, i, j);
                img.push(if inside { 1.0 } else { 0.0 } + noise);
                lab.push(inside as u32);
            }
        }
    }
    let x = Tensor::from_vec(img, (n, 1, s, s), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(lab, (n, s, s), &Device::Cpu).unwrap();
    (x, y)
}

/// Mean cross-entropy of `[N, C, ...]` logits against `[N, ...]` class
/// indices.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let c = logits.dim(1).unwrap();
    let mut perm: Vec<usize> = vec![0];
    perm.extend(2..logits.rank());
    perm.push(1);
    let flat = logits
        .permute(perm)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape(((), c))
        .unwrap();
    candle_nn::loss::cross_entropy(&flat, &labels.flatten_all().unwrap()).unwrap()
}

/// `steps` AdamW steps (learning rate 1e-2, no weight decay) on the
/// trainable variables of `varmap`, minimising `loss()`; returns the loss
/// before each step.
pub fn adam_losses(varmap: &VarMap, steps: usize, loss: impl Fn() -> Tensor) -> Vec<f32> {
    let mut opt = AdamW::new(
        trainable_vars(varmap),
        ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let l = loss();
        losses.push(l.to_scalar::<f32>().unwrap());
        opt.backward_step(&l).unwrap();
    }
    losses
}

/// Parity of the registry network `name` with a fixture case: builds
/// `reference["tiny"]["config"]` in `dtype`, checks its parameter and tensor
/// counts against the reference's, imports `<case>.weights.safetensors` and
/// compares the logits of every output the fixture holds (`eval` and `train`
/// on `input_shape`, `eval_odd` on `odd_input_shape`), each relative to the
/// reference's largest value, against `tol`. Returns `(output, relative
/// difference)` per compared output, after asserting that at least `eval`
/// was compared.
pub fn fixture_parity(
    reference: &Value,
    case: &str,
    name: &str,
    dtype: DType,
    tol: f32,
) -> Vec<(String, f32)> {
    let mut config = reference["tiny"]["config"].clone();
    config["name"] = serde_json::json!(name);
    let (varmap, net) = build_with(&config, dtype);
    assert_eq!(
        net.num_parameters() as u64,
        reference["tiny"]["num_parameters"].as_u64().unwrap(),
        "{name}: parameter count"
    );
    if let Some(n) = reference["tiny"]["num_tensors"].as_u64() {
        assert_eq!(varmap.all_vars().len() as u64, n, "{name}: tensor count");
    }
    import_weights(&varmap, case);
    let io = load_io(case);
    let mut out = Vec::new();
    for (key, shape_key, train) in [
        ("eval", "input_shape", false),
        ("train", "input_shape", true),
        ("eval_odd", "odd_input_shape", false),
    ] {
        let Some(want) = io.get(key) else { continue };
        let x = pattern(&shape_of(&reference["tiny"][shape_key]))
            .to_dtype(dtype)
            .unwrap();
        let scale = max_abs(want);
        assert!(scale > 0.1, "{case}: degenerate reference output {key}");
        let y = net.forward_t(&x, train).unwrap();
        let d = max_abs_diff(&y.logits, want) / scale;
        eprintln!("{name} {dtype:?} {key}: relative max difference {d:e}");
        assert!(d < tol, "{name} {dtype:?} {key} differs by {d} (relative)");
        out.push((key.to_string(), d));
    }
    assert!(
        out.iter().any(|(k, _)| k == "eval"),
        "{case}: no eval output"
    );
    out
}
