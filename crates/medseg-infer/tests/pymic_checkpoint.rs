//! A model trained in PyMIC predicts in medseg without Python: PyMIC's
//! config goes through `import_pymic`, PyMIC's checkpoint (`torch.save`
//! of its trainer dict, from PyMIC 0.6.2's own UNet; see
//! tools/make_pymic_checkpoint.py) through the inference plan, and the
//! predicted labels are the argmax of PyMIC's logits on the same image,
//! written with PyMIC's `label_source`/`label_target` conversion.

use medseg_config::{import_pymic, ExperimentConfig, PymicOptions};
use medseg_core::{Geometry, Image};
use medseg_infer::{InferenceOverrides, InferencePlan};
use ndarray::{ArrayD, IxDyn};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../medseg-nets/tests/fixtures")
}

/// A PyMIC 0.6.2 config for the fixture's network, as a PyMIC user has it.
fn pymic_cfg(ckpt: &str) -> String {
    format!(
        "[dataset]
tensor_type = float
task_type = seg
train_dir = data
train_csv = config/train.csv
test_csv = config/test.csv
train_batch_size = 2
train_transform = [RandomCrop, LabelToProbability]
test_transform = None
patch_size = [32, 32]

[network]
net_type = UNet
dimension = 2
class_num = 2
in_chns = 1
feature_chns = [2, 4, 4, 8, 8]
dropout = [0.0, 0.0, 0.0, 0.3, 0.5]
up_mode = 2
multiscale_pred = False

[training]
gpus = [0]
loss_type = CrossEntropyLoss
optimizer = Adam
learning_rate = 1e-3
momentum = 0.9
weight_decay = 1e-5
ckpt_dir = model/unet
iter_max = 100
iter_valid = 100

[testing]
gpus = [0]
ckpt_mode = 2
ckpt_name = {ckpt}
output_dir = result/unet
sliding_window_enable = False
label_source = [0, 1]
label_target = [0, 255]
"
    )
}

#[test]
fn pymic_config_and_checkpoint_predict_as_pymic() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = fixtures().join("pymic_unet2d_best.pt");
    let imp = import_pymic(
        &pymic_cfg(&ckpt.to_string_lossy()),
        &PymicOptions {
            working_dir: dir.path().to_path_buf(),
            allow_unmapped: false,
        },
    )
    .unwrap();
    let cfg = ExperimentConfig::from_toml_str(&imp.toml).unwrap();
    assert_eq!(
        cfg.inference.checkpoints,
        vec![ckpt.to_string_lossy().to_string()]
    );
    assert!(!cfg.inference.gaussian);

    // PyMIC's input image, as a NIfTI file
    let io = candle_core::safetensors::load(
        fixtures().join("pymic_unet2d_best.io.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let x: Vec<f32> = io["input"].flatten_all().unwrap().to_vec1().unwrap();
    let image = Image::new(
        ArrayD::from_shape_vec(IxDyn(&[1, 32, 32]), x).unwrap(),
        Geometry::identity(),
    )
    .unwrap();
    let input = dir.path().join("case1.nii.gz");
    medseg_io::write_image(&input, &image, medseg_io::DataType::F32).unwrap();

    let out = dir.path().join("pred");
    let plan = InferencePlan::resolve(
        Some(&cfg),
        &InferenceOverrides {
            inputs: vec![input],
            output: Some(out.clone()),
            no_overlays: true,
            ..Default::default()
        },
    )
    .unwrap();
    plan.run(&mut |_, _| {}).unwrap();
    let pred = medseg_io::read_label(&out.join("case1.nii.gz")).unwrap();

    // PyMIC's labels: argmax over the class axis of its logits [1, 2, 32, 32]
    let logits: Vec<f32> = io["eval"].flatten_all().unwrap().to_vec1().unwrap();
    let (bg, fg) = logits.split_at(32 * 32);
    // class 1 is written as 255 (PyMIC's label_source/label_target)
    let want: Vec<u16> = bg
        .iter()
        .zip(fg)
        .map(|(b, f)| if f > b { 255 } else { 0 })
        .collect();
    let got: Vec<u16> = pred.data.iter().copied().collect();
    assert_eq!(got.len(), want.len());
    let fg_count = want.iter().filter(|&&w| w == 255).count();
    assert!(
        fg_count > 100 && fg_count < want.len() - 100,
        "degenerate fixture"
    );
    // pixels whose two logits are within 1e-3 (20 of 1024) may go either way
    let clear: Vec<usize> = (0..want.len())
        .filter(|&i| (fg[i] - bg[i]).abs() > 1e-3)
        .collect();
    assert!(clear.len() > 1000, "{} clear pixels", clear.len());
    let wrong = clear.iter().filter(|&&i| got[i] != want[i]).count();
    assert_eq!(wrong, 0, "{wrong} pixels differ from PyMIC's labels");
}
