//! Behaviour of the transforms through the public API.

use medseg_core::{Error, Geometry, Image, LabelMap, Sample, TransformRecord};
use medseg_transforms::{
    build_pipeline, invert_label, invert_prediction, label_to_probability, percentile, Mode,
    Pipeline, Registry, Transform,
};
use ndarray::{ArrayD, Axis, Dimension, IxDyn};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
use serde_json::json;
use std::collections::BTreeSet;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn specs(v: serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().unwrap().clone()
}

fn apply(spec: serde_json::Value, s: Sample, seed: u64) -> Sample {
    build_pipeline(&[spec])
        .unwrap()
        .apply(s, &mut rng(seed))
        .unwrap()
}

/// A sample whose image value encodes the voxel index, a label with classes
/// 0..=3 plus 255 stripes, and a weight map of 0 where the label is 255.
fn sample(shape: &[usize], geometry: Geometry) -> Sample {
    let n: usize = shape.iter().product();
    let mut full = vec![1];
    full.extend_from_slice(shape);
    let img = ArrayD::from_shape_vec(IxDyn(&full), (0..n).map(|i| i as f32 * 0.5 + 1.0).collect())
        .unwrap();
    let lab = ArrayD::from_shape_vec(
        IxDyn(&full),
        (0..n)
            .map(|i| {
                if i % 7 == 3 {
                    255
                } else {
                    ((i / 5) % 4) as u16
                }
            })
            .collect(),
    )
    .unwrap();
    let w = lab.mapv(|v| if v == 255 { 0.0f32 } else { 1.0 });
    let noisy = lab.mapv(|v| if v == 2 { 1.0f32 } else { 0.0 });
    let mut s = Sample::new("s", Image::new(img, geometry).unwrap())
        .with_label(LabelMap::new(lab, geometry).unwrap())
        .unwrap()
        .with_pixel_weight(w)
        .unwrap();
    s.noisy_mask = Some(noisy);
    s
}

/// A smooth image: a broad Gaussian blob, with a blob-shaped label.
fn smooth_sample(shape: &[usize]) -> Sample {
    let mut full = vec![1];
    full.extend_from_slice(shape);
    let centre: Vec<f64> = shape.iter().map(|&n| (n as f64 - 1.0) / 2.0).collect();
    let img = ArrayD::from_shape_fn(IxDyn(&full), |idx| {
        let r2: f64 = (1..idx.ndim())
            .map(|a| {
                // off-centre and elongated, so that rotations change it
                let sigma = 5.0 + 2.0 * a as f64;
                let d = (idx[a] as f64 - centre[a - 1] - 3.0) / sigma;
                d * d
            })
            .sum();
        (100.0 * (-r2 / 2.0).exp()) as f32
    });
    let lab = img.mapv(|v| if v > 50.0 { 1u16 } else { 0 });
    let g = Geometry::identity();
    Sample::new("smooth", Image::new(img, g).unwrap())
        .with_label(LabelMap::new(lab, g).unwrap())
        .unwrap()
}

fn classes(s: &Sample) -> BTreeSet<u16> {
    s.label.as_ref().unwrap().data.iter().copied().collect()
}

#[test]
fn flip_twice_is_identity_2d_and_3d() {
    for shape in [vec![6usize, 7], vec![4, 5, 6]] {
        let g = Geometry {
            spacing: [2.0, 1.5, 0.5],
            origin: [1.0, 2.0, 3.0],
            ..Geometry::identity()
        };
        let s = sample(&shape, g);
        let spec = json!({"name": "RandomFlip", "p": 1.0});
        let once = apply(spec.clone(), s.clone(), 1);
        assert_ne!(once.image.data, s.image.data, "p = 1 must flip");
        // the first value of the flipped image is the last one of the input
        assert_eq!(once.image.data.iter().next(), s.image.data.iter().last());
        let twice = apply(spec, once, 2);
        assert_eq!(twice.image, s.image);
        assert_eq!(twice.label, s.label);
        assert_eq!(twice.pixel_weight, s.pixel_weight);
        for (a, b) in twice
            .image
            .geometry
            .origin
            .iter()
            .zip(s.image.geometry.origin)
        {
            assert!((a - b).abs() < 1e-12);
        }
    }
}

