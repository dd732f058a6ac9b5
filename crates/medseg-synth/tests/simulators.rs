use medseg_core::{Geometry, LabelMap};
use medseg_synth::noisy::{corrupt, NoisyConfig};
use medseg_synth::partial::{assign_sites, keep_classes, random_subset, Dropped};
use medseg_synth::scribble::{scribble, ScribbleConfig, ScribbleMethod};
use medseg_synth::split::{split_subjects, Part, SplitConfig};
use medseg_synth::*;
use ndarray::{ArrayD, IxDyn};

fn cardiac_slices(n: usize, seed: u64) -> Vec<PhantomSlice> {
    generate(&PhantomConfig::cardiac2d(), n, seed)
        .unwrap()
        .iter()
        .flat_map(|p| p.slices_2d().unwrap())
        .collect()
}

fn disc(radius: f64, size: usize, class: u16) -> LabelMap {
    let c = (size as f64 - 1.0) / 2.0;
    let data = ArrayD::from_shape_fn(IxDyn(&[1, size, size]), |i| {
        let (y, x) = (i[1] as f64 - c, i[2] as f64 - c);
        if (y * y + x * x).sqrt() <= radius {
            class
        } else {
            0
        }
    });
    LabelMap::new(data, Geometry::identity()).unwrap()
}

fn count(l: &LabelMap, c: u16) -> usize {
    l.data.iter().filter(|&&v| v == c).count()
}

#[test]
fn scribbles_never_contradict_and_respect_coverage() {
    let slices = cardiac_slices(2, 4);
    for method in [ScribbleMethod::Skeleton, ScribbleMethod::RandomWalk] {
        let cfg = ScribbleConfig {
            method,
            coverage: (0.1, 0.2),
            ..ScribbleConfig::default()
        };
        for (i, s) in slices.iter().enumerate() {
            let (scr, report) = scribble(&s.label, &cfg, i as u64).unwrap();
            assert_eq!(scr.data.shape(), s.label.data.shape());
            for (a, b) in scr.data.iter().zip(s.label.data.iter()) {
                assert!(*a == cfg.ignore || a == b, "scribble {a} on true class {b}");
            }
            // every class of the slice, background included, is scribbled
            let mut want: Vec<u16> = s.label.classes();
            want.push(cfg.ignore);
            assert_eq!(scr.classes(), want, "{}", s.name);
            for c in &report {
                let lo = (cfg.coverage.0 * c.pixels as f64).floor() as usize;
                let hi = ((cfg.coverage.1 * c.pixels as f64).floor() as usize).max(1);
                assert!(
                    c.scribbled >= lo && c.scribbled <= hi,
                    "{method:?} {} class {}: {} of {} scribbled",
                    s.name,
                    c.class,
                    c.scribbled,
                    c.pixels
                );
                assert_eq!(c.scribbled, count(&scr, c.class));
            }
        }
    }
}

#[test]
fn scribbles_on_volumes_and_deterministic() {
    let p = generate_subject(&PhantomConfig::cardiac3d(), 2, 1).unwrap();
    let cfg = ScribbleConfig::default();
    let (a, ra) = scribble(&p.label, &cfg, 9).unwrap();
    let (b, rb) = scribble(&p.label, &cfg, 9).unwrap();
    assert_eq!(a, b);
    assert_eq!(ra, rb);
    let (c, _) = scribble(&p.label, &cfg, 10).unwrap();
    assert_ne!(a, c);
    assert_eq!(a.data.shape(), &[1, 10, 128, 128]);
    // per slice and class, one report entry
    assert!(ra.iter().any(|r| r.slice == 9));
    for (x, y) in a.data.iter().zip(p.label.data.iter()) {
        assert!(*x == cfg.ignore || x == y);
    }
    // scribbles are sparse: overall fewer than a fifth of the voxels
    let annotated = a.data.iter().filter(|&&v| v != cfg.ignore).count();
    assert!(annotated > 0 && annotated < a.data.len() / 5);
    // no background scribbles when disabled
    let nobg = ScribbleConfig {
        background: false,
        ..cfg.clone()
    };
    let (d, _) = scribble(&p.label, &nobg, 9).unwrap();
    assert_eq!(count(&d, 0), 0);
    let bad = ScribbleConfig {
        coverage: (0.3, 0.1),
        ..cfg
    };
    assert!(scribble(&p.label, &bad, 0).is_err());
}

