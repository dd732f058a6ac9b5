//! Manifests, the four datasets and the loader.

use medseg_core::{Error, Geometry, Image, LabelMap, Result, Sample};
use medseg_io::{
    identity_transform, write_image, write_label, DataType, Dataset, LabelledDataset, Loader,
    LoaderConfig, Manifest, ManifestRow, PartialLabelDataset, ScribbleDataset, UnlabelledDataset,
};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Writes case `i`: two modalities, a label with some 255 (unannotated)
/// voxels and a pixel-weight map.
fn write_case(dir: &Path, i: usize) {
    let g = Geometry::with_spacing([2.0, 1.0, 1.0]);
    for m in 0..2 {
        let d = ArrayD::from_shape_fn(IxDyn(&[1, 2, 3, 4]), |ix| (i * 100 + m * 10 + ix[3]) as f32);
        write_image(
            &dir.join(format!("c{i}_m{m}.nii.gz")),
            &Image::new(d, g).unwrap(),
            DataType::I16,
        )
        .unwrap();
    }
    let l = ArrayD::from_shape_fn(IxDyn(&[1, 2, 3, 4]), |ix| {
        if ix[3] == 0 {
            255u16
        } else {
            (ix[3] % 3) as u16
        }
    });
    write_label(
        &dir.join(format!("c{i}_lab.nii.gz")),
        &LabelMap::new(l, g).unwrap(),
    )
    .unwrap();
    let w = ArrayD::from_elem(IxDyn(&[1, 2, 3, 4]), 0.5f32);
    write_image(
        &dir.join(format!("c{i}_w.nii")),
        &Image::new(w, g).unwrap(),
        DataType::F32,
    )
    .unwrap();
}

fn manifest(dir: &Path, n: usize) -> Manifest {
    let mut m = Manifest::new(dir);
    m.image_columns = vec!["image_t1".into(), "image_t2".into()];
    for i in 0..n {
        write_case(dir, i);
        let mut row = ManifestRow {
            images: vec![
                format!("c{i}_m0.nii.gz").into(),
                format!("c{i}_m1.nii.gz").into(),
            ],
            label: Some(format!("c{i}_lab.nii.gz").into()),
            pixel_weight: Some(format!("c{i}_w.nii").into()),
            noisy_mask: (i == 1).then(|| format!("c{i}_w.nii").into()),
            image_weight: Some(0.25 * i as f32),
            annotated_classes: if i % 2 == 0 { Some(vec![0, 2]) } else { None },
            extra: BTreeMap::new(),
        };
        row.extra.insert("subject".into(), format!("s{}", i / 2));
        m.rows.push(row);
    }
    m
}

#[test]
fn manifest_round_trips_through_csv() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), 3);
    let csv = dir.path().join("all.csv");
    m.write(&csv).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with(
            "image_t1,image_t2,label,pixel_weight,noisy_mask,image_weight,annotated_classes,subject\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("c0_m0.nii.gz,c0_m1.nii.gz,c0_lab.nii.gz,c0_w.nii,,0,0;2,s0\n"),
        "{text}"
    );
    let back = Manifest::read(&csv, None).unwrap();
    assert_eq!(back.rows, m.rows);
    assert_eq!(back.image_columns, m.image_columns);
    assert_eq!(back.root, dir.path());
}

#[test]
fn pymic_positional_columns_and_root_override() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("data");
    std::fs::create_dir(&sub).unwrap();
    write_case(&sub, 0);
    let csv = dir.path().join("pymic.csv");
    std::fs::write(
        &csv,
        "t1,t2,label,site\nc0_m0.nii.gz,c0_m1.nii.gz,c0_lab.nii.gz,A\n",
    )
    .unwrap();
    assert!(
        Manifest::read(&csv, None).is_err(),
        "files are relative to the root, not the CSV folder here"
    );
    let m = Manifest::read(&csv, Some(&sub)).unwrap();
    assert_eq!(m.image_columns, vec!["t1", "t2"]);
    assert_eq!(m.rows[0].extra["site"], "A");
    let s = LabelledDataset::new(m).unwrap().get(0).unwrap();
    assert_eq!(s.image.data.shape(), &[2, 2, 3, 4]);
    assert_eq!(s.name, "c0_m0");
}