#[test]
fn rot90_matches_numpy_and_twice_half_turn_is_identity() {
    // numpy.rot90([[0, 1, 2], [3, 4, 5]]) == [[2, 5], [1, 4], [0, 3]]
    let img =
        ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let hist = vec![TransformRecord {
        name: "RandomRot90".into(),
        params: json!({"op": {"kind": "rot90", "k": 1, "axes": [1, 2]}, "in_shape": [1, 2, 3], "ndim": 2}),
    }];
    // inverting a k=1 rotation of [[2,5],[1,4],[0,3]] must give back the original
    let rotated =
        ArrayD::from_shape_vec(IxDyn(&[1, 3, 2]), vec![2.0, 5.0, 1.0, 4.0, 0.0, 3.0]).unwrap();
    assert_eq!(invert_prediction(&hist, rotated).unwrap(), img);

    // through the transform: find seeds drawing k = 2 and check two applications
    let s = sample(&[5, 6, 7], Geometry::identity());
    let spec = json!({"name": "RandomRot90", "axes": [1, 3], "p": 1.0});
    let mut checked = 0;
    for seed in 0..40 {
        let once = apply(spec.clone(), s.clone(), seed);
        let k = once.history[0].params["op"]["k"].as_u64().unwrap();
        assert!((1..=3).contains(&k));
        if k == 2 {
            let twice = apply(spec.clone(), once.clone(), seed);
            assert_eq!(twice.history[1].params["op"]["k"], 2);
            assert_eq!(twice.image.data, s.image.data);
            assert_eq!(twice.label, s.label);
            checked += 1;
        } else {
            // an odd rotation swaps the D and W extents
            assert_eq!(once.image.data.shape(), &[1, 7, 6, 5]);
        }
        // any k is undone by the inverse
        let back = invert_prediction(&once.history, once.image.data.clone()).unwrap();
        assert_eq!(back, s.image.data);
    }
    assert!(checked > 0);
}

#[test]
fn transpose_is_undone() {
    let s = sample(&[3, 4, 5], Geometry::identity());
    let out = apply(
        json!({"name": "RandomTranspose", "axes": [1, 2, 3], "p": 1.0}),
        s.clone(),
        5,
    );
    let back = invert_label(&out.history, out.label.clone().unwrap().data, 0).unwrap();
    assert_eq!(back, s.label.unwrap().data);
}

#[test]
fn crop_and_pad_inverse_restore_shape_and_values() {
    let g = Geometry::with_spacing([1.0, 0.8, 0.6]);
    let s = sample(&[20, 30], g);
    // pad then invert: exact
    let padded = apply(
        json!({"name": "Pad", "size": [25, 33], "label_fill": 255}),
        s.clone(),
        0,
    );
    assert_eq!(padded.image.data.shape(), &[1, 25, 33]);
    assert_eq!(padded.label.as_ref().unwrap().data[[0, 0, 0]], 255);
    assert_eq!(
        invert_prediction(&padded.history, padded.image.data.clone()).unwrap(),
        s.image.data
    );
    assert_eq!(
        invert_label(&padded.history, padded.label.clone().unwrap().data, 0).unwrap(),
        s.label.clone().unwrap().data
    );
    // padding moves the origin back by the padded voxels (2 rows, 1 column)
    assert!((padded.image.geometry.origin[1] - (-2.0 * 0.8)).abs() < 1e-9);
    assert!((padded.image.geometry.origin[0] - -0.6).abs() < 1e-9);

    // random crop, inverse: values inside the box restored, outside zero
    for seed in 0..5 {
        let c = apply(
            json!({"name": "RandomCrop", "size": [8, 12]}),
            s.clone(),
            seed,
        );
        assert_eq!(c.image.data.shape(), &[1, 8, 12]);
        let back = invert_prediction(&c.history, c.image.data.clone()).unwrap();
        assert_eq!(back.shape(), s.image.data.shape());
        let nonzero = back.iter().filter(|v| **v != 0.0).count();
        assert_eq!(nonzero, 8 * 12);
        for (b, o) in back.iter().zip(s.image.data.iter()) {
            assert!(*b == 0.0 || b == o);
        }
        // the crop's origin is the world position of its first voxel
        let start = c.history[0].params["op"]["start"].clone();
        let (y, x) = (
            start[1].as_i64().unwrap() as f64,
            start[2].as_i64().unwrap() as f64,
        );
        assert!((c.image.geometry.origin[1] - 0.8 * y).abs() < 1e-9);
        assert!((c.image.geometry.origin[0] - 0.6 * x).abs() < 1e-9);
    }
    // centre crop larger than the image in one axis pads it
    let cc = apply(
        json!({"name": "CenterCrop", "size": [10, 40]}),
        s.clone(),
        0,
    );
    assert_eq!(cc.image.data.shape(), &[1, 10, 40]);
    assert_eq!(cc.image.data[[0, 0, 5]], s.image.data[[0, 5, 0]]);
    let back = invert_prediction(&cc.history, cc.image.data.clone()).unwrap();
    assert_eq!(
        back.slice(ndarray::s![.., 5..15, ..]),
        s.image.data.slice(ndarray::s![.., 5..15, ..])
    );
}

