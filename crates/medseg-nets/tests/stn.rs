//! The spatial transformer wrapper: identity at initialisation (same output
//! as the bare network, 2D, 2D on a volume, 3D, with and without warping
//! back), gradients reaching the localisation network, the registry's `stn`
//! table (checkpoint round trip, unknown keys) and a non-identity transform
//! that moves the image.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{build, max_abs_diff};
use medseg_nets::{build_network, load_network, save_checkpoint, SegNetwork, Stn, StnConfig};
use serde_json::json;

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .reshape(shape)
        .unwrap()
        .affine(1.0 / 37.0, -0.5)
        .unwrap()
        .sin()
        .unwrap()
}

fn unet(dim: usize) -> serde_json::Value {
    json!({"name": "UNet", "dimension": dim, "in_chns": 1, "class_num": 2,
           "feature_chns": [2, 4, 8], "dropout": [0.0, 0.0, 0.0], "seed": 3})
}

fn with_stn(mut c: serde_json::Value, stn: serde_json::Value) -> serde_json::Value {
    c.as_object_mut().unwrap().insert("stn".into(), stn);
    c
}

fn var(vm: &VarMap, name: &str) -> Var {
    vm.data()
        .lock()
        .unwrap()
        .get(name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .clone()
}

#[test]
fn identity_at_initialisation_gives_the_bare_networks_output() {
    let cases = [
        (unet(2), vec![2, 1, 16, 16]),
        (unet(2), vec![1, 1, 3, 16, 16]), // a 2D network on a volume
        (unet(3), vec![1, 1, 8, 8, 8]),
    ];
    for (cfg, shape) in cases {
        let x = input(&shape);
        for stn in [
            json!({}),
            json!({"align_corners": true}),
            json!({"warp_back": true}),
            json!({"align_corners": true, "warp_back": true, "features": [4]}),
        ] {
            // fresh networks each time: a train pass updates running statistics
            let (_vm, bare) = build(&cfg);
            let (vm, net) = build(&with_stn(cfg.clone(), stn.clone()));
            assert_eq!(net.dimension(), bare.dimension());
            for train in [false, true] {
                let a = bare.forward_t(&x, train).unwrap().logits;
                let b = net.forward_t(&x, train).unwrap().logits;
                assert_eq!(a.dims(), b.dims());
                let d = max_abs_diff(&a, &b);
                eprintln!("{shape:?} stn {stn} train={train}: max |difference| {d:.2e}");
                assert!(d <= 1e-5, "{shape:?} stn {stn} train={train}: {d}");
            }
            // the STN's own tensors sit under stn., the rest as before
            let names: Vec<String> = net.parameters().iter().map(|p| p.name.clone()).collect();
            assert!(names.iter().any(|n| n == "stn.fc.bias"));
            assert_eq!(
                names.iter().filter(|n| !n.starts_with("stn.")).count(),
                bare.parameters().len()
            );
            let bias = var(&vm, "stn.fc.bias")
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap();
            let want: Vec<f32> = if bare.dimension() == 2 {
                vec![1., 0., 0., 0., 1., 0.]
            } else {
                vec![1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.]
            };
            assert_eq!(bias, want);
        }
    }
}

#[test]
fn gradients_reach_the_localisation_network() {
    let (vm, net) = build(&with_stn(unet(2), json!({})));
    let x = input(&[2, 1, 16, 16]);
    let w = input(&[2, 2, 16, 16]).affine(1.3, 0.1).unwrap();
    let loss = |net: &dyn SegNetwork| {
        (net.forward_t(&x, true).unwrap().logits * &w)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let norm = |g: &Tensor| {
        g.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let grads = loss(net.as_ref()).backward().unwrap();
    for name in ["stn.fc.weight", "stn.fc.bias"] {
        let g = grads.get(&var(&vm, name)).expect(name);
        assert!(norm(g) > 0.0, "{name}: zero gradient");
    }
    // the convolutions get their gradient through the (zero) linear weights:
    // none yet, but once those move, some
    let fcw = var(&vm, "stn.fc.weight");
    let g = grads.get(&fcw).unwrap();
    fcw.set(&(fcw.as_tensor() - (g * 1e-3).unwrap()).unwrap())
        .unwrap();
    let grads = loss(net.as_ref()).backward().unwrap();
    let g = grads.get(&var(&vm, "stn.loc.0.weight")).expect("conv grad");
    assert!(norm(g) > 0.0, "stn.loc.0.weight: zero gradient");
    // the wrapped network is trained through the resampled image as well
    let g = grads
        .get(&var(&vm, "encoder.in_conv.conv_conv.0.weight"))
        .expect("inner grad");
    assert!(norm(g) > 0.0);
}

#[test]
fn theta_starts_at_the_identity_and_a_shift_moves_the_image() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let inner = build_network(&unet(2), vb.clone()).unwrap();
    let cfg = StnConfig {
        align_corners: true,
        ..StnConfig::default()
    };
    let stn = Stn::new(&cfg, inner, vb).unwrap();
    let x = input(&[1, 1, 9, 9]);
    let theta = stn.theta(&x).unwrap();
    assert_eq!(
        theta.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1., 0., 0., 0., 1., 0.]
    );
    // shift x by 2 / (W - 1) = one pixel: the transformed image is x moved
    let b = var(&vm, "stn.fc.bias");
    b.set(&Tensor::new(&[1f32, 0., 0.25, 0., 1., 0.], &Device::Cpu).unwrap())
        .unwrap();
    let theta = stn.theta(&x).unwrap();
    let grid = medseg_ops::affine_grid(&theta, x.dims(), true).unwrap();
    let y = medseg_ops::grid_sample(&x, &grid, true).unwrap();
    let (xv, yv) = (
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    for h in 0..9 {
        for w in 0..8 {
            assert!((yv[h * 9 + w] - xv[h * 9 + w + 1]).abs() < 1e-5);
        }
        assert_eq!(yv[h * 9 + 8], 0.0);
    }
    assert!(stn.stn_config().align_corners);
    assert_eq!(stn.inner().class_num(), 2);
}

#[test]
fn registry_checkpoint_round_trip_keeps_the_stn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stn.safetensors");
    let cfg = with_stn(unet(2), json!({"features": [4, 4], "warp_back": true}));
    let (vm, net) = build(&cfg);
    // move the transform away from the identity so that it matters
    var(&vm, "stn.fc.bias")
        .set(&Tensor::new(&[0.9f32, 0.1, 0.05, -0.1, 1.1, 0.0], &Device::Cpu).unwrap())
        .unwrap();
    let x = input(&[2, 1, 16, 16]);
    let y = net.forward(&x).unwrap();
    let stored = net.config();
    assert_eq!(stored["stn"]["features"], json!([4, 4]));
    assert_eq!(stored["stn"]["kernel"], json!(3));
    save_checkpoint(&path, &vm, &stored).unwrap();
    let (_vm2, net2) = load_network(&path, &Device::Cpu).unwrap();
    assert_eq!(net2.config(), stored);
    assert_eq!(max_abs_diff(&net2.forward(&x).unwrap(), &y), 0.0);
    // differs from the bare network now
    let (_vm3, bare) = build(&unet(2));
    assert!(max_abs_diff(&bare.forward(&x).unwrap(), &y) > 1e-4);
}

#[test]
fn bad_stn_tables_are_errors_naming_the_key() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let e = build_network(&with_stn(unet(2), json!({"featurs": [4]})), vb.clone())
        .err()
        .expect("unknown key rejected")
        .to_string();
    assert!(e.contains("featurs"), "{e}");
    let e = build_network(&with_stn(unet(2), json!({"kernel": 4})), vb)
        .err()
        .expect("even kernel rejected")
        .to_string();
    assert!(e.contains("kernel"), "{e}");
}
