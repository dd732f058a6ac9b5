//! Write then read gives the same values and geometry; references keep the
//! input's qform/sform exactly.
#![allow(clippy::needless_range_loop)]

use medseg_core::{Geometry, Image, LabelMap};
use medseg_io::nifti::{
    read_nifti, read_nifti_header, read_nifti_label, write_nifti, write_nifti_label,
};
use medseg_io::{read_image, read_label, write_image, write_label, DataType};
use ndarray::{ArrayD, Dimension, IxDyn};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn oblique() -> Geometry {
    let t: f64 = 0.4;
    let affine = [
        [0.9 * t.cos(), 0.0, -2.0 * t.sin(), 10.0],
        [0.9 * t.sin(), 0.0, 2.0 * t.cos(), -5.0],
        [0.0, -1.1, 0.0, 3.5],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Geometry::from_affine(&affine)
}

fn assert_affine_close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], tol: f64) {
    for i in 0..4 {
        for j in 0..4 {
            assert!(
                (a[i][j] - b[i][j]).abs() <= tol,
                "affine[{i}][{j}]: {} vs {}",
                a[i][j],
                b[i][j]
            );
        }
    }
}

#[test]
fn every_dtype_round_trips_2d_3d_4d() {
    let dir = tempfile::tempdir().unwrap();
    let shapes: [&[usize]; 3] = [&[1, 5, 6], &[1, 4, 5, 6], &[3, 4, 5, 6]];
    for dt in [
        DataType::U8,
        DataType::I8,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::F64,
    ] {
        let (lo, hi) = dt.range();
        for (s, shape) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let data = ArrayD::from_shape_fn(IxDyn(shape), |ix| {
                let k = ix.slice().iter().fold(0usize, |a, &b| a * 7 + b) as f64;
                let v = if dt.is_integer() {
                    (k * 13.0) % 120.0 - if lo < 0.0 { 60.0 } else { 0.0 }
                } else {
                    k * 0.37 - 5.5
                };
                v.clamp(lo, hi) as f32
            });
            assert_eq!(data.len(), n);
            let image = Image::new(data, oblique()).unwrap();
            for ext in ["nii", "nii.gz"] {
                let p = dir.path().join(format!("x_{}_{s}.{ext}", dt.name()));
                write_image(&p, &image, dt).unwrap();
                let (back, h) = read_nifti(&p).unwrap();
                assert_eq!(back.data, image.data, "{dt} {shape:?} {ext}");
                assert_eq!(h.data_type(), Some(dt));
                assert_affine_close(
                    &back.geometry.to_affine(),
                    &image.geometry.to_affine(),
                    1e-5,
                );
                // both forms agree
                assert_affine_close(&h.qform_affine(), &h.sform_affine(), 1e-5);
            }
        }
    }
}

#[test]
fn integer_writes_round_and_saturate() {
    let dir = tempfile::tempdir().unwrap();
    let data = ArrayD::from_shape_vec(IxDyn(&[1, 1, 5]), vec![-3.0f32, 1.4, 1.6, 300.0, f32::NAN])
        .unwrap();
    let p = dir.path().join("sat.nii");
    write_image(
        &p,
        &Image::new(data, Geometry::identity()).unwrap(),
        DataType::U8,
    )
    .unwrap();
    let back = read_image(&p).unwrap();
    assert_eq!(
        back.data.iter().copied().collect::<Vec<_>>(),
        vec![0.0, 1.0, 2.0, 255.0, 0.0]
    );
}

#[test]
fn reference_header_keeps_forms_and_codes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "qform_only_u8.nii",
        "sform_only_f64.nii",
        "both_forms_u16.nii",
        "nifti2_i8.nii",
        "sitk_oblique_i16.nii.gz",
    ] {
        let (image, h) = read_nifti(&fixture(name)).unwrap();
        // a "prediction": a label map on the image's grid
        let pred = image
            .data
            .index_axis(ndarray::Axis(0), 0)
            .mapv(|v| if v > 0.0 { 2u16 } else { 0 })
            .insert_axis(ndarray::Axis(0));
        let label = LabelMap::new(pred, image.geometry).unwrap();
        let out = dir.path().join(format!("pred_{name}"));
        write_nifti_label(&out, &label, Some(&h)).unwrap();
        let o = read_nifti_header(&out).unwrap();
        assert_eq!(
            (o.qform_code, o.sform_code),
            (h.qform_code, h.sform_code),
            "{name}"
        );
        assert_eq!(o.version, h.version, "{name}");
        assert_eq!(o.quatern, h.quatern, "{name}");
        assert_eq!(o.qoffset, h.qoffset, "{name}");
        assert_eq!(o.srow, h.srow, "{name}");
        assert_eq!(o.pixdim[..4], h.pixdim[..4], "{name}");
        assert_eq!(o.data_type(), Some(DataType::U8));
        let (back, _) = read_nifti_label(&out).unwrap();
        assert_eq!(back.data, label.data);
        assert_affine_close(&o.affine(), &h.affine(), 0.0);
    }
}