#[test]
fn crop_with_foreground_keeps_the_foreground_box() {
    let mut lab = ArrayD::<u16>::zeros(IxDyn(&[1, 20, 20]));
    lab[[0, 5, 6]] = 2;
    lab[[0, 9, 12]] = 1;
    lab[[0, 1, 1]] = 255; // unannotated never counts
    let g = Geometry::identity();
    let s = Sample::new("f", Image::new(lab.mapv(|v| v as f32), g).unwrap())
        .with_label(LabelMap::new(lab, g).unwrap())
        .unwrap();
    let out = apply(
        json!({"name": "CropWithForeground", "margin": [1, 2]}),
        s,
        0,
    );
    assert_eq!(out.image.data.shape(), &[1, 7, 11]);
    assert_eq!(out.label.unwrap().data[[0, 1, 2]], 2);
}

#[test]
fn foreground_crop_contains_requested_class() {
    let mut lab = ArrayD::<u16>::zeros(IxDyn(&[1, 40, 40, 40]));
    lab[[0, 33, 4, 37]] = 3;
    let g = Geometry::identity();
    let s = Sample::new("f", Image::new(lab.mapv(|v| v as f32), g).unwrap())
        .with_label(LabelMap::new(lab, g).unwrap())
        .unwrap();
    let spec = json!({"name": "RandomForegroundCrop", "size": [8, 8, 8], "foreground_prob": 1.0});
    for seed in 0..5 {
        let out = apply(spec.clone(), s.clone(), seed);
        assert_eq!(out.image.data.shape(), &[1, 8, 8, 8]);
        assert!(out.label.unwrap().data.iter().any(|&v| v == 3));
    }
    // with probability 0 most random 8^3 crops of a 40^3 volume miss the voxel
    let spec0 = json!({"name": "RandomForegroundCrop", "size": [8, 8, 8], "foreground_prob": 0.0});
    let hits = (0..20)
        .filter(|&seed| {
            apply(spec0.clone(), s.clone(), seed)
                .label
                .unwrap()
                .data
                .iter()
                .any(|&v| v == 3)
        })
        .count();
    assert!(hits < 10, "{hits}");
}

#[test]
fn spatial_transforms_never_invent_label_classes() {
    let all = specs(json!([
        {"name": "RandomRotate", "angle_range_d": [-40, 40], "angle_range_h": [-10, 10], "p": 1.0},
        {"name": "RandomAffine", "angle_range_d": [-30, 30], "scale_range": [0.7, 1.4], "translate_range": [-3, 3], "p": 1.0},
        {"name": "RandomRescale", "ratio_range": [0.6, 1.5]},
        {"name": "RandomResizedCrop", "size": [9, 20, 11], "scale_range": [0.4, 0.9], "isotropic": false},
        {"name": "Resample", "spacing": [1.3, 0.7, 1.9]},
        {"name": "ElasticDeformation", "grid_spacing": 4, "magnitude_range": [2, 3], "p": 1.0},
        {"name": "RandomCrop", "size": [10, 30, 12]},
        {"name": "RandomFlip", "p": 1.0},
        {"name": "RandomRot90", "p": 1.0},
        {"name": "RandomTranspose", "axes": [1, 2, 3], "p": 1.0}
    ]));
    let s = sample(&[12, 14, 16], Geometry::identity());
    let before = classes(&s);
    for (i, spec) in all.iter().enumerate() {
        for seed in 0..3 {
            let out = build_pipeline(std::slice::from_ref(spec))
                .unwrap()
                .apply(s.clone(), &mut rng(seed))
                .unwrap();
            let after = classes(&out);
            assert!(
                after.is_subset(&before),
                "spec {i}: {after:?} not in {before:?}"
            );
            // weights travel with the labels: zero exactly where the label is unannotated
            let w = out.pixel_weight.as_ref().unwrap();
            for (l, w) in out.label.as_ref().unwrap().data.iter().zip(w.iter()) {
                if *l == 255 {
                    assert_eq!(*w, 0.0, "spec {i}");
                }
            }
            // so does the noisy mask (1 exactly on class 2 here)
            let m = out.noisy_mask.as_ref().unwrap();
            assert_eq!(m.shape(), w.shape(), "spec {i}");
            for (l, m) in out.label.as_ref().unwrap().data.iter().zip(m.iter()) {
                assert_eq!(*m == 1.0, *l == 2, "spec {i}");
            }
        }
    }
}

