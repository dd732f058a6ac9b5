//! Mutation fuzzing of the parsers that take untrusted files, on stable
//! Rust (no cargo-fuzz, which needs a nightly toolchain).
//!
//! Each [`Target`] feeds bytes to one parser the way users' files reach it:
//! NIfTI (`.nii` and `.nii.gz`, through [`medseg_io::nifti::read_nifti_with`]
//! and the label reader, under a low reading limit so that an input
//! declaring a huge volume is refused rather than allocated), rasters
//! (PNG, TIFF, JPEG), CSV manifests, experiment configs (TOML) and PyMIC
//! configs (INI). Inputs come from a corpus of the repository's fixtures
//! ([`corpus`]), each mutated by a few seeded byte-level operations
//! ([`mutate`]: bit flips, interesting integers written over header
//! fields in either byte order, insertions, deletions, duplications and
//! splices with another corpus file). A panic is a finding; a parser's
//! `Err` is the expected answer to a bad file.
//!
//! `cargo xtask fuzz` runs the targets for a time budget and saves each
//! finding under `fuzz/crashes/<target>/`; findings that were fixed are
//! kept under `fuzz/regressions/<target>/` and replayed by the tests.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The reading limit of the NIfTI targets: 64 MiB of decoded voxels.
pub const NIFTI_LIMIT: u64 = 64 << 20;

/// A parser under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// NIfTI images and label maps (`.nii`, `.nii.gz`).
    Nifti,
    /// PNG, TIFF and JPEG images and label maps.
    Raster,
    /// CSV manifests.
    Manifest,
    /// Experiment configs (TOML).
    Config,
    /// PyMIC configs (INI), through the importer.
    Pymic,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 5] = [
        Target::Nifti,
        Target::Raster,
        Target::Manifest,
        Target::Config,
        Target::Pymic,
    ];

    /// The target's name (`nifti`, `raster`, `manifest`, `config`, `pymic`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Nifti => "nifti",
            Target::Raster => "raster",
            Target::Manifest => "manifest",
            Target::Config => "config",
            Target::Pymic => "pymic",
        }
    }

    /// The target named `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Corpus files of the target, by extension, under the repository
    /// root `root`.
    fn corpus_sources(self, root: &Path) -> Vec<(PathBuf, &'static [&'static str])> {
        let io = root.join("crates/medseg-io/tests/fixtures");
        match self {
            Target::Nifti => vec![(io, &["nii", "gz"])],
            Target::Raster => vec![(io, &["png", "tif", "tiff", "jpg", "jpeg"])],
            Target::Manifest => vec![(root.join("fuzz/corpus/manifest"), &["csv"])],
            Target::Config => vec![
                (root.join("configs/supervised"), &["toml"]),
                (root.join("configs/semi"), &["toml"]),
                (root.join("configs/weak"), &["toml"]),
                (root.join("configs/noisy"), &["toml"]),
                (root.join("configs/selfsup"), &["toml"]),
            ],
            Target::Pymic => vec![(
                root.join("crates/medseg-config/tests/fixtures/pymic"),
                &["cfg", "ini"],
            )],
        }
    }
}

/// One corpus entry: the bytes and the file name they came from (its
/// extension selects the parser of the raster and NIfTI targets).
#[derive(Debug, Clone)]
pub struct Input {
    /// File name (extension kept).
    pub name: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// The corpus of `target`: the repository's fixture files for it, sorted
/// by name.
///
/// # Errors
/// A corpus folder that cannot be read, or an empty corpus.
pub fn corpus(target: Target, root: &Path) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for (dir, exts) in target.corpus_sources(root) {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            if p.is_file() && exts.contains(&ext) {
                let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                out.push(Input { name, bytes });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.is_empty() {
        return Err(format!("no corpus files for target {}", target.name()));
    }
    Ok(out)
}

/// Integers that break parsers: zero, one, minus one, the limits of 8-, 16-
/// and 32-bit types, powers of two around them.
const INTERESTING: [i64; 14] = [
    0,
    1,
    -1,
    2,
    7,
    127,
    128,
    255,
    256,
    32767,
    -32768,
    65535,
    i32::MAX as i64,
    i32::MIN as i64,
];

/// Applies 1 to 6 random byte-level mutations to `input`, with `other`
/// (another corpus entry) for splices.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = input.to_vec();
    let n = rng.random_range(1..=6);
    for _ in 0..n {
        let len = b.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = rng.random();
            }
            2 | 3 if len >= 4 => {
                // an interesting integer over a (header) field
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)].min(len);
                let i = rng.random_range(0..=len - width);
                let bytes = if rng.random() {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let src = if bytes[0] == 0 && v != 0 {
                    &bytes[8 - width..]
                } else {
                    &bytes[..width]
                };
                b[i..i + width].copy_from_slice(src);
            }
            4 => {
                let i = rng.random_range(0..=len);
                let k = rng.random_range(1..=16);
                let ins: Vec<u8> = (0..k).map(|_| rng.random()).collect();
                b.splice(i..i, ins);
            }
            5 if len > 1 => {
                let i = rng.random_range(0..len);
                let k = rng.random_range(1..=(len - i).min(256));
                b.drain(i..i + k);
            }
            6 if len > 1 => {
                let i = rng.random_range(0..len);
                let k = rng.random_range(1..=(len - i).min(64));
                let dup = b[i..i + k].to_vec();
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, dup);
            }
            7 if !other.is_empty() => {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    b
}

