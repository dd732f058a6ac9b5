#![allow(dead_code)] // each example uses part of it
//! What the extending examples share: a tiny phantom data set and a small
//! configuration that trains on it for a few iterations. Not an example of
//! its own (`cargo run --example` lists only the others).

use medseg_config::ExperimentConfig;
use medseg_synth::{write_phantom_dataset, PhantomConfig};
use std::path::Path;

/// Writes a tiny 2D cardiac phantom (6 subjects of 3 slices of 48 x 48)
/// into `root` with its manifests.
pub fn tiny_phantom(root: &Path) -> anyhow::Result<()> {
    let mut pc = PhantomConfig::cardiac2d();
    pc.slices = 3;
    pc.height = 48;
    pc.width = 48;
    write_phantom_dataset(&pc, true, 6, 7, root)?;
    Ok(())
}

/// A configuration training `network` with `loss` on the phantom in
/// `root` for `iterations` steps, writing to `out`; `extra` is appended
/// (e.g. a `[semi]` section).
pub fn tiny_config(
    root: &Path,
    out: &Path,
    network: &str,
    loss: &str,
    transforms: &str,
    extra: &str,
) -> anyhow::Result<ExperimentConfig> {
    let text = format!(
        r#"
[dataset]
root = "{root}"
train_csv = "train_labelled.csv"
train_unlabelled_csv = "train_unlabelled.csv"
valid_csv = "valid.csv"
class_num = 4
train_batch_size = 2
train_batch_size_unlab = 2
num_workers = 1
train_transforms = [{{ name = "NormalizeWithMeanStd" }}, {{ name = "RandomCrop", size = [32, 32] }}{transforms}]
test_transforms = [{{ name = "NormalizeWithMeanStd" }}]

[network]
{network}

[training]
output_dir = "{out}"
iterations = 4
validate_every = 4
seed = 2
lr = 0.005
loss = {loss}
{extra}
"#,
        root = root.display(),
        out = out.display()
    );
    Ok(ExperimentConfig::from_toml_str(&text)?)
}

/// The built-in 2D UNet, small.
pub const UNET: &str = r#"name = "UNet2D"
feature_chns = [4, 8, 16, 32]
dropout = [0.0, 0.0, 0.0, 0.0]"#;

/// The built-in 0.5 Dice + 0.5 CE loss.
pub const DICE_CE: &str = r#"{ name = "CombinedLoss", terms = [{ loss = "DiceLoss", weight = 0.5 }, { loss = "CrossEntropyLoss", weight = 0.5 }] }"#;
