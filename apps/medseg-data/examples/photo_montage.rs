//! Draws `docs/transforms_photo.png`: one abdominal CT-like phantom slice
//! through each screen-photo transform of medseg-transforms and through the
//! `ScreenPhoto` preset at severities 0.25, 0.5 and 1.
//!
//! ```text
//! cargo run -p medseg-data --example photo_montage -- docs/transforms_photo.png
//! ```
//!
//! Tiles, left to right. Row 1 (grey): the slice as drawn, `ColorJitter`
//! (brightness and contrast), `RandomPerspective` (label overlaid: it moves
//! with the image), `JpegQuality` (quality 8), `Moire`, `ScreenColorCast`.
//! Row 2: `ScreenPhoto` at severity 0.25, 0.5 and 1 (grey, label overlaid
//! on the last), then the slice as an RGB picture through `ColorJitter`
//! (saturation and hue), `ScreenColorCast` (a colour cast) and `ScreenPhoto`
//! at severity 1.

use medseg_core::{Image, Sample};
use medseg_synth::{generate_subject, PhantomConfig};
use medseg_transforms::build_pipeline;
use medseg_viz::{grey_to_rgb, montage, overlay_labels, save_png, RgbImage};
use ndarray::{Array2, ArrayD, Axis};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
use serde_json::json;

/// The CT window used for every tile (HU-like phantom values).
const WINDOW: (f32, f32) = (-200.0, 300.0);

fn plane(a: &ArrayD<f32>, c: usize) -> Array2<f32> {
    a.index_axis(Axis(0), c)
        .to_owned()
        .into_dimensionality()
        .expect("2D")
}

/// A grey tile (channel 0), with the label overlaid when asked.
fn grey_tile(s: &Sample, with_label: bool) -> RgbImage {
    let im = plane(&s.image.data, 0);
    let t = match (&s.label, with_label) {
        (Some(l), true) => {
            let lab: Array2<u16> = l
                .data
                .index_axis(Axis(0), 0)
                .to_owned()
                .into_dimensionality()
                .expect("2D");
            // overlay_labels windows by percentiles: clamp first so it shows
            // the same CT window as the other tiles
            let clamped = im.mapv(|v| v.clamp(WINDOW.0, WINDOW.1));
            overlay_labels(clamped.view(), lab.view(), 0.4, None)
        }
        _ => grey_to_rgb(im.view(), Some(WINDOW)),
    };
    t.upscale(2)
}

/// An RGB tile from a 3-channel image.
fn rgb_tile(s: &Sample) -> RgbImage {
    let (lo, hi) = WINDOW;
    let chans: Vec<Array2<f32>> = (0..3).map(|c| plane(&s.image.data, c)).collect();
    let (h, w) = chans[0].dim();
    let mut out = RgbImage::filled(w, h, [0, 0, 0]);
    for y in 0..h {
        for x in 0..w {
            let level =
                |c: &Array2<f32>| (((c[[y, x]] - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
            out.put(x, y, [level(&chans[0]), level(&chans[1]), level(&chans[2])]);
        }
    }
    out.upscale(2)
}

/// `s` through the one transform `spec`, drawing from `seed`.
fn apply(spec: serde_json::Value, s: &Sample, seed: u64) -> anyhow::Result<Sample> {
    let p = build_pipeline(std::slice::from_ref(&spec))?;
    Ok(p.apply(s.clone(), &mut ChaCha8Rng::seed_from_u64(seed))?)
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/transforms_photo.png".to_string());
    let cfg = PhantomConfig {
        slices: 3,
        ..PhantomConfig::abdomen2d()
    };
    let phantom = generate_subject(&cfg, 11, 0)?;
    let slice = phantom.slices_2d()?.swap_remove(1);
    let w = [WINDOW.0, WINDOW.1];
    let grey = Sample::new("slice", slice.image.clone()).with_label(slice.label.clone())?;
    let rgb_data = ndarray::concatenate(
        Axis(0),
        &[
            grey.image.data.view(),
            grey.image.data.view(),
            grey.image.data.view(),
        ],
    )?;
    let rgb = Sample::new("rgb", Image::new(rgb_data, grey.image.geometry)?)
        .with_label(slice.label.clone())?;
    let mut tiles = vec![
        grey_tile(&grey, false),
        grey_tile(
            &apply(
                json!({"name": "ColorJitter", "brightness": [1.3, 1.3], "contrast": [0.6, 0.6], "window": w}),
                &grey,
                1,
            )?,
            false,
        ),
        grey_tile(
            &apply(
                json!({"name": "RandomPerspective", "distortion_scale": 0.5, "p": 1.0}),
                &grey,
                3,
            )?,
            true,
        ),
        grey_tile(
            &apply(
                json!({"name": "JpegQuality", "quality_range": [8, 8], "p": 1.0, "window": w}),
                &grey,
                1,
            )?,
            false,
        ),
        grey_tile(
            &apply(
                json!({"name": "Moire", "p": 1.0, "amplitude_range": [0.25, 0.25], "frequency_range": [0.4, 0.4], "window": w}),
                &grey,
                2,
            )?,
            false,
        ),
        grey_tile(
            &apply(
                json!({"name": "ScreenColorCast", "p": 1.0, "gamma_range": [0.7, 0.7], "vignetting_range": [0.5, 0.5], "window": w}),
                &grey,
                1,
            )?,
            false,
        ),
    ];
    for (i, sev) in [0.25, 0.5, 1.0].into_iter().enumerate() {
        let s = apply(
            json!({"name": "ScreenPhoto", "severity": sev, "window": w}),
            &grey,
            5,
        )?;
        tiles.push(grey_tile(&s, i == 2));
    }
    tiles.push(rgb_tile(&apply(
        json!({"name": "ColorJitter", "saturation": [1.0, 1.0], "hue": [0.3, 0.3], "window": w}),
        &apply(
            json!({"name": "ScreenColorCast", "p": 1.0, "gain_range": [0.6, 1.2], "offset_range": [0, 0], "gamma_range": [1, 1], "vignetting_range": [0, 0], "window": w}),
            &rgb,
            4,
        )?,
        1,
    )?));
    tiles.push(rgb_tile(&apply(
        json!({"name": "ScreenColorCast", "p": 1.0, "gain_range": [0.7, 1.1], "vignetting_range": [0.4, 0.4], "window": w}),
        &rgb,
        4,
    )?));
    tiles.push(rgb_tile(&apply(
        json!({"name": "ScreenPhoto", "severity": 1.0, "window": w}),
        &rgb,
        5,
    )?));
    let m = montage(&tiles, 6, 4);
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    save_png(std::path::Path::new(&out), &m)?;
    println!("wrote {out} ({} x {})", m.width, m.height);
    Ok(())
}
