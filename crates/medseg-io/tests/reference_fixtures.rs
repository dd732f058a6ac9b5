//! Compares medseg-io's reading of the committed fixtures with what nibabel,
//! SimpleITK and Pillow reported for them (tools/make_nifti_fixtures.py).
#![allow(clippy::needless_range_loop)]

use medseg_io::nifti::{read_nifti, read_nifti_label};
use medseg_io::{read_image, read_label};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(f64s).collect()
}

#[test]
fn nifti_values_shapes_and_affines_match_nibabel() {
    let r = reference();
    let records = r["nifti"].as_array().unwrap();
    assert!(records.len() >= 12);
    for rec in records {
        let name = rec["file"].as_str().unwrap();
        let (image, header) =
            read_nifti(&fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            image.data.shape(),
            usizes(&rec["array_shape"]).as_slice(),
            "{name}: shape"
        );
        let want = f64s(&rec["values"]);
        assert_eq!(want.len(), image.data.len(), "{name}");
        for (k, (&got, &w)) in image.data.iter().zip(&want).enumerate() {
            assert!(
                (got as f64 - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}: value {k}: medseg {got}, nibabel {w}"
            );
        }
        let dtype = header.data_type().unwrap();
        assert_eq!(
            dtype.name(),
            rec["dtype"].as_str().unwrap(),
            "{name}: dtype"
        );
        assert_eq!(
            header.qform_code as i64,
            rec["qform_code"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(
            header.sform_code as i64,
            rec["sform_code"].as_i64().unwrap(),
            "{name}"
        );
        let aff = matrix(&rec["affine"]);
        let ours = header.affine();
        let from_geometry = image.geometry.to_affine();
        for i in 0..4 {
            for j in 0..4 {
                assert!(
                    (ours[i][j] - aff[i][j]).abs() < 1e-5,
                    "{name}: affine[{i}][{j}] {} vs nibabel {}",
                    ours[i][j],
                    aff[i][j]
                );
                assert!(
                    (from_geometry[i][j] - aff[i][j]).abs() < 1e-5,
                    "{name}: geometry affine[{i}][{j}]"
                );
            }
        }
        // nibabel's zooms are the header's pixdim in (i, j, k, ...) order
        let zooms = f64s(&rec["zooms"]);
        for (a, z) in zooms.iter().enumerate() {
            assert!(
                (header.pixdim[a + 1] - z).abs() < 1e-6,
                "{name}: pixdim {:?} vs zooms {zooms:?}",
                header.pixdim
            );
        }
        // medseg's spacing (D, H, W) is the length of the affine's (k, j, i) columns
        let sp = image.spacing();
        let n = sp.len();
        for a in 0..n {
            let c = n - 1 - a;
            let norm = (0..3).map(|r| aff[r][c] * aff[r][c]).sum::<f64>().sqrt();
            assert!(
                (sp[a] - norm).abs() < 1e-5,
                "{name}: spacing {sp:?} vs affine columns"
            );
        }
    }
}

#[test]
fn simpleitk_geometry_matches_after_lps_to_ras() {
    let r = reference();
    let rec = r["nifti"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["file"] == "sitk_oblique_i16.nii.gz")
        .unwrap();
    let s = &rec["sitk"];
    let (image, _) = read_nifti(&fixtures().join("sitk_oblique_i16.nii.gz")).unwrap();
    let g = image.geometry;
    let spacing = f64s(&s["spacing"]);
    let origin = f64s(&s["origin"]);
    let dir = f64s(&s["direction"]); // row-major, LPS, columns are (x, y, z) = (i, j, k)
    for c in 0..3 {
        let axis = 2 - c;
        assert!((g.spacing[axis] - spacing[c]).abs() < 1e-5);
        for r in 0..3 {
            let flip = if r < 2 { -1.0 } else { 1.0 };
            assert!(
                (g.direction[r][axis] - flip * dir[3 * r + c]).abs() < 1e-5,
                "direction[{r}][{axis}]"
            );
        }
    }
    for r in 0..3 {
        let flip = if r < 2 { -1.0 } else { 1.0 };
        assert!((g.origin[r] - flip * origin[r]).abs() < 1e-4);
    }
    // SimpleITK's array is (z, y, x) = medseg's (D, H, W)
    let vals = f64s(&s["values"]);
    for (a, b) in image.data.iter().zip(&vals) {
        assert_eq!(*a as f64, *b);
    }
}

#[test]
fn raster_values_match_pillow() {
    let r = reference();
    for rec in r["raster"].as_array().unwrap() {
        let name = rec["file"].as_str().unwrap();
        let image = read_image(&fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            image.data.shape(),
            usizes(&rec["array_shape"]).as_slice(),
            "{name}"
        );
        // JPEG decoders may differ by a unit or two; the others are exact
        let tol = if name.ends_with(".jpg") { 3.0 } else { 0.0 };
        for (got, want) in image.data.iter().zip(f64s(&rec["values"])) {
            assert!((*got as f64 - want).abs() <= tol, "{name}: {got} vs {want}");
        }
    }
}

#[test]
fn labels_read_as_integers_and_reject_fractions() {
    let l = read_label(&fixtures().join("label.png")).unwrap();
    let r = reference();
    let rec = r["raster"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["file"] == "label.png")
        .unwrap();
    let want: Vec<u16> = f64s(&rec["values"]).into_iter().map(|v| v as u16).collect();
    assert_eq!(l.data.iter().copied().collect::<Vec<_>>(), want);

    let (l2, h) = read_nifti_label(&fixtures().join("label_2d_u8.nii.gz")).unwrap();
    assert_eq!(l2.data.ndim(), 3, "nz == 1 reads as 2D");
    assert_eq!(h.dim[0], 2);
    assert!(l2.classes().iter().all(|&c| c < 4));

    let err = read_label(&fixtures().join("nonint_label_f32.nii"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nonint_label_f32.nii") && err.contains("integers") && err.contains("1.5"),
        "{err}"
    );
    let err = read_label(&fixtures().join("rgb.png"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rgb.png") && err.contains("greyscale"),
        "{err}"
    );
    let err = read_label(&fixtures().join("four_d_f32.nii.gz"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("one channel"), "{err}");
}
