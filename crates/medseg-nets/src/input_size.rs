//! The spatial sizes a network accepts, so that inference can pad any image
//! to an acceptable size and crop the prediction back (as nnU-Net and
//! MONAI's `DivisiblePad` do), instead of failing inside a pooling layer.

/// Spatial sizes a network accepts, per spatial axis in array order
/// (`[H, W]` or `[D, H, W]`): each size must be a multiple of
/// `multiple[i]`, at least `minimum[i]` and, where `maximum` is given, at
/// most `maximum[i]` (networks whose learnt position embeddings fix the
/// input size, such as UNETR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSize {
    /// Each size must be a multiple of this (1: any size).
    pub multiple: Vec<usize>,
    /// Each size must be at least this.
    pub minimum: Vec<usize>,
    /// Each size must be at most this (`None`: no upper bound).
    pub maximum: Option<Vec<usize>>,
}

impl InputSize {
    /// Any size of `dims` spatial axes.
    pub fn any(dims: usize) -> Self {
        InputSize {
            multiple: vec![1; dims],
            minimum: vec![1; dims],
            maximum: None,
        }
    }

    /// Exactly `sizes` (smaller inputs are padded up to it; larger ones
    /// need a sliding window of this size).
    pub fn exact(sizes: &[usize]) -> Self {
        InputSize {
            multiple: sizes.to_vec(),
            minimum: sizes.to_vec(),
            maximum: Some(sizes.to_vec()),
        }
    }

    /// `poolings` halvings along every one of `dims` axes: sizes that are
    /// multiples of `2^poolings`.
    pub fn pooled(dims: usize, poolings: usize) -> Self {
        let m = 1usize << poolings;
        InputSize {
            multiple: vec![m; dims],
            minimum: vec![m; dims],
            maximum: None,
        }
    }

    /// The constraint for an input of `rank` spatial axes: a 2D network
    /// given a volume folds depth into the batch, so leading axes beyond the
    /// network's own accept any size.
    pub fn for_rank(&self, rank: usize) -> InputSize {
        let own = self.multiple.len();
        if rank <= own {
            return InputSize {
                multiple: self.multiple[own - rank..].to_vec(),
                minimum: self.minimum[own - rank..].to_vec(),
                maximum: self.maximum.as_ref().map(|m| m[own - rank..].to_vec()),
            };
        }
        let mut out = InputSize::any(rank - own);
        out.multiple.extend(&self.multiple);
        out.minimum.extend(&self.minimum);
        out.maximum = self.maximum.as_ref().map(|m| {
            let mut v = vec![usize::MAX; rank - own];
            v.extend(m);
            v
        });
        out
    }

    /// The smallest accepted size at least `shape`, axis by axis (`shape`
    /// has as many axes as `self`).
    pub fn fit(&self, shape: &[usize]) -> Vec<usize> {
        shape
            .iter()
            .zip(self.multiple.iter().zip(&self.minimum))
            .map(|(&s, (&m, &lo))| {
                let m = m.max(1);
                s.max(lo).div_ceil(m) * m
            })
            .collect()
    }

    /// The accepted size [`fit`](Self::fit) gives, or, when `shape`
    /// exceeds the maximum along some axis, an error naming it.
    pub fn fit_within(&self, shape: &[usize]) -> std::result::Result<Vec<usize>, String> {
        let want = self.fit(shape);
        if let Some(max) = &self.maximum {
            if want.iter().zip(max).any(|(w, m)| w > m) {
                let shown: Vec<String> = max
                    .iter()
                    .map(|m| {
                        if *m == usize::MAX {
                            "any".to_string()
                        } else {
                            m.to_string()
                        }
                    })
                    .collect();
                return Err(format!(
                    "the network accepts inputs of at most [{}] (its position embeddings fix the size), got {shape:?}; predict with a sliding window of that size",
                    shown.join(", ")
                ));
            }
        }
        Ok(want)
    }

    /// Whether `shape` is accepted as it is.
    pub fn accepts(&self, shape: &[usize]) -> bool {
        self.fit(shape) == shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_rounds_up_to_the_multiple_and_the_minimum() {
        let c = InputSize {
            multiple: vec![16, 32],
            minimum: vec![16, 192],
            maximum: None,
        };
        assert_eq!(c.fit(&[1, 1]), vec![16, 192]);
        assert_eq!(c.fit(&[17, 200]), vec![32, 224]);
        assert_eq!(c.fit(&[32, 224]), vec![32, 224]);
        assert!(c.accepts(&[48, 192]));
        assert!(!c.accepts(&[47, 192]));
    }

    #[test]
    fn a_2d_constraint_leaves_depth_free() {
        let c = InputSize::pooled(2, 4).for_rank(3);
        assert_eq!(c.multiple, vec![1, 16, 16]);
        assert_eq!(c.fit(&[5, 20, 16]), vec![5, 32, 16]);
        assert_eq!(InputSize::pooled(3, 2).for_rank(2).multiple, vec![4, 4]);
    }

    #[test]
    fn an_exact_size_pads_smaller_inputs_and_refuses_larger_ones() {
        let c = InputSize::exact(&[32, 48]);
        assert_eq!(c.fit_within(&[5, 48]).unwrap(), vec![32, 48]);
        let e = c.fit_within(&[33, 10]).unwrap_err();
        assert!(
            e.contains("at most [32, 48]") && e.contains("[33, 10]"),
            "{e}"
        );
        let v = c.for_rank(3);
        assert_eq!(v.fit_within(&[7, 1, 1]).unwrap(), vec![7, 32, 48]);
        assert!(v
            .fit_within(&[7, 1, 49])
            .unwrap_err()
            .contains("[any, 32, 48]"));
    }
}
