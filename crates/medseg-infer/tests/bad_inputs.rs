//! Inference on bad or unusual input: each case either works, with the
//! prediction on the input's grid and with the input's geometry exactly
//! (qform, sform and affine as nibabel reads the input, from
//! crates/medseg-io/tests/fixtures/reference.json), or fails with an error
//! that names the file and the fault.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use medseg_core::{Geometry, Image};
use medseg_infer::{InferenceOverrides, InferencePlan, SlidingWindow};
use medseg_io::nifti::{read_nifti, write_nifti};
use medseg_io::DataType;
use medseg_nets::{build_network, save_checkpoint, SegNetwork};
use ndarray::{ArrayD, IxDyn};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn io_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../medseg-io/tests/fixtures")
}

/// nibabel's record of an io fixture.
fn nibabel_record(name: &str) -> Value {
    let text = std::fs::read_to_string(io_fixtures().join("reference.json")).unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    r["nifti"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rec| rec["file"] == name)
        .unwrap_or_else(|| panic!("{name} is not in reference.json"))
        .clone()
}

/// A small random network saved as a medseg checkpoint.
fn checkpoint(dir: &Path, config: Value) -> PathBuf {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = build_network(&config, vb).unwrap();
    let path = dir.join("net.safetensors");
    save_checkpoint(&path, &vm, &net.config()).unwrap();
    path
}

/// A 2D UNet with four poolings (inputs must be multiples of 16).
fn unet2d() -> Value {
    json!({"name": "UNet2D", "in_chns": 1, "class_num": 3,
           "feature_chns": [2, 4, 4, 8, 8], "dropout": [0.0, 0.0, 0.0, 0.0, 0.0]})
}

fn overrides(ckpt: &Path, inputs: Vec<PathBuf>, out: &Path) -> InferenceOverrides {
    InferenceOverrides {
        checkpoints: vec![ckpt.to_path_buf()],
        inputs,
        output: Some(out.to_path_buf()),
        patch_size: None,
        tta: false,
        largest_component: None,
        save_probabilities: false,
        no_overlays: true,
        device: None,
    }
}

/// Runs inference on `inputs`; the written label files.
fn predict(ov: &InferenceOverrides) -> medseg_infer::Result<Vec<PathBuf>> {
    let plan = InferencePlan::resolve(None, ov)?;
    let mut written = Vec::new();
    plan.run(&mut |_, o| written.push(o.label.clone()))?;
    Ok(written)
}

/// Writes `data` `[C, ...spatial]` with `spacing` in `(D, H, W)` order.
fn write_image(path: &Path, data: ArrayD<f32>, spacing: [f64; 3]) {
    let mut g = Geometry::identity();
    g.spacing = spacing;
    let img = Image::new(data, g).unwrap();
    write_nifti(path, &img, DataType::F32, None).unwrap();
}

fn ramp(shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| (i % 97) as f32).collect()).unwrap()
}

#[test]
fn odd_small_oblique_and_anisotropic_images_keep_their_grid_and_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), unet2d());
    // nibabel fixtures: oblique 3D (SimpleITK), both forms, sform only,
    // qform only, a scaled int16 volume and a 2D label: all smaller than
    // the UNet's 16-pixel minimum and of odd sizes
    let names = [
        "sitk_oblique_i16.nii.gz",
        "both_forms_u16.nii",
        "sform_only_f64.nii",
        "qform_only_u8.nii",
        "scaled_int16.nii.gz",
        "be_int16.nii",
        "label_2d_u8.nii.gz",
    ];
    let inputs: Vec<PathBuf> = names.iter().map(|n| io_fixtures().join(n)).collect();
    let out = dir.path().join("out");
    let written = predict(&overrides(&ckpt, inputs.clone(), &out)).unwrap();
    assert_eq!(written.len(), names.len());
    for (name, label) in names.iter().zip(&written) {
        let rec = nibabel_record(name);
        let (input, _) = read_nifti(&io_fixtures().join(name)).unwrap();
        let (pred, header) = read_nifti(label).unwrap();
        assert_eq!(
            pred.spatial_shape(),
            input.spatial_shape(),
            "{name}: prediction grid"
        );
        assert_eq!(
            header.qform_code as i64,
            rec["qform_code"].as_i64().unwrap()
        );
        assert_eq!(
            header.sform_code as i64,
            rec["sform_code"].as_i64().unwrap()
        );
        let want = rec["affine"].as_array().unwrap();
        let got = header.affine();
        for i in 0..4 {
            for j in 0..4 {
                let w = want[i][j].as_f64().unwrap();
                assert!(
                    (got[i][j] - w).abs() < 1e-5,
                    "{name}: affine[{i}][{j}] {} vs nibabel's {w}",
                    got[i][j]
                );
            }
        }
        assert!(pred.data.iter().all(|v| (0.0..3.0).contains(v)));
    }
}

