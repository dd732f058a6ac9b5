//! `inference_copy`: the same eval-mode output as the network it copies,
//! read from the variables' current values, and no autograd graph.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{build, max_abs_diff, pattern};
use medseg_nets::inference_copy;
use serde_json::json;

#[test]
fn copy_matches_the_network_and_records_no_graph() {
    for (cfg, shape) in [
        (
            json!({"name": "UNet", "in_chns": 1, "class_num": 3, "feature_chns": [4, 8, 16],
                   "dropout": [0.0, 0.2, 0.5], "seed": 3}),
            vec![2, 1, 16, 16],
        ),
        (
            json!({"name": "UNet3D", "in_chns": 1, "class_num": 2, "feature_chns": [4, 8],
                   "dropout": [0.0, 0.3], "seed": 4}),
            vec![1, 1, 8, 8, 8],
        ),
        (
            json!({"name": "AttentionUNet", "in_chns": 1, "class_num": 2,
                   "feature_chns": [4, 8, 16], "dropout": [0.0, 0.0, 0.0], "seed": 5}),
            vec![1, 1, 16, 16],
        ),
    ] {
        let (vm, net) = build(&cfg);
        let x = pattern(&shape);
        // train passes move the running statistics, and every weight is
        // changed after building: the copy must read the current values
        net.forward_t(&x, true).unwrap();
        for (k, v) in vm.data().lock().unwrap().iter() {
            if !k.ends_with("running_var") {
                let t = (v.as_tensor() * 0.9).unwrap().affine(1.0, 0.01).unwrap();
                Var::from_tensor(v.as_tensor()).unwrap().set(&t).unwrap();
            }
        }
        let copy = inference_copy(net.as_ref(), &vm, &Device::Cpu).unwrap();
        let want = net.forward(&x).unwrap();
        let got = copy.forward(&x).unwrap();
        let diff = max_abs_diff(&want, &got);
        assert_eq!(diff, 0.0, "{cfg}: eval outputs differ by {diff}");

        // the network's own output leads back to its weights, the copy's
        // to none of them
        let params: Vec<Tensor> = vm
            .all_vars()
            .into_iter()
            .map(|v| v.as_tensor().clone())
            .collect();
        let g = want.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(
            params.iter().any(|p| g.get(p).is_some()),
            "{cfg}: the network's output has no gradient path to its weights"
        );
        let g = got.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(
            params.iter().all(|p| g.get(p).is_none()),
            "{cfg}: the copy's output still reaches the variables"
        );
    }
}