#[test]
fn changed_geometry_recomputes_forms_with_reference_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut image, h) = read_nifti(&fixture("sform_only_f64.nii")).unwrap();
    image.geometry.spacing = [1.0, 2.0, 3.0]; // e.g. resampled
    let out = dir.path().join("resampled.nii.gz");
    write_nifti(&out, &image, DataType::F32, Some(&h)).unwrap();
    let (back, o) = read_nifti(&out).unwrap();
    assert_eq!((o.qform_code, o.sform_code), (0, 2));
    assert_affine_close(
        &back.geometry.to_affine(),
        &image.geometry.to_affine(),
        1e-5,
    );
}

#[test]
fn labels_pick_u8_or_u16_and_png_depth() {
    let dir = tempfile::tempdir().unwrap();
    for (max, dt) in [(7u16, DataType::U8), (300, DataType::U16)] {
        let data = ArrayD::from_shape_fn(IxDyn(&[1, 3, 4, 5]), |ix| {
            ((ix[1] * 20 + ix[2] * 5 + ix[3]) as u16 * 5) % (max + 1)
        });
        let label = LabelMap::new(data, oblique()).unwrap();
        let p = dir.path().join(format!("lab{max}.nii.gz"));
        write_label(&p, &label).unwrap();
        assert_eq!(read_nifti_header(&p).unwrap().data_type(), Some(dt));
        let back = read_label(&p).unwrap();
        assert_eq!(back.data, label.data);
        assert_affine_close(
            &back.geometry.to_affine(),
            &label.geometry.to_affine(),
            1e-5,
        );

        let flat = ArrayD::from_shape_fn(IxDyn(&[1, 4, 5]), |ix| {
            ((ix[1] * 5 + ix[2]) as u16 * 37) % (max + 1)
        });
        assert_eq!(flat.iter().any(|&v| v > 255), max > 255);
        let l2 = LabelMap::new(flat, Geometry::identity()).unwrap();
        let p = dir.path().join(format!("lab{max}.png"));
        write_label(&p, &l2).unwrap();
        assert_eq!(read_label(&p).unwrap().data, l2.data);
        let decoder = png::Decoder::new(std::fs::File::open(&p).unwrap());
        let info = decoder.read_info().unwrap();
        let depth = info.info().bit_depth;
        assert_eq!(
            depth,
            if max > 255 {
                png::BitDepth::Sixteen
            } else {
                png::BitDepth::Eight
            }
        );
    }
}

#[test]
fn png_images_round_trip_grey_and_rgb() {
    let dir = tempfile::tempdir().unwrap();
    for (c, dt) in [
        (1usize, DataType::U8),
        (3, DataType::U8),
        (1, DataType::U16),
        (4, DataType::U16),
    ] {
        let (_, hi) = dt.range();
        let data = ArrayD::from_shape_fn(IxDyn(&[c, 5, 7]), |ix| {
            (((ix[0] * 35 + ix[1] * 7 + ix[2]) * 2477) as f64 % hi) as f32
        });
        let image = Image::new(data, Geometry::identity()).unwrap();
        let p = dir.path().join(format!("im{c}{dt}.png"));
        write_image(&p, &image, dt).unwrap();
        assert_eq!(read_image(&p).unwrap().data, image.data, "{c} {dt}");
    }
    let vol = Image::zeros(&[1, 2, 3, 4], Geometry::identity()).unwrap();
    let e = write_image(&dir.path().join("vol.png"), &vol, DataType::U8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2D"), "{e}");
    let e = write_image(
        &dir.path().join("f.png"),
        &Image::zeros(&[1, 2, 3], Geometry::identity()).unwrap(),
        DataType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("uint8 or uint16"), "{e}");
}

#[test]
fn writes_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let image = Image::zeros(&[1, 3, 4, 5], Geometry::identity()).unwrap();
    write_image(&dir.path().join("a.nii.gz"), &image, DataType::F32).unwrap();
    write_image(&dir.path().join("a.nii.gz"), &image, DataType::I16).unwrap(); // overwrite
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["a.nii.gz".to_string()]);
    // an ordinary file that others (viewers, other users) can read, unlike a temp file
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a.nii.gz"))
            .unwrap()
            .permissions()
            .mode();
        assert_ne!(mode & 0o044, 0, "mode {mode:o}");
    }
    // writing into a missing folder fails cleanly
    assert!(write_image(&dir.path().join("no/such/dir/a.nii"), &image, DataType::F32).is_err());
}