#[test]
fn joint_draw_moves_image_and_label_together() {
    // image == label as f32; with nearest image interpolation they must agree
    let s0 = sample(&[10, 12, 14], Geometry::identity());
    let lab = s0.label.clone().unwrap();
    let img = lab.data.mapv(|v| v as f32);
    let s = Sample::new("j", Image::new(img, Geometry::identity()).unwrap())
        .with_label(lab)
        .unwrap();
    let pipe = build_pipeline(&specs(json!([
        {"name": "RandomAffine", "angle_range_d": [-30, 30], "angle_range_w": [-20, 20], "scale_range": [0.8, 1.2], "p": 1.0, "image_interp": "nearest"},
        {"name": "ElasticDeformation", "grid_spacing": 5, "magnitude_range": [1, 2], "p": 1.0, "image_interp": "nearest"},
        {"name": "RandomCrop", "size": [8, 8, 8]}
    ])))
    .unwrap();
    let out = pipe.apply(s, &mut rng(3)).unwrap();
    let l = out.label.unwrap().data.mapv(|v| v as f32);
    assert_eq!(out.image.data, l);
}

#[test]
fn unannotated_value_preserved_with_ignore_fill() {
    // a sparse scribble label: mostly 255, a few strokes of 1 and 2
    let mut lab = ArrayD::<u16>::from_elem(IxDyn(&[1, 32, 32]), 255);
    for i in 4..28 {
        lab[[0, 10, i]] = 1;
        lab[[0, i, 20]] = 2;
    }
    let g = Geometry::identity();
    let s = Sample::new("scr", Image::new(lab.mapv(|v| v as f32), g).unwrap())
        .with_label(LabelMap::new(lab, g).unwrap())
        .unwrap();
    let out = apply(
        json!({"name": "RandomRotate", "angle_range_d": [30, 30], "p": 1.0, "label_fill": 255}),
        s,
        0,
    );
    let c = classes(&out);
    assert_eq!(c, BTreeSet::from([1, 2, 255]));
    // the corners came from outside: unannotated, not background
    assert_eq!(out.label.as_ref().unwrap().data[[0, 0, 0]], 255);
    let strokes = out
        .label
        .unwrap()
        .data
        .iter()
        .filter(|&&v| v != 255)
        .count();
    assert!((35..=60).contains(&strokes), "{strokes}");
}

#[test]
fn zero_strength_elastic_is_identity() {
    for shape in [vec![9usize, 11], vec![5, 9, 11]] {
        let s = sample(&shape, Geometry::identity());
        let out = apply(
            json!({"name": "ElasticDeformation", "magnitude_range": [0, 0], "grid_spacing": 3, "p": 1.0}),
            s.clone(),
            4,
        );
        assert_eq!(out.image, s.image);
        assert_eq!(out.label, s.label);
        assert_eq!(out.pixel_weight, s.pixel_weight);
        // and a non-zero strength does move voxels
        let moved = apply(
            json!({"name": "ElasticDeformation", "magnitude_range": [2, 2], "grid_spacing": 3, "p": 1.0}),
            s.clone(),
            4,
        );
        assert_ne!(moved.image, s.image);
        assert!(invert_prediction(&moved.history, moved.image.data.clone()).is_err());
    }
}

fn interior_max_err(a: &ArrayD<f32>, b: &ArrayD<f32>, margin: usize) -> f32 {
    let mut m = 0f32;
    for (idx, v) in a.indexed_iter() {
        let inside =
            (1..idx.ndim()).all(|ax| idx[ax] >= margin && idx[ax] + margin < a.shape()[ax]);
        if inside {
            m = m.max((v - b[&idx]).abs());
        }
    }
    m
}

#[test]
fn rotate_and_resample_inverse_approximately_restore() {
    for shape in [vec![48usize, 48], vec![32, 32, 32]] {
        let s = smooth_sample(&shape);
        let rot = if shape.len() == 2 {
            json!({"name": "RandomRotate", "angle_range_d": [25, 25], "p": 1.0})
        } else {
            json!({"name": "RandomRotate", "angle_range_d": [25, 25], "angle_range_w": [-15, -15], "p": 1.0})
        };
        let out = apply(rot, s.clone(), 0);
        assert!(
            interior_max_err(&out.image.data, &s.image.data, 8) > 5.0,
            "rotation must change the image"
        );
        let back = invert_prediction(&out.history, out.image.data.clone()).unwrap();
        let err = interior_max_err(&back, &s.image.data, 8);
        assert!(
            err < 2.0,
            "{shape:?}: rotate inverse error {err} (peak 100)"
        );
        let lab = invert_label(&out.history, out.label.clone().unwrap().data, 0).unwrap();
        let diff = lab
            .iter()
            .zip(s.label.as_ref().unwrap().data.iter())
            .filter(|(a, b)| a != b)
            .count();
        let fg = s
            .label
            .as_ref()
            .unwrap()
            .data
            .iter()
            .filter(|&&v| v == 1)
            .count();
        assert!(diff * 10 < fg, "label inverse differs at {diff} of {fg}");

        let sp = if shape.len() == 2 {
            json!([1.7, 1.3])
        } else {
            json!([1.7, 1.3, 0.8])
        };
        let r = apply(json!({"name": "Resample", "spacing": sp}), s.clone(), 0);
        let back = invert_prediction(&r.history, r.image.data.clone()).unwrap();
        assert_eq!(back.shape(), s.image.data.shape());
        let err = interior_max_err(&back, &s.image.data, 4);
        assert!(err < 3.0, "{shape:?}: resample inverse error {err}");
    }
}