/// An accepted size goes through the network untouched; an odd size is
/// zero-padded evenly to the next accepted size and the probabilities are
/// exactly the padded image's, cropped back.
#[test]
fn padding_to_the_network_multiple_is_undone_exactly() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = build_network(&unet2d(), vb).unwrap();
    assert_eq!(net.input_size().multiple, vec![16, 16]);
    // an accepted size goes through unpadded: equal to the direct forward
    let x = ramp(&[1, 1, 32, 48]).mapv(|v| v / 97.0);
    let p = medseg_infer::network_probabilities(net.as_ref(), x.view(), &Device::Cpu).unwrap();
    let t = medseg_infer::array_to_tensor(x.view(), &Device::Cpu).unwrap();
    let direct = candle_nn::ops::softmax(&net.forward(&t).unwrap(), 1).unwrap();
    let direct = medseg_infer::tensor_to_array(&direct).unwrap();
    assert_eq!(p, direct);
    // an odd size: zero-padded evenly to 48x64, predicted, cropped back
    let odd = ramp(&[1, 1, 37, 53]).mapv(|v| v / 97.0);
    let p = medseg_infer::network_probabilities(net.as_ref(), odd.view(), &Device::Cpu).unwrap();
    assert_eq!(p.shape(), &[1, 3, 37, 53]);
    let mut padded = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 48, 64]));
    padded
        .slice_mut(ndarray::s![.., .., 5..42, 5..58])
        .assign(&odd.view().into_dimensionality::<ndarray::Ix4>().unwrap());
    let t = medseg_infer::array_to_tensor(padded.view(), &Device::Cpu).unwrap();
    let full = candle_nn::ops::softmax(&net.forward(&t).unwrap(), 1).unwrap();
    let full = medseg_infer::tensor_to_array(&full).unwrap();
    let crop = full
        .slice(ndarray::s![.., .., 5..42, 5..58])
        .to_owned()
        .into_dyn();
    assert_eq!(p, crop);
}

#[test]
fn images_smaller_than_the_window_and_volumes_for_a_2d_network_work() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), unet2d());
    let small = dir.path().join("small.nii.gz");
    write_image(&small, ramp(&[1, 13, 20]), [1.0, 0.5, 2.0]);
    let vol = dir.path().join("vol.nii.gz");
    write_image(&vol, ramp(&[1, 3, 21, 17]), [5.0, 0.7, 0.7]);
    let one = dir.path().join("one.nii.gz");
    write_image(&one, ramp(&[1, 1, 1]), [1.0, 1.0, 1.0]);
    let mut ov = overrides(
        &ckpt,
        vec![small.clone(), vol.clone(), one.clone()],
        dir.path(),
    );
    ov.output = Some(dir.path().join("out"));
    // a 64x64 window is larger than every image; a 3D window for 3D input
    // is given per axis, so use the whole image (no window) for the volume
    ov.patch_size = None;
    let written = predict(&ov).unwrap();
    for (input, label) in [&small, &vol, &one].iter().zip(&written) {
        let (a, _) = read_nifti(input).unwrap();
        let (b, _) = read_nifti(label).unwrap();
        assert_eq!(a.spatial_shape(), b.spatial_shape(), "{}", input.display());
        assert_eq!(a.spacing(), b.spacing(), "{}", input.display());
    }
    let mut ov = overrides(&ckpt, vec![small.clone()], &dir.path().join("out2"));
    ov.patch_size = Some(vec![64, 64]);
    let written = predict(&ov).unwrap();
    let (b, _) = read_nifti(&written[0]).unwrap();
    assert_eq!(b.spatial_shape(), &[13, 20]);
    // the window itself pads a too-small image and crops back
    let w = SlidingWindow {
        patch_size: Some(vec![64, 64]),
        ..Default::default()
    };
    let p = w
        .run(ramp(&[1, 13, 20]).view(), |b| {
            Ok(b.mapv(|v| v + 1.0)) // identity-like: one class, shifted
        })
        .unwrap();
    assert_eq!(p.shape(), &[1, 13, 20]);
    let want = ramp(&[1, 13, 20]).mapv(|v| v + 1.0);
    for (a, b) in p.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 * b, "{a} vs {b}");
    }
}

