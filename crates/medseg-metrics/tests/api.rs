//! Closed-form values, empty-mask policies and errors.

use medseg_metrics::{
    confusion, dice, evaluate_case, percentile, surface_distances, Connectivity, EmptyPolicies,
    EmptyPolicy, Hd95Definition, MetricOptions, MetricsError,
};
use ndarray::{s, Array2, Array3, ArrayD, IxDyn};

#[test]
fn percentile_interpolates_like_numpy() {
    // numpy.percentile([4, 1, 3, 2], 95) = 3.85; ([5], 95) = 5; ([1, 2], 50) = 1.5
    assert!((percentile(&mut [4.0, 1.0, 3.0, 2.0], 95.0) - 3.85).abs() < 1e-12);
    assert_eq!(percentile(&mut [5.0], 95.0), 5.0);
    assert!((percentile(&mut [2.0, 1.0], 50.0) - 1.5).abs() < 1e-12);
    assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 100.0), 3.0);
    assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 0.0), 1.0);
    assert!(percentile(&mut [], 95.0).is_nan());
}

#[test]
fn overlap_closed_form() {
    let mut gt = Array2::<u16>::zeros((10, 10));
    let mut pred = Array2::<u16>::zeros((10, 10));
    gt.slice_mut(s![0..4, 0..5]).fill(2); // 20 voxels
    pred.slice_mut(s![0..4, 2..8]).fill(2); // 24 voxels, 12 shared
    let c = confusion(pred.view().into_dyn(), gt.view().into_dyn(), 2).unwrap();
    assert_eq!((c.tp, c.fp, c.fn_, c.tn), (12, 12, 8, 68));
    let z = EmptyPolicy::Nan;
    assert!((c.dice(z) - 24.0 / 44.0).abs() < 1e-15);
    assert!(
        (dice(pred.view().into_dyn(), gt.view().into_dyn(), 2).unwrap() - 24.0 / 44.0).abs()
            < 1e-15
    );
    assert!((c.iou(z) - 12.0 / 32.0).abs() < 1e-15);
    assert!((c.precision(z) - 0.5).abs() < 1e-15);
    assert!((c.recall(z) - 0.6).abs() < 1e-15);
    assert!((c.specificity(z) - 68.0 / 80.0).abs() < 1e-15);
    assert!((c.volume_similarity(z) - (1.0 - 4.0 / 44.0)).abs() < 1e-15);
    assert!((c.relative_volume_error(z) - 0.2).abs() < 1e-15);
}

#[test]
fn empty_policies_apply_per_case() {
    let gt = Array3::<u16>::zeros((4, 5, 6));
    let mut pred = Array3::<u16>::zeros((4, 5, 6));
    pred[[1, 1, 1]] = 1;
    let opts = MetricOptions {
        distance_empty: EmptyPolicies {
            one_empty: EmptyPolicy::Cap(50.0),
            both_empty: EmptyPolicy::Zero,
        },
        overlap_zero_division: EmptyPolicy::Cap(1.0),
        ..MetricOptions::default()
    };
    let m = evaluate_case(
        pred.view().into_dyn(),
        gt.view().into_dyn(),
        &[1.0; 3],
        &[1, 2],
        &opts,
    )
    .unwrap();
    // class 1: only predicted
    assert_eq!(m[0].hausdorff, 50.0);
    assert_eq!(m[0].hd95, 50.0);
    assert_eq!(m[0].assd, 50.0);
    assert_eq!(m[0].nsd, 0.0);
    assert_eq!(m[0].dice, 0.0);
    assert_eq!(m[0].recall, 1.0); // no ground truth: zero division
                                  // class 2: in neither
    assert_eq!(m[1].hausdorff, 0.0);
    assert_eq!(m[1].dice, 1.0);
    assert!(m[1].nsd.is_nan());
    // defaults: inf for one empty, NaN for both
    let d = evaluate_case(
        pred.view().into_dyn(),
        gt.view().into_dyn(),
        &[1.0; 3],
        &[1, 2],
        &MetricOptions::default(),
    )
    .unwrap();
    assert_eq!(d[0].hd95, f64::INFINITY);
    assert!(d[1].hd95.is_nan() && d[1].dice.is_nan());
}

#[test]
fn shifted_boxes_have_known_distances() {
    // two 6x6x6 cubes shifted by 2 voxels along the first axis of 3 mm
    let mut gt = Array3::<u16>::zeros((12, 10, 10));
    let mut pred = Array3::<u16>::zeros((12, 10, 10));
    gt.slice_mut(s![2..8, 2..8, 2..8]).fill(1);
    pred.slice_mut(s![4..10, 2..8, 2..8]).fill(1);
    let sd = surface_distances(
        pred.view().into_dyn(),
        gt.view().into_dyn(),
        1,
        &[3.0, 1.0, 1.0],
        Connectivity::Face,
    )
    .unwrap();
    let e = MetricOptions::default().distance_empty;
    assert!((sd.hausdorff(&e) - 6.0).abs() < 1e-12);
    assert!(sd.pred_to_gt.iter().all(|&d| d <= 6.0 + 1e-12));
    // the pred face at depth 9 is 6 mm from the gt face at depth 7
    let max_both = Hd95Definition::MaxOfDirected;
    assert!(sd.percentile_hausdorff(100.0, max_both, &e) == sd.hausdorff(&e));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let a = ArrayD::<u16>::zeros(IxDyn(&[4, 4]));
    let b = ArrayD::<u16>::zeros(IxDyn(&[4, 5]));
    let o = MetricOptions::default();
    assert!(matches!(
        evaluate_case(a.view(), b.view(), &[1.0, 1.0], &[1], &o),
        Err(MetricsError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        evaluate_case(a.view(), a.view(), &[1.0], &[1], &o),
        Err(MetricsError::SpacingLength { got: 1, ndim: 2 })
    ));
    assert!(matches!(
        evaluate_case(a.view(), a.view(), &[1.0, 0.0], &[1], &o),
        Err(MetricsError::BadSpacing(_))
    ));
    assert!(matches!(
        evaluate_case(a.view(), a.view(), &[1.0, 1.0], &[1, 1], &o),
        Err(MetricsError::InvalidOption(_))
    ));
    let bad = MetricOptions {
        percentile: 101.0,
        ..MetricOptions::default()
    };
    assert!(matches!(
        evaluate_case(a.view(), a.view(), &[1.0, 1.0], &[1], &bad),
        Err(MetricsError::InvalidOption(_))
    ));
    let c = ArrayD::<u16>::zeros(IxDyn(&[2, 2, 2, 2]));
    assert!(matches!(
        evaluate_case(c.view(), c.view(), &[1.0; 4], &[1], &o),
        Err(MetricsError::Dimensionality(4))
    ));
}