#[test]
fn resized_crop_maps_back_to_its_box() {
    let s = smooth_sample(&[40, 50]);
    for seed in 0..4 {
        let out = apply(
            json!({"name": "RandomResizedCrop", "size": [24, 24], "scale_range": [0.6, 0.9]}),
            s.clone(),
            seed,
        );
        assert_eq!(out.image.data.shape(), &[1, 24, 24]);
        let back = invert_prediction(&out.history, out.image.data.clone()).unwrap();
        assert_eq!(back.shape(), s.image.data.shape());
        // inside the crop box the round trip is close to the original
        let op = &out.history[0].params["op"];
        let (k, b) = (
            op["matrix"][1][1].as_f64().unwrap(),
            op["offset"][1].as_f64().unwrap(),
        );
        let (lo, hi) = (
            (b + 0.5 - 0.5 * k).ceil() as usize + 2,
            (b + 0.5 + 23.5 * k) as usize - 2,
        );
        let (k2, b2) = (
            op["matrix"][2][2].as_f64().unwrap(),
            op["offset"][2].as_f64().unwrap(),
        );
        let (lo2, hi2) = (
            (b2 + 0.5 - 0.5 * k2).ceil() as usize + 2,
            (b2 + 0.5 + 23.5 * k2) as usize - 2,
        );
        let mut worst = 0f32;
        for y in lo..hi {
            for x in lo2..hi2 {
                worst = worst.max((back[[0, y, x]] - s.image.data[[0, y, x]]).abs());
            }
        }
        assert!(worst < 6.0, "seed {seed}: {worst}");
        assert!(hi > lo && hi2 > lo2);
    }
}

#[test]
fn resample_sets_spacing_and_shape() {
    let g = Geometry::with_spacing([3.0, 1.0, 0.5]);
    let s = sample(&[10, 20, 30], g);
    let out = apply(
        json!({"name": "Resample", "spacing": [1.5, 2.0, 1.0]}),
        s,
        0,
    );
    assert_eq!(out.image.data.shape(), &[1, 20, 10, 15]);
    for (a, b) in out.image.geometry.spacing.iter().zip([1.5, 2.0, 1.0]) {
        assert!((a - b).abs() < 1e-12);
    }
    // the grid keeps its physical extent: the first voxel centre moves by
    // half the spacing change
    assert!((out.image.geometry.origin[0] - 0.25).abs() < 1e-9);
    assert_eq!(out.label.unwrap().geometry, out.image.geometry);
}

#[test]
fn normalise_mean_std_closed_form() {
    // values 1..=N: mean (N+1)/2, population std sqrt((N^2-1)/12)
    let n = 60usize;
    let img = ArrayD::from_shape_vec(
        IxDyn(&[2, 6, 10]),
        (0..2 * n)
            .map(|i| (i % n + 1) as f32 * if i < n { 1.0 } else { 3.0 })
            .collect(),
    )
    .unwrap();
    let s = Sample::new("n", Image::new(img, Geometry::identity()).unwrap());
    let out = apply(json!({"name": "NormalizeWithMeanStd"}), s.clone(), 0);
    let mean = (n as f64 + 1.0) / 2.0;
    let std = (((n * n) as f64 - 1.0) / 12.0).sqrt();
    for (c, k) in [(0usize, 1.0f64), (1, 3.0)] {
        let ch = out.image.data.index_axis(Axis(0), c);
        for (i, v) in ch.iter().enumerate() {
            let x = (i + 1) as f64 * k;
            let want = (x - mean * k) / (std * k);
            assert!((*v as f64 - want).abs() < 1e-5, "{c} {i}: {v} vs {want}");
        }
    }
    // fixed mean and std per channel
    let out = apply(
        json!({"name": "NormalizeWithMeanStd", "channels": [1], "mean": [3.0], "std": [2.0]}),
        s.clone(),
        0,
    );
    assert_eq!(out.image.data[[0, 0, 4]], 5.0);
    assert_eq!(out.image.data[[1, 0, 4]], (15.0 - 3.0) / 2.0);

    // nonzero: statistics over non-zero voxels, zeros unchanged
    let img =
        ArrayD::from_shape_vec(IxDyn(&[1, 1, 6]), vec![0.0, 2.0, 0.0, 4.0, 6.0, 0.0]).unwrap();
    let s = Sample::new("z", Image::new(img, Geometry::identity()).unwrap());
    let out = apply(
        json!({"name": "NormalizeWithMeanStd", "nonzero": true}),
        s.clone(),
        0,
    );
    let sd = (8.0f32 / 3.0).sqrt();
    let want = [0.0, -2.0 / sd, 0.0, 0.0, 2.0 / sd, 0.0];
    for (v, w) in out.image.data.iter().zip(want) {
        assert!((v - w).abs() < 1e-6);
    }
    // mask threshold: statistics above 1, every voxel changed
    let out = apply(
        json!({"name": "NormalizeWithMeanStd", "mask_threshold": 1.0}),
        s,
        0,
    );
    assert!((out.image.data[[0, 0, 0]] - (-4.0 / sd)).abs() < 1e-6);
}

