//! Agreement with MedPy 0.5.2 and MONAI 1.6 on the committed fixtures
//! (produced by tools/make_metric_fixtures.py), to 1e-6 relative.

use medseg_metrics::{
    evaluate_case, surface_distances, AssdDefinition, Connectivity, EmptyPolicies, EmptyPolicy,
    Hd95Definition, MetricOptions,
};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

const FIXTURES: [&str; 3] = ["multiclass_2d", "multiclass_3d", "speckle_3d"];

struct Case {
    name: String,
    pred: ArrayD<u16>,
    gt: ArrayD<u16>,
    spacing: Vec<f64>,
    classes: Vec<Value>,
}

fn load(name: &str) -> Case {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let shape: Vec<usize> = serde_json::from_value(doc["shape"].clone()).unwrap();
    let arr = |key: &str| {
        let v: Vec<u16> = serde_json::from_value(doc[key].clone()).unwrap();
        ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
    };
    Case {
        name: name.to_string(),
        pred: arr("pred"),
        gt: arr("gt"),
        spacing: serde_json::from_value(doc["spacing"].clone()).unwrap(),
        classes: doc["classes"].as_array().unwrap().clone(),
    }
}

/// `None` when the reference library raised (MedPy on empty masks).
fn reference(v: &Value) -> Option<f64> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(match s.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => panic!("unexpected string {other}"),
        }),
        Value::Number(n) => Some(n.as_f64().unwrap()),
        other => panic!("unexpected value {other}"),
    }
}

fn assert_matches(ours: f64, reference: f64, what: &str) {
    if reference.is_nan() {
        assert!(ours.is_nan(), "{what}: expected NaN, got {ours}");
    } else if reference.is_infinite() {
        assert_eq!(ours, reference, "{what}");
    } else {
        let tol = 1e-6 * reference.abs() + 1e-12;
        assert!(
            (ours - reference).abs() <= tol,
            "{what}: ours {ours} vs reference {reference} (diff {})",
            (ours - reference).abs()
        );
    }
}

/// A MedPy value, or NaN (our `MetricOptions::medpy()` policy) where MedPy raised.
fn medpy(v: &Value) -> f64 {
    reference(v).unwrap_or(f64::NAN)
}

#[test]
fn overlap_matches_medpy() {
    let mut checked = 0;
    for name in FIXTURES {
        let c = load(name);
        let classes: Vec<u16> = c
            .classes
            .iter()
            .map(|r| r["class_id"].as_u64().unwrap() as u16)
            .collect();
        let got = evaluate_case(
            c.pred.view(),
            c.gt.view(),
            &c.spacing,
            &classes,
            &MetricOptions::medpy(),
        )
        .unwrap();
        for (m, r) in got.iter().zip(&c.classes) {
            let r = &r["medpy"];
            let what = |k: &str| format!("{} class {} {k}", c.name, m.class);
            assert_matches(m.dice, medpy(&r["dc"]), &what("dc"));
            // MedPy's jc gives 1.0 for two empty masks
            assert_matches(
                m.counts.iou(EmptyPolicy::Cap(1.0)),
                medpy(&r["jc"]),
                &what("jc"),
            );
            assert_matches(m.precision, medpy(&r["precision"]), &what("precision"));
            assert_matches(m.recall, medpy(&r["recall"]), &what("recall"));
            assert_matches(
                m.specificity,
                medpy(&r["specificity"]),
                &what("specificity"),
            );
            assert_matches(m.relative_volume_error, medpy(&r["ravd"]), &what("ravd"));
            // volumes: voxel count times voxel volume
            let voxel: f64 = c.spacing.iter().product();
            let n_gt = c.gt.iter().filter(|&&v| v == m.class).count() as f64;
            assert_matches(m.volume_gt_mm3, n_gt * voxel, &what("volume"));
            checked += 1;
        }
    }
    assert_eq!(checked, 11);
}

