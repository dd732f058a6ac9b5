//! Turning class scores into label maps, and keeping the largest component.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};

/// Which connected components to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LargestComponentMode {
    /// Keep the largest component of each foreground class separately.
    PerClass,
    /// Keep the largest component of the union of foreground classes; the
    /// classes inside it are kept as they are.
    Union,
}

/// The class of highest score at each voxel: `[K, ...spatial]` to
/// `[...spatial]`. Ties go to the lower class.
pub fn argmax(scores: ArrayViewD<f32>) -> ArrayD<u16> {
    let k = scores.shape()[0];
    let spatial = &scores.shape()[1..];
    let mut best = scores.index_axis(Axis(0), 0).to_owned();
    let mut out = ArrayD::<u16>::zeros(IxDyn(spatial));
    for c in 1..k {
        let plane = scores.index_axis(Axis(0), c);
        ndarray::Zip::from(&mut out)
            .and(&mut best)
            .and(&plane)
            .for_each(|o, b, &v| {
                if v > *b {
                    *b = v;
                    *o = c as u16;
                }
            });
    }
    out
}

/// Labels the face-connected components of `mask` (2D or 3D). Returns the
/// component id per voxel (0 outside the mask, 1.. inside) and each
/// component's size (index 0 unused).
pub fn label_components(mask: ArrayViewD<bool>) -> (ArrayD<u32>, Vec<usize>) {
    let shape = mask.shape().to_vec();
    let nd = shape.len();
    let mut strides = vec![1usize; nd];
    for a in (0..nd.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let m: Vec<bool> = mask.iter().copied().collect();
    let mut lab = vec![0u32; m.len()];
    let mut sizes = vec![0usize];
    let mut stack = Vec::new();
    let mut coord = vec![0usize; nd];
    for start in 0..m.len() {
        if !m[start] || lab[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0;
        lab[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let mut r = i;
            for a in 0..nd {
                coord[a] = r / strides[a];
                r %= strides[a];
            }
            for a in 0..nd {
                if coord[a] > 0 {
                    let j = i - strides[a];
                    if m[j] && lab[j] == 0 {
                        lab[j] = id;
                        stack.push(j);
                    }
                }
                if coord[a] + 1 < shape[a] {
                    let j = i + strides[a];
                    if m[j] && lab[j] == 0 {
                        lab[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        sizes.push(size);
    }
    (
        ArrayD::from_shape_vec(IxDyn(&shape), lab).expect("same number of voxels"),
        sizes,
    )
}

fn keep_largest(mask: ArrayViewD<bool>) -> ArrayD<bool> {
    let (lab, sizes) = label_components(mask.clone());
    let Some((best, _)) = sizes
        .iter()
        .enumerate()
        .skip(1)
        .max_by_key(|(i, s)| (**s, usize::MAX - i))
    else {
        return mask.to_owned();
    };
    lab.mapv(|l| l == best as u32)
}

/// Keeps the largest connected component (face connectivity) of each class
/// or of the foreground union; removed voxels become background (0).
pub fn keep_largest_component(labels: &ArrayD<u16>, mode: LargestComponentMode) -> ArrayD<u16> {
    let mut out = labels.clone();
    match mode {
        LargestComponentMode::Union => {
            let keep = keep_largest(labels.mapv(|v| v > 0).view());
            ndarray::Zip::from(&mut out).and(&keep).for_each(|o, &k| {
                if !k {
                    *o = 0
                }
            });
        }
        LargestComponentMode::PerClass => {
            let max = labels.iter().copied().max().unwrap_or(0);
            for c in 1..=max {
                let mask = labels.mapv(|v| v == c);
                if !mask.iter().any(|&b| b) {
                    continue;
                }
                let keep = keep_largest(mask.view());
                ndarray::Zip::from(&mut out)
                    .and(&mask)
                    .and(&keep)
                    .for_each(|o, &m, &k| {
                        if m && !k {
                            *o = 0
                        }
                    });
            }
        }
    }
    out
}

/// One label map from per-class experts: each entry `(class, scores)` is a
/// model trusted for `class` alone (e.g. in a federation with partial
/// labels, the personalised model of the site that outlined that organ),
/// with its class scores `[K, ...spatial]`. A voxel goes to an expert's
/// class where that expert's own [`argmax`] is its class; where several
/// experts claim a voxel, the one with the highest score for its class wins
/// (ties to the earlier expert); voxels no expert claims are background
/// (0). There is no threshold to choose. Errors: no expert, score arrays of
/// different shapes, or a class outside `1..K`.
pub fn compose_experts(experts: &[(u16, ArrayViewD<f32>)]) -> crate::Result<ArrayD<u16>> {
    let Some((_, first)) = experts.first() else {
        return Err(crate::InferError::Shape(
            "compose_experts: no expert".into(),
        ));
    };
    let shape = first.shape().to_vec();
    let k = shape[0];
    for (i, (c, s)) in experts.iter().enumerate() {
        if s.shape() != shape.as_slice() {
            return Err(crate::InferError::Shape(format!(
                "compose_experts: expert {i} has scores {:?}, expert 0 {:?}",
                s.shape(),
                shape
            )));
        }
        if *c == 0 || *c as usize >= k {
            return Err(crate::InferError::Invalid {
                key: format!("expert {i} class"),
                message: format!("{c} is not a foreground class of {k} classes"),
            });
        }
    }
    let spatial = &shape[1..];
    let mut out = ArrayD::<u16>::zeros(IxDyn(spatial));
    let mut best = ArrayD::<f32>::from_elem(IxDyn(spatial), f32::NEG_INFINITY);
    for (c, s) in experts {
        let own = argmax(s.view());
        let score = s.index_axis(Axis(0), *c as usize);
        ndarray::Zip::from(&mut out)
            .and(&mut best)
            .and(&own)
            .and(&score)
            .for_each(|o, b, &a, &v| {
                if a == *c && v > *b {
                    *b = v;
                    *o = *c;
                }
            });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn experts_claim_their_class_and_the_surest_wins() {
        // three classes; expert A for class 1, expert B for class 2
        // voxel 0: A argmax 1 (0.6), B argmax 0 -> 1
        // voxel 1: A argmax 1 (0.5), B argmax 2 (0.7) -> 2 (surer)
        // voxel 2: A argmax 2 (not its class), B argmax 0 -> 0
        // voxel 3: A argmax 1 (0.4), B argmax 2 (0.4) -> 1 (tie: earlier)
        let a = array![
            [0.3f32, 0.2, 0.3, 0.3],
            [0.6, 0.5, 0.1, 0.4],
            [0.1, 0.3, 0.6, 0.3]
        ];
        let b = array![
            [0.8f32, 0.2, 0.7, 0.3],
            [0.1, 0.1, 0.2, 0.3],
            [0.1, 0.7, 0.1, 0.4]
        ];
        let (a, b) = (a.into_dyn(), b.into_dyn());
        let out = compose_experts(&[(1, a.view()), (2, b.view())]).unwrap();
        assert_eq!(out, array![1u16, 2, 0, 1].into_dyn());
        // B's class 1 score is never used: the same map with B saying class 1
        // everywhere gives the same result
        let mut b2 = b.clone();
        b2.index_axis_mut(Axis(0), 1).fill(0.05);
        let out2 = compose_experts(&[(1, a.view()), (2, b2.view())]).unwrap();
        assert_eq!(out2, out);
        // errors: no expert, background or out-of-range class, shapes differ
        assert!(compose_experts(&[]).is_err());
        assert!(compose_experts(&[(0, a.view())]).is_err());
        assert!(compose_experts(&[(3, a.view())]).is_err());
        let c = ArrayD::<f32>::zeros(IxDyn(&[3, 5]));
        assert!(compose_experts(&[(1, a.view()), (2, c.view())]).is_err());
    }

    #[test]
    fn argmax_picks_highest_and_lower_on_ties() {
        let s = array![
            [[0.1f32, 0.5], [0.3, 0.2]],
            [[0.9, 0.5], [0.1, 0.2]],
            [[0.0, 0.0], [0.6, 0.2]]
        ]
        .into_dyn();
        assert_eq!(argmax(s.view()), array![[1u16, 0], [2, 0]].into_dyn());
    }

    #[test]
    fn components_face_connectivity() {
        // diagonal neighbours are separate components
        let m = array![
            [true, false, true],
            [false, true, false],
            [true, true, false]
        ]
        .into_dyn();
        let (lab, sizes) = label_components(m.view());
        assert_eq!(sizes.len() - 1, 3);
        assert_eq!(lab[[1, 1]], lab[[2, 1]]);
        assert_ne!(lab[[0, 0]], lab[[1, 1]]);
        assert_eq!(sizes.iter().skip(1).sum::<usize>(), 5);
    }

    #[test]
    fn largest_component_per_class_and_union() {
        let l = array![
            [1u16, 1, 0, 2, 0],
            [1, 1, 0, 2, 0],
            [0, 0, 0, 0, 0],
            [1, 0, 2, 2, 2],
            [0, 0, 2, 2, 2]
        ]
        .into_dyn();
        let per = keep_largest_component(&l, LargestComponentMode::PerClass);
        assert_eq!(
            per,
            array![
                [1u16, 1, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [0, 0, 0, 0, 0],
                [0, 0, 2, 2, 2],
                [0, 0, 2, 2, 2]
            ]
            .into_dyn()
        );
        let uni = keep_largest_component(&l, LargestComponentMode::Union);
        assert_eq!(uni[[3, 2]], 2);
        assert_eq!(uni[[0, 0]], 0);
        assert_eq!(uni[[0, 3]], 0);
        // 3D: two blobs, keep the bigger one
        let mut v = ArrayD::<u16>::zeros(IxDyn(&[4, 4, 4]));
        v[[0, 0, 0]] = 3;
        for i in 2..4 {
            for j in 2..4 {
                v[[i, j, 3]] = 3;
            }
        }
        let k = keep_largest_component(&v, LargestComponentMode::PerClass);
        assert_eq!(k[[0, 0, 0]], 0);
        assert_eq!(k.iter().filter(|&&x| x == 3).count(), 4);
    }
}