#[test]
fn datasets_fill_the_sample_fields() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), 2);

    let s = LabelledDataset::new(m.clone()).unwrap().get(1).unwrap();
    assert_eq!(s.image.data.shape(), &[2, 2, 3, 4]);
    assert_eq!(s.image.data[[0, 1, 2, 3]], 103.0);
    assert_eq!(s.image.data[[1, 1, 2, 3]], 113.0);
    assert!((s.image.spacing()[0] - 2.0).abs() < 1e-6);
    assert_eq!(s.label.as_ref().unwrap().data[[0, 0, 0, 2]], 2);
    assert_eq!(s.pixel_weight.as_ref().unwrap()[[0, 0, 0, 0]], 0.5);
    assert_eq!(
        s.noisy_mask, s.pixel_weight,
        "the noisy mask column is read"
    );
    assert_eq!(s.image_weight, Some(0.25));
    assert_eq!(s.annotated_classes, None);
    s.validate().unwrap();

    let u = UnlabelledDataset::new(m.clone()).unwrap().get(0).unwrap();
    assert!(u.label.is_none() && u.pixel_weight.is_none());

    let sc = ScribbleDataset::new(m.clone()).unwrap();
    assert_eq!(sc.ignore_label(), 255);
    let s = sc.get(0).unwrap();
    let (l, w) = (s.label.unwrap().data, s.pixel_weight.unwrap());
    for (lv, wv) in l.iter().zip(w.iter()) {
        assert_eq!(*wv, if *lv == 255 { 0.0 } else { 0.5 });
    }

    let sc1 = ScribbleDataset::with_ignore(m.clone(), 2)
        .unwrap()
        .get(0)
        .unwrap();
    let (l, w) = (sc1.label.unwrap().data, sc1.pixel_weight.unwrap());
    assert!(l
        .iter()
        .zip(w.iter())
        .all(|(lv, wv)| (*lv == 2) == (*wv == 0.0)));

    let p = PartialLabelDataset::new(m).unwrap();
    assert_eq!(p.get(0).unwrap().annotated_classes, Some(vec![0, 2]));
    assert_eq!(p.get(1).unwrap().annotated_classes, None);
    assert_eq!(p.len(), 2);
}

/// An in-memory dataset: sample i holds the value i; counts loads.
struct Counting {
    n: usize,
    loads: AtomicUsize,
    fail_at: Option<usize>,
}

impl Dataset for Counting {
    fn len(&self) -> usize {
        self.n
    }
    fn get(&self, index: usize) -> Result<Sample> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if Some(index) == self.fail_at {
            return Err(Error::Other(format!("cannot load {index}")));
        }
        let im = Image::new(
            ArrayD::from_elem(IxDyn(&[1, 2, 2]), index as f32),
            Geometry::identity(),
        )?;
        Ok(Sample::new(format!("s{index}"), im))
    }
}

fn run(loader: &Loader, epoch: u64) -> Vec<(String, f32)> {
    loader
        .epoch(epoch)
        .flat_map(|b| b.unwrap().samples)
        .map(|s| (s.name.clone(), s.image.data[[0, 0, 1]]))
        .collect()
}

