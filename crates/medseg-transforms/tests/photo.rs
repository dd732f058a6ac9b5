//! Behaviour of the screen-photo transforms through the public API: closed
//! forms, labels, seeds, volumes and parameter errors.

use medseg_core::{Error, Geometry, Image, LabelMap, Sample};
use medseg_transforms::{
    build_pipeline, moire_pattern, perspective_coeffs, Corners, MoireCombine, MoireParams,
    BUILTIN_NAMES,
};
use ndarray::{s, ArrayD, Dimension, IxDyn};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
use serde_json::json;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn run(spec: serde_json::Value, s: Sample, seed: u64) -> Sample {
    build_pipeline(&[spec])
        .unwrap()
        .apply(s, &mut rng(seed))
        .unwrap()
}

fn build_err(spec: serde_json::Value) -> String {
    match build_pipeline(&[spec]) {
        Err(Error::InvalidValue { key, message }) => format!("{key}: {message}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    }
}

/// A phantom-like sample `[C, (D,) H, W]`: a disk (label 1) and a square
/// (label 2) on a gradient, values spanning about [-100, 300].
fn sample(c: usize, spatial: &[usize]) -> Sample {
    let mut full = vec![c];
    full.extend_from_slice(spatial);
    let n = spatial.len();
    let (h, w) = (spatial[n - 2], spatial[n - 1]);
    let lab = ArrayD::from_shape_fn(IxDyn(&full[1..]), |i| {
        let (y, x) = (i[n - 2] as f64, i[n - 1] as f64);
        let (cy, cx) = (h as f64 * 0.45, w as f64 * 0.4);
        if (y - cy).powi(2) + (x - cx).powi(2) < (h.min(w) as f64 * 0.2).powi(2) {
            1u16
        } else if y > h as f64 * 0.7 && x > w as f64 * 0.65 {
            2
        } else {
            0
        }
    })
    .insert_axis(ndarray::Axis(0));
    let img = ArrayD::from_shape_fn(IxDyn(&full), |i| {
        let l = lab[&{
            let mut j = i.slice().to_vec();
            j[0] = 0;
            j
        }[..]] as f32;
        -100.0 + 2.0 * i[n] as f32 + 100.0 * l + 20.0 * i[0] as f32
    });
    let g = Geometry::identity();
    Sample::new("s", Image::new(img, g).unwrap())
        .with_label(LabelMap::new(lab, g).unwrap())
        .unwrap()
}

#[test]
fn new_transforms_are_registered() {
    for n in [
        "ColorJitter",
        "JpegQuality",
        "Moire",
        "RandomPerspective",
        "ScreenColorCast",
        "ScreenPhoto",
    ] {
        assert!(BUILTIN_NAMES.contains(&n), "{n}");
    }
    let mut sorted = BUILTIN_NAMES.to_vec();
    sorted.sort();
    assert_eq!(sorted, BUILTIN_NAMES);
}

#[test]
fn intensity_transforms_never_touch_the_label() {
    let s0 = sample(3, &[20, 24]);
    for spec in [
        json!({"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}),
        json!({"name": "JpegQuality", "quality_range": [10, 20], "p": 1.0}),
        json!({"name": "Moire", "p": 1.0}),
        json!({"name": "ScreenColorCast", "p": 1.0}),
    ] {
        let out = run(spec.clone(), s0.clone(), 4);
        assert_eq!(out.label, s0.label, "{spec}");
        assert_eq!(out.image.data.shape(), s0.image.data.shape());
        assert_ne!(out.image.data, s0.image.data, "{spec} changed nothing");
        assert_eq!(out.history.len(), 1);
    }
}

#[test]
fn colour_jitter_parameters_and_grey_images() {
    // an amount j means [max(0, 1 - j), 1 + j]; hue h means [-h, h]
    let grey = sample(1, &[16, 16]);
    // saturation and hue do nothing to a grey image
    let out = run(
        json!({"name": "ColorJitter", "saturation": [0.2, 0.2], "hue": [0.3, 0.3]}),
        grey.clone(),
        1,
    );
    assert_eq!(out.image.data, grey.image.data);
    // brightness on a grey image through the window [-100, 300]: x -> -100 + f (x + 100)
    let out = run(
        json!({"name": "ColorJitter", "brightness": [0.5, 0.5], "window": [-100.0, 300.0]}),
        grey.clone(),
        1,
    );
    for (a, b) in out.image.data.iter().zip(grey.image.data.iter()) {
        let want = -100.0 + 0.5 * (b.clamp(-100.0, 300.0) + 100.0);
        assert!((a - want).abs() < 1e-3, "{a} vs {want}");
    }
    // contrast 0 gives the mean everywhere
    let out = run(
        json!({"name": "ColorJitter", "contrast": [0.0, 0.0], "window": [-100.0, 300.0]}),
        grey.clone(),
        1,
    );
    let mean = grey.image.data.iter().map(|v| *v as f64).sum::<f64>() / 256.0;
    assert!(out
        .image
        .data
        .iter()
        .all(|v| (*v as f64 - mean).abs() < 1e-3));
    // errors name the key
    assert!(build_err(json!({"name": "ColorJitter", "hue": 0.7})).contains("hue"));
    assert!(
        build_err(json!({"name": "ColorJitter", "brightness": [1.5, 0.5]})).contains("brightness")
    );
    assert!(build_err(json!({"name": "ColorJitter", "brightness": "x"})).contains("brightness"));
    assert!(build_err(json!({"name": "ColorJitter", "brightnes": 0.2})).contains("brightnes"));
    // two channels are neither grey nor RGB
    let two = sample(2, &[8, 8]);
    let err = build_pipeline(&[json!({"name": "ColorJitter", "contrast": 0.5})])
        .unwrap()
        .apply(two, &mut rng(0))
        .unwrap_err();
    assert!(err.to_string().contains("2 channels"), "{err}");
}

#[test]
fn colour_jitter_is_seeded_and_per_slice_for_volumes() {
    let spec = json!({"name": "ColorJitter", "brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.2});
    let v = sample(3, &[3, 12, 14]);
    let a = run(spec.clone(), v.clone(), 9);
    let b = run(spec.clone(), v.clone(), 9);
    let c = run(spec.clone(), v.clone(), 10);
    assert_eq!(a.image.data, b.image.data);
    assert_ne!(a.image.data, c.image.data);
    // each depth slice equals the 2D transform of that slice with the same
    // draws and window
    let window = a.history[0].params["window"].clone();
    let mut spec2 = spec.clone();
    spec2["window"] = window;
    let a = run(spec2.clone(), v.clone(), 9);
    for d in 0..3 {
        let slice = v.image.data.slice(s![.., d, .., ..]).to_owned().into_dyn();
        let s2 = Sample::new("s", Image::new(slice, Geometry::identity()).unwrap());
        let out = run(spec2.clone(), s2, 9);
        let got = a.image.data.slice(s![.., d, .., ..]).to_owned().into_dyn();
        assert_eq!(got, out.image.data, "slice {d}");
    }
}

#[test]
fn perspective_moves_image_and_label_together() {
    // the image encodes the label: warped by nearest neighbour with the same
    // homography, it must still encode the warped label everywhere
    let mut s0 = sample(1, &[30, 40]);
    let lab = s0.label.as_ref().unwrap().data.clone();
    s0.image.data = lab.mapv(|v| v as f32 * 10.0 + 1.0);
    let spec = json!({"name": "RandomPerspective", "distortion_scale": 0.6, "p": 1.0,
                      "image_interp": "nearest", "image_fill": 1.0, "label_fill": 0});
    let out = run(spec.clone(), s0.clone(), 5);
    let l = &out.label.as_ref().unwrap().data;
    assert_ne!(l, &lab, "the warp moved nothing");
    for (v, &c) in out.image.data.iter().zip(l.iter()) {
        assert_eq!(*v, c as f32 * 10.0 + 1.0);
    }
    // the label value set is kept (no class invented)
    assert!(l.iter().all(|v| [0, 1, 2].contains(v)));
    // seeded
    assert_eq!(run(spec.clone(), s0.clone(), 5).label, out.label);
    assert_ne!(run(spec.clone(), s0.clone(), 6).label, out.label);
    // the corners went where recorded: the output at an end corner reads the
    // input at the start corner
    let rec = &out.history[0].params;
    let start: Corners = serde_json::from_value(rec["startpoints"].clone()).unwrap();
    let end: Corners = serde_json::from_value(rec["endpoints"].clone()).unwrap();
    let c = perspective_coeffs(&start, &end).unwrap();
    for (e, st) in end.iter().zip(&start) {
        let got = medseg_transforms::apply_homography(&c, e[0], e[1]);
        assert!((got[0] - st[0]).abs() < 1e-9 && (got[1] - st[1]).abs() < 1e-9);
    }
    for (i, e) in end.iter().enumerate() {
        assert!(
            e[0] >= 0.0 && e[0] <= 39.0 && e[1] >= 0.0 && e[1] <= 29.0,
            "{i}: {e:?}"
        );
        // moved by at most distortion_scale * half the side
        assert!(
            (e[0] - start[i][0]).abs() <= 0.6 * 20.0 && (e[1] - start[i][1]).abs() <= 0.6 * 15.0
        );
    }
}

#[test]
fn perspective_identity_and_volumes() {
    let s0 = sample(1, &[4, 20, 22]);
    // distortion 0 is the identity and stays invertible
    let out = run(
        json!({"name": "RandomPerspective", "distortion_scale": 0.0, "p": 1.0}),
        s0.clone(),
        3,
    );
    assert_eq!(out.image.data, s0.image.data);
    assert_eq!(out.label, s0.label);
    assert!(medseg_transforms::invert_prediction(
        &out.history,
        ArrayD::zeros(IxDyn(&[2, 4, 20, 22]))
    )
    .is_ok());
    // a volume: every depth slice gets the same warp
    let spec = json!({"name": "RandomPerspective", "distortion_scale": 0.5, "p": 1.0});
    let out = run(spec.clone(), s0.clone(), 3);
    let rec = &out.history[0].params;
    assert_eq!(rec["invertible"], json!(false));
    let start: Corners = serde_json::from_value(rec["startpoints"].clone()).unwrap();
    let end: Corners = serde_json::from_value(rec["endpoints"].clone()).unwrap();
    for d in 0..4 {
        let slice = s0.image.data.slice(s![.., d, .., ..]).to_owned().into_dyn();
        let want = medseg_transforms::perspective_warp(
            slice,
            &start,
            &end,
            medseg_transforms::Interp::Linear,
            rec["image_fill"].as_f64().unwrap() as f32,
        )
        .unwrap();
        let got = out
            .image
            .data
            .slice(s![.., d, .., ..])
            .to_owned()
            .into_dyn();
        // the same taps; the volume path may multiply its weights in
        // another order at the last slice
        let err = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "slice {d}: {err}");
    }
    assert!(
        build_err(json!({"name": "RandomPerspective", "distortion_scale": 1.5}))
            .contains("distortion_scale")
    );
}

#[test]
fn moire_follows_its_closed_form() {
    // sum of two identical gratings along W at 1/4 cycle per pixel:
    // m = cos(pi x / 2) = 1, 0, -1, 0, ...; additive with amplitude 0.1 of
    // the window width 400 adds 40 m
    let s0 = sample(1, &[6, 8]);
    let spec = json!({"name": "Moire", "p": 1.0, "frequency_range": [0.25, 0.25],
        "angle_range": [0, 0], "mis_rotation_range": [0, 0], "detune_range": [1, 1],
        "amplitude_range": [0.1, 0.1], "combine": "sum", "mode": "additive",
        "random_phase": false, "window": [-100.0, 300.0]});
    let out = run(spec, s0.clone(), 1);
    for ((idx, v), x0) in out.image.data.indexed_iter().zip(s0.image.data.iter()) {
        let x = idx[2];
        let m = [1.0, 0.0, -1.0, 0.0][x % 4];
        assert!(
            (v - (x0 + 40.0 * m)).abs() < 1e-3,
            "{idx:?}: {v} vs {}",
            x0 + 40.0 * m
        );
    }
    // product of two mis-rotated gratings, multiplicative: checked pixel by
    // pixel against the formula written out here
    let spec = json!({"name": "Moire", "p": 1.0, "frequency_range": [0.4, 0.4],
        "angle_range": [30, 30], "mis_rotation_range": [3, 3], "detune_range": [1.02, 1.02],
        "amplitude_range": [0.2, 0.2], "combine": "product", "mode": "multiplicative",
        "random_phase": false, "window": [-100.0, 300.0]});
    let out = run(spec, s0.clone(), 1);
    let (a1, a2) = (30f64.to_radians(), 33f64.to_radians());
    let (f1, f2) = (0.4, 0.4 * 1.02);
    let tau = 2.0 * std::f64::consts::PI;
    for ((idx, v), x0) in out.image.data.indexed_iter().zip(s0.image.data.iter()) {
        let (y, x) = (idx[1] as f64, idx[2] as f64);
        let m = (tau * f1 * (x * a1.cos() + y * a1.sin())).cos()
            * (tau * f2 * (x * a2.cos() + y * a2.sin())).cos();
        let want = -100.0 + (*x0 as f64 + 100.0) * (1.0 + 0.2 * m);
        assert!((*v as f64 - want).abs() < 1e-3, "{idx:?}: {v} vs {want}");
    }
    // the product beats: cos a cos b = (cos(a - b) + cos(a + b)) / 2, so
    // along W two gratings of 0.45 and 0.40 cycles per pixel carry a
    // component at the difference, 0.05 cycles per pixel
    let p = MoireParams {
        frequency: 0.45,
        angle_deg: 0.0,
        frequency2: 0.40,
        angle2_deg: 0.0,
        phase: 0.0,
        phase2: 0.0,
        combine: MoireCombine::Product,
    };
    let m = moire_pattern(1, 200, &p);
    let proj = |f: f64| {
        m.iter()
            .enumerate()
            .map(|(x, v)| *v as f64 * (tau * f * x as f64).cos())
            .sum::<f64>()
            / 200.0
    };
    assert!((proj(0.05) - 0.25).abs() < 0.02, "{}", proj(0.05));
    assert!(proj(0.13).abs() < 0.05);
    assert!(
        build_err(json!({"name": "Moire", "frequency_range": [0.2, 0.7]}))
            .contains("frequency_range")
    );
    assert!(build_err(json!({"name": "Moire", "mode": "screen"})).contains("screen"));
}

#[test]
fn colour_cast_follows_its_closed_form() {
    // a constant 0.5 grey picture in the window [0, 1], gamma 2 (0.25),
    // gain 2 and offset 0.1 (0.6), vignetting 0.5: 0.6 at the centre, 0.3 in
    // the corners, 0.6 (1 - 0.5 r^2 / r_max^2) between
    let g = Geometry::identity();
    let img = ArrayD::from_elem(IxDyn(&[1, 5, 7]), 0.5f32);
    let s0 = Sample::new("c", Image::new(img, g).unwrap());
    let spec = json!({"name": "ScreenColorCast", "p": 1.0, "gain_range": [2, 2],
        "offset_range": [0.1, 0.1], "gamma_range": [2, 2], "vignetting_range": [0.5, 0.5],
        "window": [0.0, 1.0]});
    let out = run(spec, s0, 1);
    let rmax2: f64 = 2.0 * 2.0 + 3.0 * 3.0;
    for ((_, y, x), v) in out
        .image
        .data
        .view()
        .into_dimensionality::<ndarray::Ix3>()
        .unwrap()
        .indexed_iter()
    {
        let r2 = (y as f64 - 2.0).powi(2) + (x as f64 - 3.0).powi(2);
        let want = 0.6 * (1.0 - 0.5 * r2 / rmax2);
        assert!((*v as f64 - want).abs() < 1e-6, "({y}, {x}): {v} vs {want}");
    }
    assert!((out.image.data[[0, 2, 3]] - 0.6).abs() < 1e-6);
    assert!((out.image.data[[0, 0, 0]] - 0.3).abs() < 1e-6);
    // RGB: one gain per channel gives a colour cast
    let rgb = Sample::new(
        "c",
        Image::new(ArrayD::from_elem(IxDyn(&[3, 4, 4]), 0.5f32), g).unwrap(),
    );
    let out = run(
        json!({"name": "ScreenColorCast", "p": 1.0, "gain_range": [0.5, 1.5],
               "offset_range": [0, 0], "gamma_range": [1, 1], "vignetting_range": [0, 0],
               "window": [0.0, 1.0]}),
        rgb,
        2,
    );
    let gains: Vec<f64> = serde_json::from_value(out.history[0].params["gain"].clone()).unwrap();
    for (c, g) in gains.iter().enumerate() {
        let want = (0.5 * g).min(1.0) as f32;
        assert!(out
            .image
            .data
            .slice(s![c, .., ..])
            .iter()
            .all(|v| (v - want).abs() < 1e-6));
    }
    assert!(gains[0] != gains[1] && gains[1] != gains[2]);
    assert!(
        build_err(json!({"name": "ScreenColorCast", "vignetting_range": [0, 2]}))
            .contains("vignetting_range")
    );
    assert!(build_err(json!({"name": "ScreenColorCast", "window": [1.0, 1.0]})).contains("window"));
}

#[test]
fn jpeg_quality_keeps_the_window_and_loses_detail() {
    let s0 = sample(1, &[24, 32]);
    let hi = run(
        json!({"name": "JpegQuality", "quality_range": [100, 100], "p": 1.0, "window": [-100.0, 300.0]}),
        s0.clone(),
        1,
    );
    let lo = run(
        json!({"name": "JpegQuality", "quality_range": [5, 5], "p": 1.0, "window": [-100.0, 300.0]}),
        s0.clone(),
        1,
    );
    let err = |a: &Sample| {
        a.image
            .data
            .iter()
            .zip(s0.image.data.iter())
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
            / a.image.data.len() as f64
    };
    // quality 100 keeps values within about a level (400 / 255 per level)
    assert!(err(&hi) < 400.0 / 255.0, "{}", err(&hi));
    assert!(err(&lo) > 3.0 * err(&hi), "{} vs {}", err(&lo), err(&hi));
    // values stay on the 8-bit levels of the window
    for v in lo.image.data.iter() {
        let level = (v + 100.0) / 400.0 * 255.0;
        assert!((level - level.round()).abs() < 1e-2 && (-0.01..=255.01).contains(&level));
    }
    assert!(
        build_err(json!({"name": "JpegQuality", "quality_range": [0, 50]}))
            .contains("quality_range")
    );
    // volumes are coded slice by slice
    let v = sample(1, &[2, 16, 16]);
    let out = run(
        json!({"name": "JpegQuality", "quality_range": [20, 20], "p": 1.0}),
        v.clone(),
        1,
    );
    let w: [f32; 2] = serde_json::from_value(out.history[0].params["window"].clone()).unwrap();
    for d in 0..2 {
        let slice = v.image.data.slice(s![.., d, .., ..]).to_owned().into_dyn();
        let s2 = Sample::new("s", Image::new(slice, Geometry::identity()).unwrap());
        let o2 = run(
            json!({"name": "JpegQuality", "quality_range": [20, 20], "p": 1.0, "window": w}),
            s2,
            1,
        );
        assert_eq!(
            out.image
                .data
                .slice(s![.., d, .., ..])
                .to_owned()
                .into_dyn(),
            o2.image.data
        );
    }
}

#[test]
fn screen_photo_severity_zero_is_identity_and_severity_grows() {
    for shape in [vec![40, 48], vec![3, 32, 32]] {
        let s0 = sample(1, &shape);
        let out = run(
            json!({"name": "ScreenPhoto", "severity": 0.0}),
            s0.clone(),
            7,
        );
        assert_eq!(out.image.data, s0.image.data);
        assert_eq!(out.label, s0.label);
        let mut last = 0.0;
        for sev in [0.25, 0.5, 1.0] {
            let spec = json!({"name": "ScreenPhoto", "severity": sev});
            let a = run(spec.clone(), s0.clone(), 7);
            let b = run(spec.clone(), s0.clone(), 7);
            assert_eq!(a.image.data, b.image.data, "seeded");
            assert_eq!(a.label, b.label);
            assert_eq!(a.image.data.shape(), s0.image.data.shape());
            let names: Vec<&str> = a.history.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "RandomPerspective",
                    "ScreenColorCast",
                    "Moire",
                    "JpegQuality",
                    "GaussianNoise",
                    "ScreenPhoto"
                ]
            );
            // labels only move with the perspective: same classes, and
            // identical to the perspective alone with the recorded corners
            let l = &a.label.as_ref().unwrap().data;
            assert!(l.iter().all(|v| [0, 1, 2].contains(v)));
            let rec = &a.history[0].params;
            let start: Corners = serde_json::from_value(rec["startpoints"].clone()).unwrap();
            let end: Corners = serde_json::from_value(rec["endpoints"].clone()).unwrap();
            let lab0 = s0.label.as_ref().unwrap().data.mapv(|v| v as f32);
            let want = medseg_transforms::perspective_warp(
                lab0,
                &start,
                &end,
                medseg_transforms::Interp::Nearest,
                0.0,
            )
            .unwrap();
            assert_eq!(l.mapv(|v| v as f32), want);
            // mean absolute change, averaged over three seeds, grows with severity
            let mut change = 0.0;
            for seed in 0..3 {
                let o = run(spec.clone(), s0.clone(), seed);
                change += o
                    .image
                    .data
                    .iter()
                    .zip(s0.image.data.iter())
                    .map(|(x, y)| (x - y).abs() as f64)
                    .sum::<f64>()
                    / s0.image.data.len() as f64;
            }
            assert!(change > last, "severity {sev}: {change} <= {last}");
            last = change;
        }
    }
    assert!(build_err(json!({"name": "ScreenPhoto", "severity": 1.5})).contains("severity"));
    assert!(build_err(json!({"name": "ScreenPhoto"})).contains("severity"));
}