#[test]
fn min_max_percentile_and_clip_closed_forms() {
    // 0, 1, ..., 100: percentile q is q
    let img =
        ArrayD::from_shape_vec(IxDyn(&[1, 1, 101]), (0..101).map(|i| i as f32).collect()).unwrap();
    let s = Sample::new("p", Image::new(img, Geometry::identity()).unwrap());
    let v: Vec<f32> = (0..101).rev().map(|i| i as f32).collect();
    assert_eq!(percentile(&v, 12.5), Some(12.5));
    assert_eq!(percentile(&v, 100.0), Some(100.0));
    let out = apply(
        json!({"name": "NormalizeWithPercentiles", "percentile_lower": 10, "percentile_upper": 90}),
        s.clone(),
        0,
    );
    for (i, v) in out.image.data.iter().enumerate() {
        let want = ((i as f32 - 10.0) / 80.0).clamp(0.0, 1.0);
        assert!((v - want).abs() < 1e-6);
    }
    let out = apply(json!({"name": "NormalizeWithMinMax"}), s.clone(), 0);
    for (i, v) in out.image.data.iter().enumerate() {
        assert!((v - (2.0 * i as f32 / 100.0 - 1.0)).abs() < 1e-6);
    }
    let out = apply(
        json!({"name": "NormalizeWithMinMax", "threshold_lower": [20], "threshold_upper": [70], "output_range": [0, 10]}),
        s.clone(),
        0,
    );
    assert_eq!(out.image.data[[0, 0, 5]], 0.0);
    assert!((out.image.data[[0, 0, 45]] - 5.0).abs() < 1e-6);
    assert_eq!(out.image.data[[0, 0, 90]], 10.0);
    let out = apply(
        json!({"name": "IntensityClip", "lower": [-1000], "percentile_upper": 50}),
        s,
        0,
    );
    assert_eq!(out.image.data[[0, 0, 80]], 50.0);
    assert_eq!(out.image.data[[0, 0, 3]], 3.0);
}

#[test]
fn random_intensity_transforms_follow_their_formulas() {
    let img =
        ArrayD::from_shape_vec(IxDyn(&[1, 4, 5]), (0..20).map(|i| i as f32).collect()).unwrap();
    let s = Sample::new("i", Image::new(img.clone(), Geometry::identity()).unwrap());
    let out = apply(
        json!({"name": "GammaCorrection", "gamma_range": [2, 2], "p": 1.0}),
        s.clone(),
        0,
    );
    for (o, x) in out.image.data.iter().zip(img.iter()) {
        assert!((o - (x / 19.0).powi(2) * 19.0).abs() < 1e-4);
    }
    let out = apply(
        json!({"name": "BrightnessMultiplicative", "range": [1.5, 1.5], "p": 1.0}),
        s.clone(),
        0,
    );
    assert_eq!(out.image.data, img.mapv(|x| x * 1.5));
    let out = apply(
        json!({"name": "BrightnessAdditive", "range": [-2, -2], "p": 1.0}),
        s.clone(),
        0,
    );
    assert_eq!(out.image.data, img.mapv(|x| x - 2.0));
    let out = apply(
        json!({"name": "ContrastAdjust", "range": [0.5, 0.5], "p": 1.0}),
        s.clone(),
        0,
    );
    assert!(out
        .image
        .data
        .iter()
        .zip(img.iter())
        .all(|(o, x)| (o - ((x - 9.5) * 0.5 + 9.5)).abs() < 1e-5));
    // blur keeps a linear ramp away from the edges and the mean of a constant
    let ramp = ArrayD::from_shape_fn(IxDyn(&[1, 30, 30]), |i| i[2] as f32 * 2.0 + i[1] as f32);
    let s2 = Sample::new("r", Image::new(ramp.clone(), Geometry::identity()).unwrap());
    let out = apply(
        json!({"name": "GaussianBlur", "sigma_range": [1.5, 1.5], "p": 1.0}),
        s2,
        0,
    );
    assert!(interior_max_err(&out.image.data, &ramp, 6) < 1e-3);
    // noise: the sample std matches the drawn std
    let flat = ArrayD::<f32>::zeros(IxDyn(&[1, 200, 200]));
    let s3 = Sample::new("n", Image::new(flat, Geometry::identity()).unwrap());
    let out = apply(
        json!({"name": "GaussianNoise", "std_range": [0.3, 0.3], "mean": 1.0, "p": 1.0}),
        s3,
        0,
    );
    let (m, sd) = medseg_transforms::mean_std(out.image.data.iter(), |_| true).unwrap();
    assert!(
        (m - 1.0).abs() < 0.01 && (sd - 0.3).abs() < 0.01,
        "{m} {sd}"
    );
    // histogram equalisation of a uniform ramp is close to linear in [0, 1]
    let out = apply(json!({"name": "HistEqual", "bins": 20}), s, 0);
    for (o, x) in out.image.data.iter().zip(img.iter()) {
        assert!((0.0..=1.0).contains(o));
        assert!((o - (x + 1.0) / 20.0).abs() < 0.06, "{x} -> {o}");
    }
}