#[test]
fn surface_distances_match_medpy_both_connectivities() {
    let mut finite = 0;
    for name in FIXTURES {
        let c = load(name);
        let classes: Vec<u16> = c
            .classes
            .iter()
            .map(|r| r["class_id"].as_u64().unwrap() as u16)
            .collect();
        for (conn, key) in [(Connectivity::Face, "face"), (Connectivity::Full, "full")] {
            let opts = MetricOptions {
                connectivity: conn,
                ..MetricOptions::medpy()
            };
            let got =
                evaluate_case(c.pred.view(), c.gt.view(), &c.spacing, &classes, &opts).unwrap();
            let alt = MetricOptions {
                assd: AssdDefinition::MeanOfDirectedMeans,
                ..opts.clone()
            };
            let got_alt =
                evaluate_case(c.pred.view(), c.gt.view(), &c.spacing, &classes, &alt).unwrap();
            for ((m, m_alt), r) in got.iter().zip(&got_alt).zip(&c.classes) {
                let r = &r["medpy"][key];
                let what = |k: &str| format!("{} class {} {key} {k}", c.name, m.class);
                assert_matches(m.hausdorff, medpy(&r["hd"]), &what("hd"));
                assert_matches(m.hd95, medpy(&r["hd95"]), &what("hd95"));
                assert_matches(m.assd, medpy(&r["assd"]), &what("assd"));
                assert_matches(m.asd_pred_to_gt, medpy(&r["asd"]), &what("asd"));
                assert_matches(
                    m.asd_gt_to_pred,
                    medpy(&r["asd_reverse"]),
                    &what("asd reverse"),
                );
                let mean_of_means = 0.5 * (medpy(&r["asd"]) + medpy(&r["asd_reverse"]));
                assert_matches(m_alt.assd, mean_of_means, &what("mean of directed means"));
                if reference(&r["hd95"]).is_some() {
                    finite += 1;
                }
            }
        }
    }
    // 2D: classes 1-3, 3D: classes 1-2, speckle: 0-1; both connectivities
    assert_eq!(finite, 14);
}

#[test]
fn surface_distances_match_monai() {
    let inf_nan = EmptyPolicies {
        one_empty: EmptyPolicy::Inf,
        both_empty: EmptyPolicy::Nan,
    };
    // MONAI's HD95 interpolates between infinities when one mask is empty: NaN
    let nan_nan = EmptyPolicies {
        one_empty: EmptyPolicy::Nan,
        both_empty: EmptyPolicy::Nan,
    };
    let nsd_empty = MetricOptions::monai().nsd_empty;
    let mut n = 0;
    for name in FIXTURES {
        let c = load(name);
        let tolerances: Vec<(String, f64)> = [0.0, 1.0, 2.5]
            .iter()
            .map(|t| (format!("nsd_{t}"), *t))
            .collect();
        for r in &c.classes {
            let class = r["class_id"].as_u64().unwrap() as u16;
            let r = &r["monai"];
            let what = |k: &str| format!("{} class {class} MONAI {k}", c.name);
            let sd = surface_distances(
                c.pred.view(),
                c.gt.view(),
                class,
                &c.spacing,
                Connectivity::Face,
            )
            .unwrap();
            assert_matches(sd.hausdorff(&inf_nan), medpy(&r["hd"]), &what("hd"));
            assert_matches(
                sd.percentile_hausdorff(95.0, Hd95Definition::MaxOfDirected, &nan_nan),
                medpy(&r["hd95"]),
                &what("hd95"),
            );
            assert_matches(
                sd.directed_percentile(95.0, &nan_nan),
                medpy(&r["hd95_directed"]),
                &what("hd95 directed"),
            );
            assert_matches(
                sd.assd(AssdDefinition::PooledMean, &inf_nan),
                medpy(&r["assd"]),
                &what("assd"),
            );
            assert_matches(sd.asd_pred_to_gt(&inf_nan), medpy(&r["asd"]), &what("asd"));
            for (key, t) in &tolerances {
                assert_matches(sd.nsd(*t, &nsd_empty), medpy(&r[key.as_str()]), &what(key));
            }
            n += 1;
        }
    }
    assert_eq!(n, 11);
}

#[test]
fn monai_preset_reproduces_monai_through_evaluate_case() {
    let c = load("multiclass_2d");
    let got = evaluate_case(
        c.pred.view(),
        c.gt.view(),
        &c.spacing,
        &[1, 2, 3],
        &MetricOptions::monai(),
    )
    .unwrap();
    for (m, r) in got.iter().zip(&c.classes) {
        assert_matches(m.hd95, medpy(&r["monai"]["hd95"]), "hd95");
        assert_matches(m.nsd, medpy(&r["monai"]["nsd_1"]), "nsd at 1 mm");
    }
}

#[test]
fn fixtures_differ_between_definitions() {
    // guards against fixtures where pooled and max-of-directed coincide
    let c = load("multiclass_3d");
    let r = &c.classes[0];
    let pooled = medpy(&r["medpy"]["face"]["hd95"]);
    let directed = medpy(&r["monai"]["hd95"]);
    assert!((pooled - directed).abs() > 0.1);
}
