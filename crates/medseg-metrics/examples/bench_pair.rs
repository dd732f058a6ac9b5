//! Times HD95 + ASSD on a synthetic 3D pair (the Rust side of
//! `cargo xtask bench metrics`).
//!
//! ```text
//! cargo run --release -p medseg-metrics --example bench_pair -- [--shape D,H,W] [--repeats N] [--write DIR]
//! ```
//!
//! Prints one JSON object: shape, spacing, per-repeat seconds, median and the
//! values. With `--write DIR` the pair is also written to `DIR/pred.u8` and
//! `DIR/gt.u8` (raw `u8`, C order) for the Python side.

use medseg_metrics::{
    surface_distances, AssdDefinition, Connectivity, Hd95Definition, MetricOptions,
};
use ndarray::Array3;
use std::time::Instant;

/// A smooth ellipsoid-like blob with a bumpy surface; `shift` moves it and
/// `phase` changes the bumps, so prediction and ground truth differ.
fn blob(shape: [usize; 3], spacing: [f64; 3], shift: [f64; 3], phase: f64) -> Array3<u16> {
    let c = [
        0.5 * shape[0] as f64,
        0.5 * shape[1] as f64,
        0.5 * shape[2] as f64,
    ];
    // radii in mm: about a third of the field of view
    let r = [
        0.33 * shape[0] as f64 * spacing[0],
        0.33 * shape[1] as f64 * spacing[1],
        0.3 * shape[2] as f64 * spacing[2],
    ];
    Array3::from_shape_fn(shape, |(d, h, w)| {
        let x = [
            (d as f64 - c[0] - shift[0]) * spacing[0],
            (h as f64 - c[1] - shift[1]) * spacing[1],
            (w as f64 - c[2] - shift[2]) * spacing[2],
        ];
        let rho = (x[0] / r[0]).powi(2) + (x[1] / r[1]).powi(2) + (x[2] / r[2]).powi(2);
        let theta = x[1].atan2(x[2]);
        let bump = 0.06 * (5.0 * theta + phase).sin() + 0.04 * (0.15 * x[0] + phase).cos();
        u16::from(rho.sqrt() <= 1.0 + bump)
    })
}

fn parse_args() -> Result<([usize; 3], usize, Option<std::path::PathBuf>), String> {
    let mut shape = [128, 256, 256];
    let mut repeats = 5;
    let mut write = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--shape" => {
                let v = val()?;
                let parts: Vec<usize> = v
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--shape {v}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                if parts.len() != 3 {
                    return Err(format!("--shape {v}: expected D,H,W"));
                }
                shape = [parts[0], parts[1], parts[2]];
            }
            "--repeats" => {
                let v = val()?;
                repeats = v.parse().map_err(|e| format!("--repeats {v}: {e}"))?;
            }
            "--write" => write = Some(val()?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((shape, repeats.max(1), write))
}

fn main() {
    let (shape, repeats, write) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bench_pair: {e}");
            std::process::exit(2);
        }
    };
    let spacing = [2.0, 0.8, 0.8];
    let gt = blob(shape, spacing, [0.0, 0.0, 0.0], 0.0);
    let pred = blob(shape, spacing, [1.0, 3.0, -2.0], 0.7);
    if let Some(dir) = write {
        for (name, a) in [("pred.u8", &pred), ("gt.u8", &gt)] {
            let bytes: Vec<u8> = a.iter().map(|&v| v as u8).collect();
            let path = dir.join(name);
            let tmp = dir.join(format!("{name}.tmp"));
            if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &path))
            {
                eprintln!("bench_pair: writing {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    let opts = MetricOptions::default();
    let mut times = Vec::new();
    let mut values = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..repeats {
        let t = Instant::now();
        let sd = match surface_distances(
            pred.view().into_dyn(),
            gt.view().into_dyn(),
            1,
            &spacing,
            Connectivity::Face,
        ) {
            Ok(sd) => sd,
            Err(e) => {
                eprintln!("bench_pair: {e}");
                std::process::exit(1);
            }
        };
        let e = &opts.distance_empty;
        let hd95_pooled = sd.percentile_hausdorff(95.0, Hd95Definition::Pooled, e);
        let hd95_max = sd.percentile_hausdorff(95.0, Hd95Definition::MaxOfDirected, e);
        let assd = sd.assd(AssdDefinition::PooledMean, e);
        times.push(t.elapsed().as_secs_f64());
        values = (hd95_pooled, hd95_max, assd, sd.hausdorff(e));
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "{{\"shape\":[{},{},{}],\"spacing\":[{},{},{}],\"threads\":{},\"times_s\":{:?},\"median_s\":{},\"hd95_pooled\":{},\"hd95_max_of_directed\":{},\"assd\":{},\"hd\":{}}}",
        shape[0], shape[1], shape[2], spacing[0], spacing[1], spacing[2],
        rayon::current_num_threads(), times, median, values.0, values.1, values.2, values.3
    );
}
