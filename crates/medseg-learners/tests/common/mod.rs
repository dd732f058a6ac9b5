//! The configuration the learner tests share: a small 2D UNet (features
//! 4-8-16-32, dropout on the two deepest levels), batches of 2, one worker,
//! no validation, lr 0.01, on a phantom in `root`.

#![allow(dead_code)] // each test file uses part of it

use medseg_config::ExperimentConfig;
use medseg_synth::{write_phantom_dataset, PhantomConfig};
use std::path::{Path, PathBuf};

/// A temporary folder with a 2D cardiac phantom of `subjects` subjects of 2
/// slices of `size` x `size` in `data/` (seed 3); returns the folder and the
/// data root.
pub fn phantom(subjects: usize, size: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut pc = PhantomConfig::cardiac2d();
    pc.slices = 2;
    pc.height = size;
    pc.width = size;
    write_phantom_dataset(&pc, true, subjects, 3, &root).unwrap();
    (dir, root)
}

/// What differs between the tests' configurations.
pub struct Tiny<'a> {
    /// `[dataset]` lines besides the shared ones (`train_csv = ...`, ...).
    pub dataset: &'a str,
    /// Training transforms, as TOML inline tables separated by commas.
    pub transforms: &'a str,
    /// `network.name`.
    pub net: &'a str,
    /// `training.loss`.
    pub loss: &'a str,
    /// `training.seed`.
    pub seed: u64,
    /// `training.iterations`.
    pub iterations: usize,
    /// The method section, e.g. `[semi]\nmethod = "CPS"`.
    pub section: &'a str,
}

impl Default for Tiny<'_> {
    /// `train.csv`, normalisation and 32 x 32 crops, a UNet2D, Dice + CE,
    /// seed 1, 2 iterations, no method section.
    fn default() -> Self {
        Tiny {
            dataset: "train_csv = \"train.csv\"",
            transforms: r#"{ name = "NormalizeWithMeanStd" }, { name = "RandomCrop", size = [32, 32] }"#,
            net: "UNet2D",
            loss: DICE_CE,
            seed: 1,
            iterations: 2,
            section: "",
        }
    }
}

/// 0.5 Dice + 0.5 CE.
pub const DICE_CE: &str = r#"{ name = "CombinedLoss", terms = [{ loss = "DiceLoss", weight = 0.5 }, { loss = "CrossEntropyLoss", weight = 0.5 }] }"#;

/// The configuration of `t` on the phantom in `root`, writing to `out`.
pub fn tiny(root: &Path, out: &Path, t: &Tiny) -> ExperimentConfig {
    let text = format!(
        r#"
[dataset]
root = "{root}"
{dataset}
class_num = 4
train_batch_size = 2
train_batch_size_unlab = 2
num_workers = 1
train_transforms = [{transforms}]
test_transforms = [{{ name = "NormalizeWithMeanStd" }}]

[network]
name = "{net}"
dimension = 2
in_chns = 1
class_num = 4
feature_chns = [4, 8, 16, 32]
dropout = [0.0, 0.0, 0.2, 0.3]

[training]
output_dir = "{out}"
iterations = {iterations}
validate_every = 0
seed = {seed}
lr = 0.01
loss = {loss}

{section}
"#,
        root = root.display(),
        out = out.display(),
        dataset = t.dataset,
        transforms = t.transforms,
        net = t.net,
        iterations = t.iterations,
        seed = t.seed,
        loss = t.loss,
        section = t.section,
    );
    ExperimentConfig::from_toml_str(&text).unwrap()
}