#[test]
fn noisy_dilate_erode_matches_disc_areas() {
    let l = disc(12.0, 48, 1);
    let cfg = NoisyConfig {
        probability: 1.0,
        elastic: false,
        shift: false,
        flip_probability: 0.0,
        radius_mm: (3.0, 3.0),
        ..NoisyConfig::default()
    };
    let mut saw = [false, false];
    for seed in 0..12 {
        let (n, rep) = corrupt(&l, &cfg, seed).unwrap();
        let area = count(&n, 1) as f64;
        let grown = std::f64::consts::PI * 15.0f64.powi(2);
        let shrunk = std::f64::consts::PI * 9.0f64.powi(2);
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        if rep.operations[0].contains("dilate") {
            assert!(rel(area, grown) < 0.06, "dilated area {area} vs {grown}");
            saw[0] = true;
        } else {
            assert!(rep.operations[0].contains("erode"));
            assert!(rel(area, shrunk) < 0.08, "eroded area {area} vs {shrunk}");
            saw[1] = true;
        }
        // reported Dice equals an independent computation
        let inter = n
            .data
            .iter()
            .zip(l.data.iter())
            .filter(|(a, b)| **a == 1 && **b == 1)
            .count() as f64;
        let dice = 2.0 * inter / (count(&n, 1) + count(&l, 1)) as f64;
        assert!((rep.dice - dice).abs() < 1e-12);
    }
    assert!(saw[0] && saw[1]);
}

#[test]
fn noisy_shift_keeps_area_and_flip_relabels() {
    let l = disc(8.0, 48, 2);
    let cfg = NoisyConfig {
        probability: 1.0,
        dilate_erode: false,
        elastic: false,
        shift_mm: (4.0, 4.0),
        flip_probability: 0.0,
        ..NoisyConfig::default()
    };
    let (n, rep) = corrupt(&l, &cfg, 3).unwrap();
    assert_eq!(count(&n, 2), count(&l, 2));
    assert!(rep.dice < 0.95 && rep.dice > 0.3, "dice {}", rep.dice);
    let flip = NoisyConfig {
        flip_probability: 1.0,
        shift: false,
        ..cfg
    };
    let (f, rep) = corrupt(&l, &flip, 1).unwrap();
    assert_eq!(count(&f, 2), 0);
    let to: Vec<u16> = l
        .data
        .iter()
        .zip(f.data.iter())
        .filter(|(a, _)| **a == 2)
        .map(|(_, b)| *b)
        .collect();
    assert!(to.iter().all(|&v| v == to[0]) && to[0] != 2);
    assert_eq!(rep.dice, 0.0);
}

#[test]
fn noisy_probability_and_target_dice() {
    let slices = cardiac_slices(2, 8);
    let none = NoisyConfig {
        probability: 0.0,
        ..NoisyConfig::default()
    };
    let (n, rep) = corrupt(&slices[0].label, &none, 1).unwrap();
    assert_eq!(n, slices[0].label);
    assert!(!rep.corrupted && rep.dice == 1.0);

    let cfg = NoisyConfig {
        probability: 1.0,
        target_dice: Some((0.7, 0.85)),
        ..NoisyConfig::default()
    };
    let mut in_range = 0;
    for (i, s) in slices.iter().enumerate() {
        let (n, rep) = corrupt(&s.label, &cfg, i as u64).unwrap();
        assert!(rep.corrupted);
        let d = mean_foreground_dice(&s.label, &n, cfg.ignore).unwrap();
        assert!((d - rep.dice).abs() < 1e-12);
        if rep.in_target {
            assert!((0.7..=0.85).contains(&d), "dice {d} flagged in target");
            in_range += 1;
        }
        let (n2, rep2) = corrupt(&s.label, &cfg, i as u64).unwrap();
        assert_eq!(n, n2);
        assert_eq!(rep, rep2);
    }
    assert!(
        in_range >= slices.len() * 9 / 10,
        "{in_range} of {} in range",
        slices.len()
    );

    // with p = 0.5 roughly half the images are corrupted
    let half = NoisyConfig {
        probability: 0.5,
        ..NoisyConfig::default()
    };
    let k = (0..200)
        .filter(|&i| corrupt(&slices[0].label, &half, i).unwrap().1.corrupted)
        .count();
    assert!((70..=130).contains(&k), "{k} of 200 corrupted");
}