#[test]
fn label_transforms() {
    let lab = ArrayD::from_shape_vec(IxDyn(&[1, 1, 5]), vec![0u16, 1, 2, 255, 1]).unwrap();
    let g = Geometry::identity();
    let s = Sample::new("l", Image::new(lab.mapv(|v| v as f32), g).unwrap())
        .with_label(LabelMap::new(lab.clone(), g).unwrap())
        .unwrap();
    let out = apply(
        json!({"name": "LabelConvert", "source_list": [1, 2], "target_list": [2, 1]}),
        s.clone(),
        0,
    );
    assert_eq!(
        out.label.unwrap().data.iter().copied().collect::<Vec<_>>(),
        vec![0, 2, 1, 255, 2]
    );
    let out = apply(
        json!({"name": "PartialLabelToProbability", "class_num": 3}),
        s.clone(),
        0,
    );
    assert_eq!(
        out.pixel_weight
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![1.0, 1.0, 1.0, 0.0, 1.0]
    );
    let p = label_to_probability(s.label.as_ref().unwrap(), 3, Some(255)).unwrap();
    assert_eq!(p.shape(), &[3, 1, 5]);
    assert_eq!(p.index_axis(Axis(2), 3).sum(), 0.0);
    assert_eq!(p[[1, 0, 4]], 1.0);
    assert_eq!(p.sum(), 4.0);
    let err = build_pipeline(&[json!({"name": "PartialLabelToProbability", "class_num": 2})])
        .unwrap()
        .apply(s, &mut rng(0))
        .unwrap_err();
    assert!(err.to_string().contains("label value 2"), "{err}");
}

#[test]
fn deterministic_for_a_seed() {
    let pipe = build_pipeline(&specs(json!([
        {"name": "RandomCrop", "size": [10, 10, 10]},
        {"name": "RandomFlip"},
        {"name": "RandomRotate", "angle_range_d": [-30, 30]},
        {"name": "ElasticDeformation", "grid_spacing": 4},
        {"name": "GaussianNoise"}
    ])))
    .unwrap();
    let s = sample(&[12, 14, 16], Geometry::identity());
    let a = pipe.apply(s.clone(), &mut rng(9)).unwrap();
    let b = pipe.apply(s.clone(), &mut rng(9)).unwrap();
    assert_eq!(a, b);
    let differ = (10..15).any(|seed| pipe.apply(s.clone(), &mut rng(seed)).unwrap() != a);
    assert!(differ);
}

