//! AdaBN: re-estimated running statistics equal statistics computed by hand
//! from the batches; dropout is off; learnt weights are untouched.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use medseg_nets::{adapt_batch_norm, build_network, without_dropout, SegNetwork};
use serde_json::json;

fn input(shape: &[usize], phase: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.7123 + phase).sin() * 43758.547).fract() * 3.0 + phase)
        .collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
}

fn get(vm: &VarMap, name: &str) -> Tensor {
    let data = vm.data().lock().unwrap();
    data.get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .as_tensor()
        .clone()
}

/// Per-channel mean and unbiased variance of `[N, C, H, W]`.
fn stats(x: &Tensor, unbiased: bool) -> (Tensor, Tensor) {
    let (n, c, h, w) = x.dims4().unwrap();
    let count = (n * h * w) as f64;
    let t = x.transpose(0, 1).unwrap().reshape((c, ())).unwrap();
    let t = t.to_dtype(DType::F64).unwrap();
    let mean = t.mean_keepdim(1).unwrap();
    let ss = t
        .broadcast_sub(&mean)
        .unwrap()
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap();
    let var = (ss / if unbiased { count - 1.0 } else { count }).unwrap();
    (mean.flatten_all().unwrap(), var)
}

fn conv(x: &Tensor, vm: &VarMap, prefix: &str) -> Tensor {
    let w = get(vm, &format!("{prefix}.weight"));
    let b = get(vm, &format!("{prefix}.bias"));
    x.conv2d(&w, 1, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, (), 1, 1)).unwrap())
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn without_dropout_zeros_every_dropout_value() {
    let cfg = json!({"name": "UNet", "dropout": [0.1, 0.5], "aux": {"dropout": 0.3},
                     "feature_chns": [2, 4]});
    let z = without_dropout(&cfg);
    assert_eq!(z["dropout"], json!([0.0, 0.0]));
    assert_eq!(z["aux"]["dropout"], json!(0.0));
    assert_eq!(z["feature_chns"], json!([2, 4]));
    assert_eq!(z["name"], json!("UNet"));
}

#[test]
fn adapted_statistics_equal_hand_computed_batch_statistics() {
    // a large dropout right in the first block: if it were active, the
    // second norm's statistics would differ from the hand computation
    let cfg = json!({"name": "UNet", "dimension": 2, "in_chns": 1, "class_num": 2,
                     "feature_chns": [3, 4, 4, 4], "dropout": [0.5, 0.5, 0.5, 0.5], "seed": 3});
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net: Box<dyn SegNetwork> = build_network(&without_dropout(&cfg), vb).unwrap();
    let batches = vec![input(&[2, 1, 12, 12], 0.0), input(&[2, 1, 12, 12], 1.5)];
    let weight_before = get(&vm, "encoder.in_conv.conv_conv.0.weight")
        .copy()
        .unwrap();
    let gamma_before = get(&vm, "encoder.in_conv.conv_conv.1.weight")
        .copy()
        .unwrap();

    let n = adapt_batch_norm(net.as_ref(), &vm, batches.clone()).unwrap();
    assert_eq!(n, 2);

    // by hand: conv -> batch norm (batch statistics, biased variance) ->
    // LeakyReLU -> (no dropout) -> conv; the running statistics are the
    // averages over the batches of the batch mean and unbiased variance
    let p = "encoder.in_conv.conv_conv";
    let gamma = get(&vm, &format!("{p}.1.weight"));
    let beta = get(&vm, &format!("{p}.1.bias"));
    let (mut m1, mut v1, mut m2, mut v2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for x in &batches {
        let y = conv(x, &vm, &format!("{p}.0"));
        let (m, v) = stats(&y, true);
        let (_, vb) = stats(&y, false);
        m1.push(m.clone());
        v1.push(v);
        let c = (1, (), 1, 1);
        let yn = y
            .broadcast_sub(&m.to_dtype(DType::F32).unwrap().reshape(c).unwrap())
            .unwrap()
            .broadcast_div(
                &(vb.to_dtype(DType::F32).unwrap() + 1e-5)
                    .unwrap()
                    .sqrt()
                    .unwrap()
                    .reshape(c)
                    .unwrap(),
            )
            .unwrap()
            .broadcast_mul(&gamma.reshape(c).unwrap())
            .unwrap()
            .broadcast_add(&beta.reshape(c).unwrap())
            .unwrap();
        let a = yn.maximum(&(&yn * 0.01).unwrap()).unwrap();
        let z = conv(&a, &vm, &format!("{p}.4"));
        let (m, v) = stats(&z, true);
        m2.push(m);
        v2.push(v);
    }
    let avg = |v: &[Tensor]| ((&v[0] + &v[1]).unwrap() / 2.0).unwrap();
    for (name, want) in [
        (format!("{p}.1.running_mean"), avg(&m1)),
        (format!("{p}.1.running_var"), avg(&v1)),
        (format!("{p}.5.running_mean"), avg(&m2)),
        (format!("{p}.5.running_var"), avg(&v2)),
    ] {
        let got = get(&vm, &name);
        let d = max_diff(&got, &want);
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "{name}: {got} vs {want} (diff {d})"
        );
    }
    // the statistics moved away from their initial (0, 1)
    assert!(
        max_diff(
            &get(&vm, &format!("{p}.1.running_var")),
            &Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()
        ) > 0.1
    );
    // learnt weights untouched
    assert_eq!(
        max_diff(&get(&vm, &format!("{p}.0.weight")), &weight_before),
        0.0
    );
    assert_eq!(
        max_diff(&get(&vm, &format!("{p}.1.weight")), &gamma_before),
        0.0
    );
}

#[test]
fn no_batch_or_no_batch_norm_is_an_error() {
    let cfg = json!({"name": "UNet", "dimension": 2, "in_chns": 1, "class_num": 2,
                     "feature_chns": [2, 4], "dropout": [0.0, 0.0]});
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = build_network(&cfg, vb).unwrap();
    assert!(adapt_batch_norm(net.as_ref(), &vm, Vec::<Tensor>::new()).is_err());

    let mut cfg = cfg;
    cfg["norm_type"] = json!("instance_norm");
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = build_network(&cfg, vb).unwrap();
    assert!(adapt_batch_norm(net.as_ref(), &vm, vec![input(&[1, 1, 8, 8], 0.0)]).is_err());
}
