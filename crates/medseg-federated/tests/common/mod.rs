//! Shared by the integration tests: a tiny phantom federation and its
//! learner config.
#![allow(dead_code)]

use medseg_synth::federation::{write_federation, FederationSpec};
use std::path::Path;

/// Two sites (liver, spleen) of 3 subjects with 2 slices of 32 x 32.
pub fn tiny_federation(root: &Path) {
    let mut spec = FederationSpec::abdomen_four_sites(3, 5);
    spec.phantom.slices = 2;
    spec.phantom.set_in_plane_size(32);
    spec.sites.truncate(2);
    spec.external_subjects = 1;
    write_federation(&spec, root).unwrap();
}

pub const BASE: &str = r#"
[dataset]
root = "ROOT"
train_csv = "pooled_train.csv"
valid_csv = "pooled_valid.csv"
class_num = 5
in_channels = 1
train_batch_size = 2
num_workers = 0
train_transforms = [{ name = "NormalizeWithMeanStd" }]
test_transforms = [{ name = "NormalizeWithMeanStd" }]

[network]
name = "UNet2D"
dimension = 2
in_chns = 1
class_num = 5
feature_chns = [4, 8, 8, 16, 16]
dropout = [0.0, 0.0, 0.0, 0.0, 0.0]

[training]
output_dir = "unused"
iterations = 10
validate_every = 5
seed = 1
optimizer = "adam"
lr = 0.01
loss = LOSS
"#;

pub const PARTIAL_LOSS: &str = r#"{ name = "CombinedLoss", terms = [
    { loss = "MarginalLoss", weight = 0.5 },
    { loss = "ExclusionLoss", weight = 0.5 },
] }"#;

/// Writes the tiny federation under `dir/data` (once) and `dir/base.toml`,
/// the learner config with the partial-label losses.
pub fn write_base(dir: &Path) {
    let data = dir.join("data");
    if !data.join("pooled_train.csv").exists() {
        tiny_federation(&data);
    }
    let base = BASE
        .replace("ROOT", &data.display().to_string())
        .replace("LOSS", PARTIAL_LOSS);
    std::fs::write(dir.join("base.toml"), base).unwrap();
}
