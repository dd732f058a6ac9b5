use medseg_synth::cardiac_classes::{LV, MYOCARDIUM, RV};
use medseg_synth::*;
use ndarray::{s, Ix4};

fn mean_where(p: &Phantom, k: usize, class: u16) -> Option<f64> {
    let im = p.image.data.view().into_dimensionality::<Ix4>().unwrap();
    let lb = p.label.data.view().into_dimensionality::<Ix4>().unwrap();
    let (mut s, mut n) = (0.0, 0usize);
    for (v, l) in im
        .slice(s![0, k, .., ..])
        .iter()
        .zip(lb.slice(s![0, k, .., ..]).iter())
    {
        if *l == class {
            s += *v as f64;
            n += 1;
        }
    }
    (n > 0).then(|| s / n as f64)
}

#[test]
fn cardiac_shapes_classes_and_topology() {
    let cfg = PhantomConfig::cardiac2d();
    let subjects = generate(&cfg, 6, 7).unwrap();
    assert_eq!(subjects.len(), 6);
    for p in &subjects {
        assert_eq!(p.image.data.shape(), &[1, 8, 128, 128]);
        assert_eq!(p.label.data.shape(), &[1, 8, 128, 128]);
        assert_eq!(p.image.spacing(), &[10.0, 1.5, 1.5]);
        assert!(p.image.data.iter().all(|v| v.is_finite()));
        let lb = p.label.data.view().into_dimensionality::<Ix4>().unwrap();
        let mut rv_slices = 0;
        for k in 0..8 {
            let sl = lb.slice(s![0, k, .., ..]);
            let count = |c: u16| sl.iter().filter(|&&v| v == c).count();
            assert!(count(LV) > 20, "{} slice {k}: LV missing", p.subject);
            assert!(
                count(MYOCARDIUM) > 20,
                "{} slice {k}: myocardium missing",
                p.subject
            );
            let (h, w) = sl.dim();
            let mut rv_touches_myo = false;
            for y in 0..h {
                for x in 0..w {
                    let (y, x): (usize, usize) = (y, x);
                    let c = sl[[y, x]];
                    let neigh = [
                        (y.wrapping_sub(1), x),
                        (y + 1, x),
                        (y, x.wrapping_sub(1)),
                        (y, x + 1),
                    ];
                    for (ny, nx) in neigh {
                        let Some(&n) = sl.get((ny, nx)) else {
                            assert_ne!(c, LV, "LV touches the image border");
                            continue;
                        };
                        if c == LV {
                            assert!(
                                n == LV || n == MYOCARDIUM,
                                "{} slice {k}: LV pixel ({y},{x}) next to class {n}",
                                p.subject
                            );
                        }
                        if c == RV && n == MYOCARDIUM {
                            rv_touches_myo = true;
                        }
                    }
                }
            }
            if count(RV) > 0 {
                rv_slices += 1;
                assert!(
                    rv_touches_myo,
                    "{} slice {k}: RV does not touch the myocardium",
                    p.subject
                );
            }
        }
        // the RV is present at the base and shrinks towards the apex
        assert!(lb.slice(s![0, 0, .., ..]).iter().any(|&v| v == RV));
        assert!(
            rv_slices >= 4,
            "{}: RV in only {rv_slices} slices",
            p.subject
        );
    }
}

#[test]
fn cardiac_intensities_overlap_between_classes() {
    let cfg = PhantomConfig::cardiac2d();
    for p in generate(&cfg, 4, 3).unwrap() {
        let k = 1;
        let lv = mean_where(&p, k, LV).unwrap();
        let rv = mean_where(&p, k, RV).unwrap();
        let myo = mean_where(&p, k, MYOCARDIUM).unwrap();
        // both blood pools look alike: intensity alone cannot tell them apart
        assert!((lv - rv).abs() / lv < 0.2, "LV {lv} vs RV {rv}");
        assert!(
            myo < 0.6 * lv,
            "myocardium {myo} should be darker than blood {lv}"
        );
        // background holds tissue as bright as blood (aorta, fat) and as dark
        // as myocardium (liver, RV wall, muscle)
        let im = p.image.data.view().into_dimensionality::<Ix4>().unwrap();
        let lb = p.label.data.view().into_dimensionality::<Ix4>().unwrap();
        let bg: Vec<f32> = im
            .slice(s![0, k, .., ..])
            .iter()
            .zip(lb.slice(s![0, k, .., ..]).iter())
            .filter(|(_, &l)| l == 0)
            .map(|(v, _)| *v)
            .collect();
        let bright = bg.iter().filter(|&&v| (v as f64) > 0.8 * lv).count();
        let myo_like = bg
            .iter()
            .filter(|&&v| ((v as f64) - myo).abs() < 0.1 * myo)
            .count();
        assert!(bright > 50, "only {bright} bright background pixels");
        assert!(
            myo_like > 200,
            "only {myo_like} myocardium-like background pixels"
        );
    }
}