#[test]
fn bad_images_fail_naming_the_file_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), unet2d());
    // NaN and infinite voxels
    for (name, bad) in [("nan.nii.gz", f32::NAN), ("inf.nii.gz", f32::INFINITY)] {
        let p = dir.path().join(name);
        let mut a = ramp(&[1, 16, 16]);
        a[[0, 3, 4]] = bad;
        a[[0, 5, 5]] = bad;
        write_image(&p, a, [1.0, 1.0, 1.0]);
        let out = dir.path().join(format!("out_{name}"));
        let e = predict(&overrides(&ckpt, vec![p.clone()], &out))
            .unwrap_err()
            .to_string();
        assert!(e.contains(name), "{e}");
        assert!(e.contains("2 of 256 voxels are not finite"), "{e}");
        assert!(!out.join(name).exists(), "nothing written for {name}");
    }
    // 4D: the fourth axis is read as channels, which the network lacks
    let four = io_fixtures().join("four_d_f32.nii.gz");
    let e = predict(&overrides(&ckpt, vec![four], &dir.path().join("o4")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("four_d_f32"), "{e}");
    assert!(e.contains("3 channels, the network expects 1"), "{e}");
    assert!(e.contains("4D NIfTI"), "{e}");
    // a file that is not an image
    let junk = dir.path().join("junk.nii.gz");
    std::fs::write(&junk, b"not a nifti").unwrap();
    let e = predict(&overrides(&ckpt, vec![junk], &dir.path().join("oj")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.nii.gz"), "{e}");
    // a missing file
    let e = predict(&overrides(
        &ckpt,
        vec![dir.path().join("missing.nii.gz")],
        &dir.path().join("om"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing.nii.gz"), "{e}");
}

#[test]
fn an_empty_manifest_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), unet2d());
    let csv = dir.path().join("test.csv");
    std::fs::write(&csv, "image\n").unwrap();
    let quickstart =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/supervised/quickstart.toml");
    let sets = vec![
        format!("dataset.root={:?}", dir.path().to_string_lossy()),
        "dataset.test_csv=\"test.csv\"".to_string(),
        "network.feature_chns=[2,4,8,16,32]".to_string(),
        format!("inference.checkpoints=[{:?}]", ckpt.to_string_lossy()),
        format!(
            "inference.output_dir={:?}",
            dir.path().join("out").to_string_lossy()
        ),
    ];
    let cfg = medseg_infer::load_config(&quickstart, &sets).unwrap();
    let ov = InferenceOverrides {
        checkpoints: vec![],
        inputs: vec![],
        output: None,
        patch_size: None,
        tta: false,
        largest_component: None,
        save_probabilities: false,
        no_overlays: true,
        device: None,
    };
    let e = InferencePlan::resolve(Some(&cfg), &ov)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.csv"), "{e}");
    assert!(e.contains("no rows"), "{e}");
}

/// Registered names whose configuration is `UNetConfig`.
const UNET_FAMILY: [&str; 21] = [
    "UNet",
    "UNet2D",
    "UNet3D",
    "AttentionUNet",
    "AttentionUNet2D",
    "AttentionUNet3D",
    "UNetpp",
    "UNet++",
    "NestedUNet",
    "DualDecoderUNet",
    "DBNet",
    "MCNet",
    "CCTNet",
    "URPC",
    "UNet2D5",
    "UNet_ScSE",
    "COPLENet",
    "R2UNet",
    "R2AttentionUNet",
    "ResUNet",
    "UNet3Plus",
];

/// Every registered network states the sizes it accepts truthfully: an
/// input of the smallest accepted size above an odd size runs, and so does
/// inference of an odd-sized image through the padding.
#[test]
fn every_registered_network_predicts_odd_sizes() {
    let reg = medseg_nets::NetRegistry::with_builtins();
    for name in reg.names() {
        // the UNet family shares UNetConfig: small widths; every other
        // network (its own config type) with its defaults
        let small = json!({"name": name, "in_chns": 1, "class_num": 2,
            "feature_chns": [2, 4, 8, 16, 32], "dropout": [0.0, 0.0, 0.0, 0.0, 0.0]});
        let cfg = match name.as_str() {
            "UNet3D" | "AttentionUNet3D" | "UNet2D5" => {
                let mut c = small.clone();
                c["dimension"] = json!(3);
                c
            }
            n if UNET_FAMILY.contains(&n) => small,
            // a small ViT: the default (768 wide, 96 per axis) is slow here
            "UNETR" | "UNETR2D" | "UNETR3D" => json!({"name": name, "in_chns": 1, "class_num": 2,
                "img_size": if name == "UNETR2D" { json!([16, 16]) } else { json!([16, 16, 16]) },
                "feature_size": 2, "hidden_size": 8, "mlp_dim": 8, "num_heads": 2}),
            // a small Swin-UNet: the default (224 x 224, 27 M parameters) is slow here
            "SwinUNet" | "Swin-UNet" => json!({"name": name, "in_chns": 1, "class_num": 2,
                "img_size": 32, "embed_dim": 4, "num_heads": [1, 1, 1, 1], "window_size": 2}),
            // a small R50-ViT: the default (105 M parameters, 224x224) is slow here
            "TransUNet" => json!({"name": name, "in_chns": 1, "class_num": 2, "img_size": 32,
                "resnet_units": [1, 1, 1], "resnet_width": 4, "gn_groups": 2, "hidden_size": 8,
                "mlp_dim": 8, "num_heads": 2, "num_layers": 1, "head_channels": 8,
                "decoder_channels": [8, 8, 8, 8]}),
            // a narrow, shallow dilated ResNet: the default (ResNet-101) is slow here
            "DANet" | "OCNet" | "OCRNet" | "EANet" => json!({"name": name, "in_chns": 1,
                "class_num": 2, "backbone_width": 4, "backbone_blocks": [1, 1, 1]}),
            // HarDNet-MSEG and SETR: small widths (the defaults, 17M and 65M
            // parameters, are slow here)
            "HarDNetMSEG" | "HarDNet-MSEG" => json!({"name": name, "in_chns": 1, "class_num": 2,
                "channel": 4, "first_chns": [4, 8], "block_chns": [8, 8, 12, 12, 16],
                "growth_rates": [4, 4, 4, 4, 4], "block_layers": [2, 2, 2, 2, 2]}),
            "SETR" => json!({"name": name, "in_chns": 1, "class_num": 2, "patch_size": [16, 16],
                "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "decode_features": [4, 4, 4, 4], "intermediate_size": 8}),
            _ => json!({"name": name, "in_chns": 1, "class_num": 2}),
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net: Box<dyn SegNetwork> = match reg.build(&cfg, vb) {
            Ok(n) => n,
            Err(e) => panic!("{name}: {e}"),
        };
        let shape: Vec<usize> = if net.dimension() == 3 {
            vec![1, 1, 5, 11, 7]
        } else {
            vec![1, 1, 11, 7]
        };
        let x = ramp(&shape).mapv(|v| v / 97.0);
        let p = medseg_infer::network_probabilities(net.as_ref(), x.view(), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&p.shape()[2..], &shape[2..], "{name}");
        assert_eq!(p.shape()[1], 2, "{name}");
    }
}

/// An output folder another process is writing into is refused before
/// anything is written (the lock here is held by this test's process).
#[test]
fn a_locked_output_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), unet2d());
    let img = dir.path().join("img.nii.gz");
    write_image(&img, ramp(&[1, 16, 16]), [1.0, 1.0, 1.0]);
    let out = dir.path().join("out");
    let lock = medseg_core::DirLock::acquire(&out, "training").unwrap();
    let e = predict(&overrides(&ckpt, vec![img.clone()], &out))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is writing into this folder"), "{e}");
    assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    assert!(!out.join("img.nii.gz").exists());
    drop(lock);
    let written = predict(&overrides(&ckpt, vec![img], &out)).unwrap();
    assert!(written[0].exists());
}

/// A network of one fixed input size (UNETR: learnt position embeddings):
/// a smaller image is padded up to it and cropped back; a larger one is an
/// error naming the file and the size, and works with a sliding window of
/// that size.
#[test]
fn a_fixed_size_network_pads_smaller_images_and_needs_a_window_for_larger() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(
        dir.path(),
        json!({"name": "UNETR2D", "in_chns": 1, "class_num": 2, "img_size": [16, 16],
               "feature_size": 2, "hidden_size": 8, "mlp_dim": 8, "num_heads": 2}),
    );
    let small = dir.path().join("small.nii.gz");
    write_image(&small, ramp(&[1, 9, 13]), [1.0, 1.0, 1.0]);
    let written = predict(&overrides(&ckpt, vec![small], &dir.path().join("a"))).unwrap();
    let (b, _) = read_nifti(&written[0]).unwrap();
    assert_eq!(b.spatial_shape(), &[9, 13]);

    let large = dir.path().join("large.nii.gz");
    write_image(&large, ramp(&[1, 20, 40]), [1.0, 1.0, 1.0]);
    let err = predict(&overrides(
        &ckpt,
        vec![large.clone()],
        &dir.path().join("b"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("large.nii.gz")
            && err.contains("at most [16, 16]")
            && err.contains("sliding window"),
        "{err}"
    );
    let mut ov = overrides(&ckpt, vec![large], &dir.path().join("c"));
    ov.patch_size = Some(vec![16, 16]);
    let written = predict(&ov).unwrap();
    let (b, _) = read_nifti(&written[0]).unwrap();
    assert_eq!(b.spatial_shape(), &[20, 40]);
}
