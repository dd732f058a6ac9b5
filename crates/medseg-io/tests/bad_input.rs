//! Bad files and manifests give clear errors naming the file (and row), never panics.

use medseg_io::{read_image, read_label, Dataset, LabelledDataset, Manifest};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn err_of(path: &Path) -> String {
    read_image(path).unwrap_err().to_string()
}

#[test]
fn corrupt_nifti_files_name_the_file_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("extension_i32.nii")).unwrap(); // little-endian
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    let p = write("truncated_data.nii", &good[..good.len() - 10]);
    let e = err_of(&p);
    assert!(
        e.contains("truncated_data.nii") && e.contains("size does not match"),
        "{e}"
    );

    let p = write("truncated_header.nii", &good[..200]);
    let e = err_of(&p);
    assert!(
        e.contains("truncated_header.nii") && e.contains("truncated"),
        "{e}"
    );

    let mut bad = good.clone();
    bad[344..348].copy_from_slice(b"xx1\0");
    let e = err_of(&write("magic.nii", &bad));
    assert!(e.contains("magic.nii") && e.contains("wrong magic"), "{e}");

    let mut bad = good.clone();
    bad[70..72].copy_from_slice(&1024i16.to_le_bytes());
    let e = err_of(&write("dtype.nii", &bad));
    assert!(
        e.contains("dtype.nii") && e.contains("datatype code 1024"),
        "{e}"
    );

    let mut bad = good.clone();
    bad[42..44].copy_from_slice(&40i16.to_le_bytes()); // dim[1]: 4 -> 40
    let e = err_of(&write("dims.nii", &bad));
    assert!(
        e.contains("dims.nii") && e.contains("size does not match") && e.contains("[40, 3, 3]"),
        "{e}"
    );

    let mut bad = good.clone();
    bad[42..44].copy_from_slice(&0i16.to_le_bytes());
    let e = err_of(&write("zero_dim.nii", &bad));
    assert!(e.contains("zero_dim.nii") && e.contains("dim[1]"), "{e}");

    let e = err_of(&write(
        "text.nii",
        b"this is not an image at all, just some text that is long enough",
    ));
    assert!(
        e.contains("text.nii") && e.contains("not a NIfTI file"),
        "{e}"
    );

    let gz = std::fs::read(fixture("four_d_f32.nii.gz")).unwrap();
    let e = err_of(&write("cut.nii.gz", &gz[..gz.len() / 2]));
    assert!(e.contains("cut.nii.gz") && e.contains("gzip"), "{e}");

    let e = err_of(&write("plain.nii.gz", &good));
    assert!(e.contains("plain.nii.gz") && e.contains("not gzip"), "{e}");

    let e = err_of(&dir.path().join("missing.nii.gz"));
    assert!(e.contains("missing.nii.gz"), "{e}");

    let e = err_of(&write("image.bmp", b"BM"));
    assert!(
        e.contains("image.bmp") && e.contains("unknown file type"),
        "{e}"
    );

    let e = read_label(&write("broken.png", b"\x89PNG\r\n\x1a\nnot really"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.png"), "{e}");
}

#[test]
fn bad_manifests_name_the_csv_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(fixture("be_int16.nii"), d.join("a.nii")).unwrap();
    std::fs::copy(fixture("label_2d_u8.nii.gz"), d.join("a_lab.nii.gz")).unwrap();
    std::fs::copy(fixture("qform_only_u8.nii"), d.join("b.nii")).unwrap();

    std::fs::write(d.join("empty.csv"), "").unwrap();
    let e = Manifest::read(&d.join("empty.csv"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("empty.csv") && e.contains("empty manifest"),
        "{e}"
    );

    std::fs::write(d.join("header_only.csv"), "image,label\n").unwrap();
    let e = Manifest::read(&d.join("header_only.csv"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("header_only.csv") && e.contains("no rows"),
        "{e}"
    );

    std::fs::write(
        d.join("missing.csv"),
        "image,label\nb.nii,\nnope.nii.gz,a_lab.nii.gz\n",
    )
    .unwrap();
    let e = Manifest::read(&d.join("missing.csv"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.csv")
            && e.contains("row 2")
            && e.contains("nope.nii.gz")
            && e.contains("not found"),
        "{e}"
    );

    std::fs::write(d.join("weight.csv"), "image,image_weight\nb.nii,heavy\n").unwrap();
    let e = Manifest::read(&d.join("weight.csv"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weight.csv") && e.contains("row 1") && e.contains("heavy"),
        "{e}"
    );

    std::fs::write(
        d.join("classes.csv"),
        "image,label,annotated_classes\nb.nii,b.nii,1;x\n",
    )
    .unwrap();
    let e = Manifest::read(&d.join("classes.csv"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("classes.csv") && e.contains("row 1") && e.contains("annotated_classes"),
        "{e}"
    );

    // label shape differs from its image: found when the sample is loaded
    std::fs::write(
        d.join("shape.csv"),
        "image,label\nb.nii,b.nii\na.nii,a_lab.nii.gz\n",
    )
    .unwrap();
    let m = Manifest::read(&d.join("shape.csv"), None).unwrap();
    let ds = LabelledDataset::new(m).unwrap();
    assert!(ds.get(0).is_ok());
    let e = ds.get(1).unwrap_err().to_string();
    assert!(
        e.contains("shape.csv")
            && e.contains("row 2")
            && e.contains("a_lab.nii.gz")
            && e.contains("shape"),
        "{e}"
    );

    // a labelled dataset needs labels in every row
    std::fs::write(d.join("nolabel.csv"), "image,label\nb.nii,b.nii\nb.nii,\n").unwrap();
    let e = LabelledDataset::new(Manifest::read(&d.join("nolabel.csv"), None).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("nolabel.csv") && e.contains("row 2"), "{e}");

    // a file that exists but is corrupt: the row and the file are named
    std::fs::write(d.join("bad.nii"), b"garbage garbage garbage").unwrap();
    std::fs::write(d.join("corrupt.csv"), "image\nbad.nii\n").unwrap();
    let ds =
        medseg_io::UnlabelledDataset::new(Manifest::read(&d.join("corrupt.csv"), None).unwrap())
            .unwrap();
    let e = ds.get(0).unwrap_err().to_string();
    assert!(
        e.contains("corrupt.csv") && e.contains("row 1") && e.contains("bad.nii"),
        "{e}"
    );
    assert!(ds.get(5).is_err());
}