#[test]
fn same_seed_same_output_and_subjects_independent() {
    let cfg = PhantomConfig::cardiac2d();
    let a = generate(&cfg, 3, 11).unwrap();
    let b = generate(&cfg, 3, 11).unwrap();
    assert_eq!(a, b);
    let single = generate_subject(&cfg, 11, 2).unwrap();
    assert_eq!(single, a[2]);
    assert_eq!(single.subject, "subject002");
    let c = generate(&cfg, 1, 12).unwrap();
    assert_ne!(c[0].image, a[0].image);
    assert_ne!(c[0].label, a[0].label);
}

#[test]
fn slices_keep_geometry() {
    let cfg = PhantomConfig::cardiac3d();
    let p = generate_subject(&cfg, 1, 0).unwrap();
    assert_eq!(p.image.data.shape(), &[1, 10, 128, 128]);
    let sl = p.slices_2d().unwrap();
    assert_eq!(sl.len(), 10);
    assert_eq!(sl[3].name, "subject000_slice03");
    assert_eq!(sl[3].image.data.shape(), &[1, 128, 128]);
    assert_eq!(sl[3].image.spacing(), &[1.5, 1.5]);
    let want = p.image.geometry.index_to_world([3.0, 0.0, 0.0]);
    assert_eq!(sl[3].image.geometry.origin, want);
    assert_eq!(sl[3].image.data[[0, 40, 50]], p.image.data[[0, 3, 40, 50]]);
    assert_eq!(sl[3].label.data[[0, 64, 70]], p.label.data[[0, 3, 64, 70]]);
}

#[test]
fn abdomen_has_four_organs() {
    use medseg_synth::abdomen_classes::*;
    for cfg in [PhantomConfig::abdomen2d(), PhantomConfig::abdomen3d()] {
        let subjects = generate(&cfg, 4, 5).unwrap();
        for p in &subjects {
            let classes = p.label.classes();
            assert_eq!(
                classes,
                vec![0, LIVER, SPLEEN, LEFT_KIDNEY, RIGHT_KIDNEY],
                "{}",
                p.subject
            );
            let lb = p.label.data.view().into_dimensionality::<Ix4>().unwrap();
            let d = lb.shape()[1];
            // the liver fills the first slice, the kidneys appear lower down
            assert!(
                lb.slice(s![0, 0, .., ..])
                    .iter()
                    .filter(|&&v| v == LIVER)
                    .count()
                    > 100
            );
            assert!(!lb.slice(s![0, 0, .., ..]).iter().any(|&v| v == LEFT_KIDNEY));
            // the left kidney lies right of the spine in the picture, the right kidney left
            let mut xs = [(0.0, 0usize); 5];
            for ((_, _, _, x), &v) in lb.indexed_iter() {
                xs[v as usize].0 += x as f64;
                xs[v as usize].1 += 1;
            }
            let mid = lb.shape()[3] as f64 / 2.0;
            assert!(xs[LEFT_KIDNEY as usize].0 / (xs[LEFT_KIDNEY as usize].1 as f64) > mid);
            assert!(xs[RIGHT_KIDNEY as usize].0 / (xs[RIGHT_KIDNEY as usize].1 as f64) < mid);
            assert!(xs[LIVER as usize].0 / (xs[LIVER as usize].1 as f64) < mid);
            assert!(d >= 8);
            // liver and spleen have nearly the same intensity (HU)
            let im = p.image.data.view().into_dimensionality::<Ix4>().unwrap();
            let mean = |c: u16| {
                let v: Vec<f64> = im
                    .iter()
                    .zip(lb.iter())
                    .filter(|(_, &l)| l == c)
                    .map(|(v, _)| *v as f64)
                    .collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            assert!((mean(LIVER) - mean(SPLEEN)).abs() < 40.0);
        }
    }
}

#[test]
fn invalid_config_is_an_error() {
    let mut cfg = PhantomConfig::cardiac2d();
    cfg.height = 4;
    assert!(generate(&cfg, 1, 0).is_err());
    let mut cfg = PhantomConfig::cardiac2d();
    cfg.spacing[1] = -1.0;
    assert!(generate_subject(&cfg, 0, 0).is_err());
    let mut cfg = PhantomConfig::abdomen2d();
    cfg.noise_level = (0.5, 0.1);
    assert!(cfg.validate().is_err());
}