#[test]
fn partial_labels_keep_subsets() {
    let l = LabelMap::new(
        ArrayD::from_shape_vec(IxDyn(&[1, 1, 6]), vec![0, 1, 2, 3, 4, 255]).unwrap(),
        Geometry::identity(),
    )
    .unwrap();
    let b = keep_classes(&l, &[2, 4], Dropped::Background, Some(255));
    assert_eq!(
        b.data.iter().copied().collect::<Vec<_>>(),
        vec![0, 0, 2, 0, 4, 255]
    );
    let i = keep_classes(&l, &[1], Dropped::Ignore(255), Some(255));
    assert_eq!(
        i.data.iter().copied().collect::<Vec<_>>(),
        vec![0, 1, 255, 255, 255, 255]
    );
    let mut sizes_seen = [false; 3];
    for seed in 0..50 {
        let s = random_subset(&[1, 2, 3, 4], 1, 2, seed).unwrap();
        sizes_seen[s.len()] = true;
        assert_eq!(s, random_subset(&[1, 2, 3, 4], 1, 2, seed).unwrap());
        assert!((1..=2).contains(&s.len()));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
    assert!(sizes_seen[1] && sizes_seen[2]);
    assert!(random_subset(&[1, 2], 3, 1, 0).is_err());
    let subjects: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let sites = assign_sites(&subjects, 3, 1).unwrap();
    let sizes: Vec<usize> = (0..3)
        .map(|k| sites.iter().filter(|s| s.1 == k).count())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    assert!(sizes.iter().all(|&n| (3..=4).contains(&n)));
    assert_eq!(sites, assign_sites(&subjects, 3, 1).unwrap());
}

#[test]
fn splits_by_subject() {
    let subjects: Vec<String> = (0..50)
        .flat_map(|i| (0..8).map(move |_| format!("subject{i:03}")))
        .collect();
    let cfg = SplitConfig {
        valid: 0.2,
        test: 0.2,
        labelled: 0.1,
    };
    let s = split_subjects(&subjects, &cfg, 5).unwrap();
    assert_eq!(s.len(), 50);
    let n = |p: Part| s.iter().filter(|x| x.part == p).count();
    assert_eq!(
        (n(Part::Train), n(Part::Valid), n(Part::Test)),
        (30, 10, 10)
    );
    assert_eq!(s.iter().filter(|x| x.labelled).count(), 3);
    assert!(s
        .iter()
        .filter(|x| x.labelled)
        .all(|x| x.part == Part::Train));
    assert_eq!(s, split_subjects(&subjects, &cfg, 5).unwrap());
    assert_ne!(s, split_subjects(&subjects, &cfg, 6).unwrap());
    // tiny data sets keep a training subject and a labelled one
    let one = split_subjects(&subjects[..8], &cfg, 0).unwrap();
    assert_eq!(one.len(), 1);
    assert!(one[0].part == Part::Train && one[0].labelled);
    assert!(split_subjects(
        &subjects,
        &SplitConfig {
            valid: 0.7,
            test: 0.5,
            labelled: 0.1
        },
        0
    )
    .is_err());
}

#[test]
fn noisy_volumes_reach_target_dice() {
    let p = generate_subject(&PhantomConfig::cardiac3d(), 4, 0).unwrap();
    let cfg = NoisyConfig {
        probability: 1.0,
        target_dice: Some((0.75, 0.9)),
        ..NoisyConfig::default()
    };
    let (n, rep) = corrupt(&p.label, &cfg, 1).unwrap();
    assert_eq!(n.data.shape(), p.label.data.shape());
    assert_eq!(n.geometry, p.label.geometry);
    assert!(rep.in_target, "{rep:?}");
    let d = mean_foreground_dice(&p.label, &n, None).unwrap();
    assert!((0.75..=0.9).contains(&d), "dice {d}");
}