#[test]
fn config_errors_name_the_fault() {
    let err = build_pipeline(&specs(
        json!([{"name": "RandomFlip"}, {"name": "RandomFlipp"}]),
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("transforms[1]") && msg.contains("RandomFlipp"),
        "{msg}"
    );
    let err = build_pipeline(&specs(
        json!([{"name": "RandomCrop", "size": [4, 4], "sise": 3}]),
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("transforms[0]") && msg.contains("sise"),
        "{msg}"
    );
    let err = build_pipeline(&specs(json!([{"name": "RandomFlip", "p": 1.5}]))).unwrap_err();
    assert!(err.to_string().contains("RandomFlip.p"), "{err}");
    let err = build_pipeline(&specs(
        json!([{"name": "RandomFlip", "stage": "sometimes"}]),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("stage"), "{err}");
    // a parameter that does not fit the image at apply time
    let pipe = build_pipeline(&specs(
        json!([{"name": "RandomFlip"}, {"name": "RandomCrop", "size": [4, 4, 4]}]),
    ))
    .unwrap();
    let err = pipe
        .apply(sample(&[6, 6], Geometry::identity()), &mut rng(0))
        .unwrap_err();
    match err {
        Error::InvalidValue { key, .. } => assert_eq!(key, "transforms[1].RandomCrop.size"),
        other => panic!("{other}"),
    }
    let err = build_pipeline(&[json!({"name": "RandomFlip", "axes": [3]})])
        .unwrap()
        .apply(sample(&[6, 6], Geometry::identity()), &mut rng(0))
        .unwrap_err();
    assert!(err.to_string().contains("axes"), "{err}");
    let err = build_pipeline(&[json!({"name": "RandomTranspose", "axes": [1, -2], "p": 1.0})])
        .unwrap()
        .apply(sample(&[6, 6], Geometry::identity()), &mut rng(0))
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

#[test]
fn stages_and_modes() {
    let pipe = build_pipeline(&specs(json!([
        {"name": "NormalizeWithMinMax"},
        {"name": "RandomFlip", "p": 1.0},
        {"name": "BrightnessAdditive", "range": [1, 1], "p": 1.0, "stage": "both"},
        {"name": "Pad", "size": [9, 9], "stage": "train"}
    ])))
    .unwrap();
    assert_eq!(pipe.len(), 4);
    let s = sample(&[6, 7], Geometry::identity());
    let train = pipe.apply(s.clone(), &mut rng(0)).unwrap();
    assert_eq!(train.history.len(), 4);
    assert_eq!(train.image.data.shape(), &[1, 9, 9]);
    let pipe = pipe.with_mode(Mode::Inference);
    let inf = pipe.apply(s.clone(), &mut rng(0)).unwrap();
    let names: Vec<&str> = inf.history.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["NormalizeWithMinMax", "BrightnessAdditive"]);
    assert_eq!(inf.image.data[[0, 0, 0]], 0.0); // -1 after min-max, +1
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddConst {
    value: f32,
}

impl Transform for AddConst {
    fn name(&self) -> &str {
        "AddConst"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> medseg_core::Result<Sample> {
        sample.image.data += self.value;
        Ok(sample)
    }
}

#[test]
fn users_register_their_own_transforms() {
    let mut reg = Registry::with_builtins();
    reg.register("AddConst", |v| {
        Ok(
            Box::new(medseg_transforms::from_params::<AddConst>("AddConst", v)?)
                as Box<dyn Transform>,
        )
    });
    let pipe: Pipeline = reg
        .build(&specs(
            json!([{"name": "AddConst", "value": 2.5}, {"name": "RandomFlip", "p": 0.0}]),
        ))
        .unwrap();
    let s = sample(&[3, 3], Geometry::identity());
    let out = pipe.apply(s.clone(), &mut rng(0)).unwrap();
    assert_eq!(out.image.data, s.image.data.mapv(|x| x + 2.5));
    let err = reg
        .build(&[json!({"name": "AddConst", "valu": 1})])
        .unwrap_err();
    assert!(err.to_string().contains("valu"));
    for name in medseg_transforms::BUILTIN_NAMES {
        assert!(reg.names().contains(name));
    }
}

#[test]
fn label_to_probability_checks_classes_and_keeps_the_map() {
    let s = sample(&[6, 7], Geometry::identity());
    let before = s.label.clone();
    // classes 0..=3 plus the ignore value 255: valid for class_num 4
    let out = apply(
        json!({"name": "LabelToProbability", "class_num": 4}),
        s.clone(),
        1,
    );
    assert_eq!(out.label, before);
    assert_eq!(out.history.last().unwrap().name, "LabelToProbability");
    // class 3 is out of range for class_num 3, and the error names the case
    let e = build_pipeline(&specs(
        json!([{"name": "LabelToProbability", "class_num": 3}]),
    ))
    .unwrap()
    .apply(s.clone(), &mut rng(1))
    .unwrap_err()
    .to_string();
    assert!(e.contains("label value 3") && e.contains("s:"), "{e}");
    // with another ignore value, 255 is out of range too
    let e = build_pipeline(&specs(
        json!([{"name": "LabelToProbability", "class_num": 4, "ignore": 0}]),
    ))
    .unwrap()
    .apply(s, &mut rng(1))
    .unwrap_err()
    .to_string();
    assert!(e.contains("label value"), "{e}");
    assert!(build_pipeline(&specs(
        json!([{"name": "LabelToProbability", "class_num": 1}])
    ))
    .is_err());
}
