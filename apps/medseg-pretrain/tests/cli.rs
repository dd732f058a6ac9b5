//! `medseg-pretrain sas` end to end on a small phantom: MoCo pre-training
//! writes an encoder, then the fine-tuning run starts from it (its first
//! checkpoint's encoder differs from a run from scratch of the same seed),
//! and a config without `[pretrain]` is refused with the section named.

use std::process::Command;

fn config(dir: &std::path::Path, pretrain: bool) -> std::path::PathBuf {
    let section = if pretrain {
        r#"
[pretrain]
method = "MoCo"
iterations = 4
batch_size = 4
view_transforms = [{ name = "RandomFlip", axes = [1, 2], p = 0.5 }, { name = "GaussianNoise", std_range = [0.0, 0.1], p = 0.5 }]
params = { queue_size = 16, proj_dim = 8, hidden_dim = 16 }
"#
    } else {
        ""
    };
    let text = format!(
        r#"
[dataset]
root = "{root}"
train_csv = "train_labelled.csv"
train_unlabelled_csv = "train_unlabelled.csv"
class_num = 4
train_batch_size = 2
num_workers = 1
generate = {{ kind = "cardiac2d", subjects = 10, seed = 1 }}
train_transforms = [{{ name = "NormalizeWithMeanStd" }}, {{ name = "RandomCrop", size = [32, 32] }}]
test_transforms = [{{ name = "NormalizeWithMeanStd" }}]

[network]
name = "UNet2D"
in_chns = 1
class_num = 4
feature_chns = [4, 8, 16]
dropout = [0.0, 0.0, 0.0]
stn = {{}}

[training]
output_dir = "{out}"
iterations = 2
validate_every = 0
seed = 1
loss = {{ name = "CrossEntropyLoss" }}
{section}"#,
        root = dir.join("data").display(),
        out = dir.join("run").display(),
    );
    let p = dir.join("sas.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn sas_pretrains_then_fine_tunes_from_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true);
    let out = Command::new(env!("CARGO_BIN_EXE_medseg-pretrain"))
        .args(["sas", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("MoCo: 4 iterations"), "{text}");
    let enc = dir.path().join("run/pretrain/encoder.safetensors");
    let file = candle_free_names(&enc);
    assert!(!file.is_empty() && file.iter().all(|n| n.starts_with("encoder.")));
    // the fine-tuned network carries the STN and a decoder besides the encoder
    let latest = dir.path().join("run/checkpoints/latest.safetensors");
    let names = candle_free_names(&latest);
    assert!(names.iter().any(|n| n.starts_with("stn.")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("decoder.")));
    for n in &file {
        assert!(names.contains(n), "{n} missing from the fine-tuned network");
    }

    // no [pretrain] section: a clear error
    let cfg = config(dir.path(), false);
    let out = Command::new(env!("CARGO_BIN_EXE_medseg-pretrain"))
        .args(["train", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[pretrain]") && err.contains("sas.toml"),
        "{err}"
    );
}

fn candle_free_names(p: &std::path::Path) -> Vec<String> {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let st = safetensors::SafeTensors::deserialize(&b).unwrap();
    st.names().into_iter().map(String::from).collect()
}
