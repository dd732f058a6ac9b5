//! Label maps of every integer type and `bool`, in any memory layout, give
//! the values of the `u16` maps (which `reference.rs` checks against MedPy
//! and MONAI); `evaluate_foreground` reads non-zero values as MedPy does and
//! matches MedPy's values on the committed speckle fixture.

use medseg_metrics::{
    evaluate_case, evaluate_foreground, labels_present, ClassMetrics, LabelValue, MetricOptions,
    MetricsError,
};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, ShapeBuilder};
use serde_json::Value;

fn load(name: &str) -> (ArrayD<u16>, ArrayD<u16>, Vec<f64>, Value) {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let shape: Vec<usize> = serde_json::from_value(doc["shape"].clone()).unwrap();
    let arr = |key: &str| {
        let v: Vec<u16> = serde_json::from_value(doc[key].clone()).unwrap();
        ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
    };
    let spacing = serde_json::from_value(doc["spacing"].clone()).unwrap();
    (arr("pred"), arr("gt"), spacing, doc)
}

/// Same counts, and the same values to 1e-12 relative (a different memory
/// order sums the distances in a different order), NaN equal to NaN.
fn same(a: &[ClassMetrics], b: &[ClassMetrics]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.class, x.counts), (y.class, y.counts));
        let vx = serde_json::to_value(x).unwrap();
        let vy = serde_json::to_value(y).unwrap();
        for (k, u) in vx.as_object().unwrap() {
            match (u.as_f64(), vy[k].as_f64()) {
                (Some(u), Some(v)) => {
                    assert!(
                        (u - v).abs() <= 1e-12 * v.abs(),
                        "class {} {k}: {u} vs {v}",
                        x.class
                    )
                }
                // NaN and infinities serialise to null
                _ => assert_eq!(u, &vy[k], "class {} {k}", x.class),
            }
        }
    }
}

fn eval<T: LabelValue>(p: ArrayViewD<T>, g: ArrayViewD<T>, sp: &[f64]) -> Vec<ClassMetrics> {
    evaluate_case(p, g, sp, &[1, 2, 5, 6, 7], &MetricOptions::default()).unwrap()
}

#[test]
fn every_integer_type_and_layout_gives_the_u16_values() {
    let (p, g, sp, _) = load("multiclass_3d");
    let want = eval(p.view(), g.view(), &sp);
    assert!(want[0].hd95.is_finite() && want[0].dice > 0.5);
    macro_rules! check {
        ($($t:ty),*) => {$(
            let (pc, gc) = (p.mapv(|v| v as $t), g.mapv(|v| v as $t));
            same(&eval(pc.view(), gc.view(), &sp), &want);
        )*};
    }
    check!(u8, u32, u64, i8, i16, i32, i64);
    // Fortran order (numpy's order="F"), and reversed strides
    let shape = p.shape().to_vec();
    let mut pf = ArrayD::<u16>::zeros(IxDyn(&shape).f());
    let mut gf = ArrayD::<u16>::zeros(IxDyn(&shape).f());
    pf.assign(&p);
    gf.assign(&g);
    assert!(!pf.is_standard_layout());
    same(&eval(pf.view(), gf.view(), &sp), &want);
    let mut pr = p.view();
    let mut gr = g.view();
    pr.invert_axis(Axis(1));
    gr.invert_axis(Axis(1));
    // flipping both maps moves nothing relative to each other
    same(&eval(pr, gr, &sp), &want);
}

#[test]
fn values_outside_the_class_range_belong_to_no_class() {
    let (p, g, sp, _) = load("multiclass_3d");
    let want = eval(p.view(), g.view(), &sp);
    // background written as -1 or as 70000 instead of 0
    let pn = p.mapv(|v| if v == 0 { -1i64 } else { v as i64 });
    let gn = g.mapv(|v| if v == 0 { 70000i64 } else { v as i64 });
    let got = eval(pn.view(), gn.view(), &sp);
    for (x, y) in got.iter().zip(&want) {
        assert_eq!(x.counts, y.counts);
        assert!(x.hd95 == y.hd95 || x.hd95.is_nan() && y.hd95.is_nan());
    }
    assert!(matches!(
        labels_present(gn.view()),
        Err(MetricsError::InvalidOption(m)) if m.contains("70000")
    ));
    assert_eq!(labels_present(g.view()).unwrap(), vec![1, 2, 6]);
    assert_eq!(labels_present(p.view()).unwrap(), vec![1, 2, 5]);
}

#[test]
fn foreground_reads_non_zero_as_medpy_and_matches_its_values() {
    let (p, g, sp, doc) = load("speckle_3d");
    // the fixture's class 1 is the non-zero part of these 0/1 maps: write
    // the foreground as 3 in the prediction and as `true` in bool maps
    let r = doc["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class_id"] == 1)
        .unwrap()["medpy"]
        .clone();
    let p3 = p.mapv(|v| v * 3);
    let opts = MetricOptions::medpy();
    let m = evaluate_foreground(p3.view(), g.view(), &sp, &opts).unwrap();
    let close = |a: f64, b: &Value| {
        let b = b.as_f64().unwrap();
        assert!((a - b).abs() <= 1e-6 * b.abs() + 1e-12, "{a} vs {b}");
    };
    close(m.dice, &r["dc"]);
    close(m.iou, &r["jc"]);
    close(m.hd95, &r["face"]["hd95"]);
    close(m.assd, &r["face"]["assd"]);
    close(m.asd_pred_to_gt, &r["face"]["asd"]);
    assert_eq!(m.class, 1);
    let (pb, gb) = (p.mapv(|v| v != 0), g.mapv(|v| v != 0));
    let b = evaluate_foreground(pb.view(), gb.view(), &sp, &opts).unwrap();
    same(&[b], &[m]);
}
