//! PyTorch checkpoints (`torch.save`, zip + pickle): PyMIC's trainer
//! checkpoint and a bare state dict, written by
//! tools/make_pymic_checkpoint.py with PyMIC 0.6.2's own UNet, load by name
//! and give PyMIC's eval-mode output to 1e-4; malformed files give errors
//! that say what is wrong.

mod common;

use candle_core::Device;
use common::{build, fixtures, load_io, max_abs_diff, read_json};
use medseg_nets::{import_pytorch, is_pytorch_checkpoint, load_network_with, NetError};
use serde_json::{json, Value};
use std::io::Write;

/// The network section PyMIC used, as a medseg network config.
fn config() -> Value {
    let mut c = read_json("pymic_unet2d_best.json");
    let m = c.as_object_mut().unwrap();
    assert_eq!(m.remove("net_type"), Some(json!("UNet")));
    m.insert("name".into(), json!("UNet"));
    c
}

fn check_output(net: &dyn medseg_nets::SegNetwork) {
    let io = load_io("pymic_unet2d_best");
    let out = net.forward_t(&io["input"], false).unwrap();
    let d = max_abs_diff(&out.logits, &io["eval"]);
    assert!(d < 1e-4, "logits differ from PyMIC's by {d}");
}

#[test]
fn pymic_trainer_checkpoint_predicts_as_pymic() {
    let path = fixtures().join("pymic_unet2d_best.pt");
    assert!(is_pytorch_checkpoint(&path));
    let (varmap, net) = build(&config());
    import_pytorch(&path, &varmap).unwrap();
    check_output(net.as_ref());
    // the same through the loader inference uses
    let (_, net) = load_network_with(&path, &Device::Cpu, Some(&config())).unwrap();
    check_output(net.as_ref());
}

#[test]
fn bare_state_dict_loads_too() {
    let path = fixtures().join("pymic_unet2d_state_dict.pt");
    let (varmap, net) = build(&config());
    import_pytorch(&path, &varmap).unwrap();
    check_output(net.as_ref());
}

#[test]
fn safetensors_checkpoints_are_not_taken_for_pytorch() {
    let path = fixtures().join("pymic_unet2d_best.io.safetensors");
    assert!(!is_pytorch_checkpoint(&path));
    // a header length whose first byte is 0x80, a pickle's first byte
    let path = fixtures().join("denseunet_tiny.weights.safetensors");
    assert_eq!(std::fs::read(&path).unwrap()[0], 0x80);
    assert!(!is_pytorch_checkpoint(&path));
}

fn message(e: NetError) -> String {
    e.to_string()
}

#[test]
fn pytorch_checkpoint_needs_a_network_config() {
    let path = fixtures().join("pymic_unet2d_best.pt");
    let e = load_network_with(&path, &Device::Cpu, None).err().unwrap();
    assert!(message(e).contains("carries no network configuration"));
}

#[test]
fn a_different_network_is_named_tensor_by_tensor() {
    let path = fixtures().join("pymic_unet2d_best.pt");
    let mut c = config();
    c["class_num"] = json!(3);
    let (varmap, _) = build(&c);
    let e = message(import_pytorch(&path, &varmap).unwrap_err());
    assert!(e.contains("mis-shaped tensors"), "{e}");
    assert!(e.contains("[2, 2, 1, 1] vs network [3, 2, 1, 1]"), "{e}");
    let mut c = config();
    c["feature_chns"] = json!([2, 4, 4, 8]);
    c["dropout"] = json!([0.0, 0.0, 0.0, 0.3]);
    let (varmap, _) = build(&c);
    let e = message(import_pytorch(&path, &varmap).unwrap_err());
    assert!(e.contains("unexpected tensors"), "{e}");
}

#[test]
fn unsupported_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (varmap, _) = build(&config());
    // the legacy (pre-1.6) format starts with a pickle protocol byte
    let legacy = dir.path().join("legacy.pt");
    std::fs::write(&legacy, [0x80, 0x02, 0x8a, 0x0a, 0x6c]).unwrap();
    let e = message(import_pytorch(&legacy, &varmap).unwrap_err());
    assert!(e.contains("legacy"), "{e}");
    // a zip archive without a pickle
    let nopkl = dir.path().join("nopkl.pt");
    {
        let f = std::fs::File::create(&nopkl).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file(
            "archive/readme.txt",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        z.write_all(b"hello").unwrap();
        z.finish().unwrap();
    }
    let e = message(import_pytorch(&nopkl, &varmap).unwrap_err());
    assert!(e.contains("expected one data.pkl"), "{e}");
    // a truncated checkpoint
    let bytes = std::fs::read(fixtures().join("pymic_unet2d_best.pt")).unwrap();
    let cut = dir.path().join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = message(import_pytorch(&cut, &varmap).unwrap_err());
    assert!(e.contains("zip"), "{e}");
    // a pickle of something else than a state dict
    let other = dir.path().join("other.pt");
    {
        let f = std::fs::File::create(&other).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file("archive/data.pkl", zip::write::SimpleFileOptions::default())
            .unwrap();
        // protocol 2: the integer 7, STOP
        z.write_all(&[0x80, 0x02, b'K', 7, b'.']).unwrap();
        z.finish().unwrap();
    }
    let e = message(import_pytorch(&other, &varmap).unwrap_err());
    assert!(e.contains("no tensors found"), "{e}");
}