/// Runs `target`'s parser on `bytes` (named `name`) in the scratch folder
/// `scratch`; `Err` carries a panic's message (a finding). The parser's own
/// errors are expected answers and count as `Ok`.
pub fn run_one(target: Target, name: &str, bytes: &[u8], scratch: &Path) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| exercise(target, name, bytes, scratch)));
    match outcome {
        Ok(()) => Ok(()),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    }
}

fn exercise(target: Target, name: &str, bytes: &[u8], scratch: &Path) {
    match target {
        Target::Nifti => {
            let ext = if name.ends_with(".gz") {
                "nii.gz"
            } else {
                "nii"
            };
            let p = scratch.join(format!("input.{ext}"));
            std::fs::write(&p, bytes).expect("writing the scratch file");
            let limits = medseg_io::nifti::ReadLimits {
                max_bytes: NIFTI_LIMIT,
            };
            let _ = medseg_io::nifti::read_nifti_with(&p, &limits);
            let _ = medseg_io::nifti::read_nifti_label_with(&p, &limits);
            let _ = medseg_io::nifti::read_nifti_header(&p);
        }
        Target::Raster => {
            let ext = Path::new(name)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("png");
            let p = scratch.join(format!("input.{ext}"));
            std::fs::write(&p, bytes).expect("writing the scratch file");
            let _ = medseg_io::raster::read_raster(&p);
            let _ = medseg_io::raster::read_raster_label(&p);
            let _ = medseg_io::raster::raster_sample_type(&p);
        }
        Target::Manifest => {
            let p = scratch.join("input.csv");
            std::fs::write(&p, bytes).expect("writing the scratch file");
            let _ = medseg_io::Manifest::read_unchecked(&p, Some(scratch));
        }
        Target::Config => {
            let text = String::from_utf8_lossy(bytes);
            let _ = medseg_config::ExperimentConfig::from_toml_str(&text);
        }
        Target::Pymic => {
            let text = String::from_utf8_lossy(bytes);
            let opts = medseg_config::PymicOptions {
                working_dir: scratch.to_path_buf(),
                allow_unmapped: true,
            };
            let _ = medseg_config::import_pymic(&text, &opts);
        }
    }
}

/// What a fuzzing run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs run.
    pub executions: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Findings: the input's corpus name, its bytes and the panic message.
    pub findings: Vec<(String, Vec<u8>, String)>,
}

/// Fuzzes `target` with `seed` for `executions` inputs or `seconds`,
/// whichever ends first; the corpus entries themselves run first.
///
/// # Errors
/// A corpus that cannot be read, or a scratch folder that cannot be made.
pub fn fuzz(
    target: Target,
    root: &Path,
    seed: u64,
    executions: u64,
    seconds: f64,
) -> Result<Report, String> {
    let corpus = corpus(target, root)?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t0 = std::time::Instant::now();
    let mut report = Report::default();
    // quiet panics while fuzzing: they are collected, not printed
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for c in &corpus {
        if let Err(msg) = run_one(target, &c.name, &c.bytes, scratch.path()) {
            report.findings.push((c.name.clone(), c.bytes.clone(), msg));
        }
        report.executions += 1;
    }
    while report.executions < executions && t0.elapsed().as_secs_f64() < seconds {
        let a = &corpus[rng.random_range(0..corpus.len())];
        let b = &corpus[rng.random_range(0..corpus.len())];
        let input = mutate(&a.bytes, &b.bytes, &mut rng);
        if let Err(msg) = run_one(target, &a.name, &input, scratch.path()) {
            report.findings.push((a.name.clone(), input, msg));
        }
        report.executions += 1;
    }
    std::panic::set_hook(hook);
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The repository root (two folders above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
