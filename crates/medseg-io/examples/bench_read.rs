//! Times reading a 256x256x180 int16 `.nii.gz` (the `cargo xtask bench io`
//! Rust side). Makes the file first when it does not exist: a CT-like phantom
//! (air, an elliptical body of noisy soft tissue, a bony ring) written by
//! medseg-io with gzip level 1.
//!
//! `cargo run --release -p medseg-io --example bench_read -- FILE [REPS]`
//!
//! Prints one line: `MEDSEG_BENCH_IO {"file":..., "reps":..., "median_s":..., "times_s":[...]}`.
//!
//! `bench_read FILE --peak [--shape D,H,W]` instead makes the file (of that
//! shape, default 180,256,256) if absent, reads it once and prints
//! `MEDSEG_PEAK_KB <n>`: the process's peak resident memory (VmHWM).

use medseg_core::{Geometry, Image};
use medseg_io::{read_image, write_image, DataType};
use ndarray::{ArrayD, IxDyn};
use std::path::Path;
use std::time::Instant;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A CT-like int16 phantom of shape `[1, d, h, w]`.
fn phantom(d: usize, h: usize, w: usize) -> Image {
    let data = ArrayD::from_shape_fn(IxDyn(&[1, d, h, w]), |ix| {
        let (z, y, x) = (ix[1] as f64, ix[2] as f64, ix[3] as f64);
        let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
        let r = ((x - cx) / (0.43 * w as f64)).powi(2) + ((y - cy) / (0.33 * h as f64)).powi(2);
        let noise = (splitmix((ix[1] * h * w + ix[2] * w + ix[3]) as u64) % 41) as f64 - 20.0;
        let v = if r > 1.0 {
            -1000.0 + noise * 0.2
        } else if r > 0.8 {
            700.0 + 60.0 * (z / 30.0).sin() + noise
        } else {
            40.0 + 30.0 * (x / 20.0).sin() * (y / 25.0).cos() + noise
        };
        v.round() as f32
    });
    Image::new(data, Geometry::with_spacing([1.5, 0.8, 0.8])).expect("valid shape")
}

/// The peak resident memory of this process, in KiB (Linux).
fn peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args
        .first()
        .ok_or("usage: bench_read FILE [REPS] | FILE --peak [--shape D,H,W]")?;
    let peak = args.iter().any(|a| a == "--peak");
    let shape: Vec<usize> = match args.iter().position(|a| a == "--shape") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--shape needs D,H,W")?
            .split(',')
            .map(|v| v.parse())
            .collect::<Result<_, _>>()?,
        None => vec![180, 256, 256],
    };
    let path = Path::new(file);
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        eprintln!("writing {}", path.display());
        write_image(path, &phantom(shape[0], shape[1], shape[2]), DataType::I16)?;
        if peak {
            return Err("made the file; run again to measure (a fresh process)".into());
        }
    }
    if peak {
        let before = peak_kb();
        let im = read_image(path)?;
        std::hint::black_box(&im);
        println!(
            "MEDSEG_PEAK_KB {} {} {:?}",
            peak_kb(),
            before,
            im.data.shape()
        );
        return Ok(());
    }
    let reps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(15);
    // one warm-up read (page cache, allocator)
    let first = read_image(path)?;
    assert_eq!(first.data.shape(), &[1, 180, 256, 256]);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let im = read_image(path)?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(im);
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let times_json: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
    println!(
        "MEDSEG_BENCH_IO {{\"file\":{:?},\"reps\":{reps},\"median_s\":{median:.6},\"times_s\":[{}]}}",
        path.display().to_string(),
        times_json.join(",")
    );
    Ok(())
}