fn jitter() -> medseg_io::TransformFn {
    Arc::new(|mut s: Sample, rng: &mut rand_chacha::ChaCha8Rng| {
        let r: f32 = rng.random();
        s.image.data[[0, 0, 1]] += r;
        // uneven work so threads finish out of order
        if s.name.ends_with('3') {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(s)
    })
}

#[test]
fn loader_is_deterministic_across_worker_counts() {
    let ds: Arc<dyn Dataset> = Arc::new(Counting {
        n: 23,
        loads: AtomicUsize::new(0),
        fail_at: None,
    });
    let cfg = |workers| LoaderConfig {
        batch_size: 4,
        shuffle: true,
        seed: 7,
        workers,
        prefetch: 2,
        drop_last: false,
    };
    let reference = run(&Loader::new(ds.clone(), cfg(0), jitter()), 3);
    assert_eq!(reference.len(), 23);
    for w in [1, 3, 5] {
        assert_eq!(
            run(&Loader::new(ds.clone(), cfg(w), jitter()), 3),
            reference,
            "workers {w}"
        );
    }
    // a permutation of all samples, differing between epochs
    let mut names: Vec<String> = reference.iter().map(|(n, _)| n.clone()).collect();
    let other = run(&Loader::new(ds.clone(), cfg(2), jitter()), 4);
    assert_ne!(
        other.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        names
    );
    names.sort();
    let mut all: Vec<String> = (0..23).map(|i| format!("s{i}")).collect();
    all.sort();
    assert_eq!(names, all);
    // the transform's draw depends on (seed, epoch, sample), not on position
    let seq = Loader::new(
        ds.clone(),
        LoaderConfig {
            shuffle: false,
            ..cfg(2)
        },
        jitter(),
    );
    let unshuffled: BTreeMap<String, f32> = run(&seq, 3).into_iter().collect();
    for (n, v) in &reference {
        assert_eq!(unshuffled[n], *v);
    }
    // without shuffling, the order is the dataset's
    let plain = run(
        &Loader::new(
            ds.clone(),
            LoaderConfig {
                shuffle: false,
                ..cfg(2)
            },
            identity_transform(),
        ),
        0,
    );
    assert_eq!(
        plain.iter().map(|(_, v)| *v as usize).collect::<Vec<_>>(),
        (0..23).collect::<Vec<_>>()
    );
}

#[test]
fn loader_batches_drop_last_and_errors() {
    let ds = Arc::new(Counting {
        n: 10,
        loads: AtomicUsize::new(0),
        fail_at: Some(5),
    });
    let cfg = LoaderConfig {
        batch_size: 3,
        shuffle: false,
        seed: 1,
        workers: 2,
        prefetch: 1,
        drop_last: true,
    };
    let loader = Loader::new(ds.clone(), cfg.clone(), identity_transform());
    assert_eq!(loader.len(), 3);
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok());
    let e = results[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("cannot load 5"), "{e}");
    assert_eq!(results[2].as_ref().unwrap().samples.len(), 3);

    let keep = Loader::new(
        ds,
        LoaderConfig {
            drop_last: false,
            ..cfg
        },
        identity_transform(),
    );
    let sizes: Vec<usize> = keep
        .epoch(0)
        .map(|b| b.map(|b| b.len()).unwrap_or(0))
        .collect();
    assert_eq!(sizes, vec![3, 0, 3, 1]);

    let zero = Loader::new(
        Arc::new(Counting {
            n: 2,
            loads: AtomicUsize::new(0),
            fail_at: None,
        }),
        LoaderConfig {
            batch_size: 0,
            ..LoaderConfig::default()
        },
        identity_transform(),
    );
    let r: Vec<_> = zero.epoch(0).collect();
    assert!(r.len() == 1 && r[0].is_err());
}

#[test]
fn prefetch_queue_is_bounded() {
    let ds = Arc::new(Counting {
        n: 100,
        loads: AtomicUsize::new(0),
        fail_at: None,
    });
    let cfg = LoaderConfig {
        batch_size: 2,
        shuffle: false,
        seed: 0,
        workers: 4,
        prefetch: 3,
        drop_last: false,
    };
    let loader = Loader::new(ds.clone(), cfg, identity_transform());
    let mut it = loader.epoch(0);
    it.next().unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // one batch consumed, at most `prefetch` batches beyond it loaded
    let loaded = ds.loads.load(Ordering::SeqCst);
    assert!(loaded <= (1 + 3) * 2, "loaded {loaded} samples");
    drop(it); // stops the workers
    let after = ds.loads.load(Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(ds.loads.load(Ordering::SeqCst), after);
}
