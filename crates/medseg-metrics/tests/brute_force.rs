//! The EDT and the surface distances against brute force on random masks
//! (2D and 3D, anisotropic spacing, masks touching the border).

use medseg_metrics::{distance_transform, surface_distances_masks, Connectivity};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_mask(rng: &mut ChaCha8Rng, shape: &[usize], density: f64) -> ArrayD<bool> {
    let n: usize = shape.iter().product();
    let v: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < density).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn coords(shape: &[usize], flat: usize) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    let mut r = flat;
    for a in (0..shape.len()).rev() {
        out[a] = r % shape[a];
        r /= shape[a];
    }
    out
}

fn dist(a: &[usize], b: &[usize], spacing: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(spacing)
        .map(|((&x, &y), s)| (s * (x as f64 - y as f64)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Mask voxels with a neighbour outside the mask or outside the image.
fn brute_surface(mask: &ArrayD<bool>, full: bool) -> Vec<Vec<usize>> {
    let shape = mask.shape().to_vec();
    let nd = shape.len();
    let mut out = Vec::new();
    for (flat, &m) in mask.iter().enumerate() {
        if !m {
            continue;
        }
        let c = coords(&shape, flat);
        let mut on_surface = false;
        for code in 0..3usize.pow(nd as u32) {
            let mut off = vec![0isize; nd];
            let mut k = code;
            for o in off.iter_mut() {
                *o = (k % 3) as isize - 1;
                k /= 3;
            }
            let nz = off.iter().filter(|&&o| o != 0).count();
            if nz == 0 || (!full && nz > 1) {
                continue;
            }
            let n: Vec<isize> = c.iter().zip(&off).map(|(&x, &o)| x as isize + o).collect();
            let inside = n
                .iter()
                .zip(&shape)
                .all(|(&x, &s)| x >= 0 && (x as usize) < s);
            if !inside {
                on_surface = true;
                break;
            }
            let idx: Vec<usize> = n.iter().map(|&x| x as usize).collect();
            if !mask[IxDyn(&idx)] {
                on_surface = true;
                break;
            }
        }
        if on_surface {
            out.push(c);
        }
    }
    out
}

fn directed(from: &[Vec<usize>], to: &[Vec<usize>], spacing: &[f64]) -> Vec<f64> {
    from.iter()
        .map(|a| {
            to.iter()
                .map(|b| dist(a, b, spacing))
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn assert_close_sets(ours: Vec<f64>, brute: Vec<f64>, what: &str) {
    let (a, b) = (sorted(ours), sorted(brute));
    assert_eq!(a.len(), b.len(), "{what}: set sizes");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-12 * y.max(1.0), "{what}: {x} vs {y}");
    }
}

#[test]
fn edt_matches_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cases: Vec<(Vec<usize>, Vec<f64>)> = vec![
        (vec![37], vec![0.3]),
        (vec![13, 17], vec![1.0, 1.0]),
        (vec![19, 11], vec![0.7, 2.3]),
        (vec![7, 9, 11], vec![2.5, 0.8, 0.9]),
        (vec![5, 12, 6], vec![0.5, 1.5, 3.0]),
    ];
    for (shape, spacing) in cases {
        for density in [0.0, 0.003, 0.05, 0.4, 1.0] {
            let f = random_mask(&mut rng, &shape, density);
            let d = distance_transform(f.view(), &spacing).unwrap();
            let feats: Vec<Vec<usize>> = f
                .iter()
                .enumerate()
                .filter(|(_, &x)| x)
                .map(|(i, _)| coords(&shape, i))
                .collect();
            for (i, &ours) in d.iter().enumerate() {
                let c = coords(&shape, i);
                let brute = feats
                    .iter()
                    .map(|p| dist(&c, p, &spacing))
                    .fold(f64::INFINITY, f64::min);
                if brute.is_infinite() {
                    assert!(ours.is_infinite());
                } else {
                    assert!(
                        (ours - brute).abs() <= 1e-12 * brute.max(1.0),
                        "{shape:?} {spacing:?} density {density} at {c:?}: {ours} vs {brute}"
                    );
                }
            }
        }
    }
}

#[test]
fn edt_single_feature_gives_closed_form() {
    let mut f = ArrayD::from_elem(IxDyn(&[4, 5, 6]), false);
    f[IxDyn(&[1, 2, 3])] = true;
    let d = distance_transform(f.view(), &[3.0, 2.0, 0.5]).unwrap();
    let want = ((3.0f64 * 2.0).powi(2) + (2.0f64 * 2.0).powi(2) + (0.5f64 * 3.0).powi(2)).sqrt();
    assert!((d[IxDyn(&[3, 0, 0])] - want).abs() < 1e-12);
}

#[test]
fn surface_distances_match_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let cases: Vec<(Vec<usize>, Vec<f64>)> = vec![
        (vec![23], vec![1.7]),
        (vec![14, 16], vec![0.6, 1.9]),
        (vec![6, 9, 8], vec![2.0, 0.7, 1.1]),
    ];
    for (shape, spacing) in &cases {
        for density in [0.08, 0.5, 0.9] {
            let p = random_mask(&mut rng, shape, density);
            let g = random_mask(&mut rng, shape, density);
            for (conn, full) in [(Connectivity::Face, false), (Connectivity::Full, true)] {
                let sd = surface_distances_masks(p.view(), g.view(), spacing, conn).unwrap();
                let sp = brute_surface(&p, full);
                let sg = brute_surface(&g, full);
                let what = format!("{shape:?} density {density} {conn:?}");
                assert_close_sets(sd.pred_to_gt.clone(), directed(&sp, &sg, spacing), &what);
                assert_close_sets(sd.gt_to_pred.clone(), directed(&sg, &sp, spacing), &what);
            }
        }
    }
}

#[test]
fn strided_views_give_the_same_distances() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let p = random_mask(&mut rng, &[8, 10, 12], 0.3);
    let g = random_mask(&mut rng, &[8, 10, 12], 0.3);
    let spacing = [1.0, 2.0, 3.0];
    // reversed axes: a non-standard layout of the transposed arrays
    let pt = p.view().reversed_axes();
    let gt = g.view().reversed_axes();
    let owned_p = pt.to_owned();
    let owned_g = gt.to_owned();
    let rs = [3.0, 2.0, 1.0];
    let a = surface_distances_masks(pt, gt, &rs, Connectivity::Face).unwrap();
    let b =
        surface_distances_masks(owned_p.view(), owned_g.view(), &rs, Connectivity::Face).unwrap();
    assert_eq!(a, b);
    // and the transposition with transposed spacing gives the same sets
    let c = surface_distances_masks(p.view(), g.view(), &spacing, Connectivity::Face).unwrap();
    assert_close_sets(a.pred_to_gt, c.pred_to_gt, "transposed");
}
