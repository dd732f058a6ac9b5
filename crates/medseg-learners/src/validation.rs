//! Validation during training: the validation cases prepared once, predicted
//! with the same sliding window users predict with (medseg-infer) and scored
//! with medseg-metrics.

use crate::error::{LearnError, Result};
use medseg_core::Sample;
use medseg_infer::{argmax, Predictor};
use medseg_io::{Dataset, LabelledDataset, Manifest};
use medseg_metrics::{confusion, EmptyPolicy};
use medseg_transforms::{invert_prediction, Mode, Pipeline};
use ndarray::ArrayD;
use rand::SeedableRng;

/// Scores one prediction against its label: Dice per foreground class
/// `1..class_num`, computed by [`medseg_metrics::confusion`]. Pixels whose
/// label is `ignore` are left out; a class absent from both prediction and
/// label scores 1 (PyMIC's smoothed Dice gives the same).
///
/// # Errors
/// When the two maps differ in shape.
pub fn dice_per_class(
    pred: &ArrayD<u16>,
    gt: &ArrayD<u16>,
    class_num: usize,
    ignore: u16,
) -> Result<Vec<f64>> {
    // an ignored pixel is given the ignore value in the prediction too, so
    // that it counts for no class
    let masked;
    let pred = if gt.iter().any(|&g| g == ignore) && pred.shape() == gt.shape() {
        let mut p = pred.clone();
        ndarray::Zip::from(&mut p).and(gt).for_each(|p, &g| {
            if g == ignore {
                *p = ignore;
            }
        });
        masked = p;
        &masked
    } else {
        pred
    };
    (1..class_num as u16)
        .map(|c| {
            confusion(pred.view(), gt.view(), c)
                .map(|k| k.dice(EmptyPolicy::Cap(1.0)))
                .map_err(|e| LearnError::Other(format!("scoring class {c}: {e}")))
        })
        .collect()
}

/// Validation data prepared once: transformed images and original labels.
pub struct ValidationSet {
    cases: Vec<(Sample, ArrayD<u16>)>,
}

impl ValidationSet {
    /// Loads every case of `manifest` and applies the test pipeline.
    /// Label values must be classes `0..class_num` or `ignore`.
    pub fn load(
        manifest: Manifest,
        pipeline: &Pipeline,
        class_num: usize,
        ignore: u16,
    ) -> Result<Self> {
        let ds = LabelledDataset::new(manifest)?;
        let mut cases = Vec::with_capacity(ds.len());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for i in 0..ds.len() {
            let s = ds.get(i)?;
            let gt = s
                .label
                .as_ref()
                .ok_or_else(|| {
                    LearnError::Other(format!("validation case {} has no label", s.name))
                })?
                .data
                .index_axis(ndarray::Axis(0), 0)
                .to_owned();
            crate::collate::check_label_range(&s, class_num, ignore).map_err(LearnError::Other)?;
            let t = pipeline.apply_in(s, &mut rng, Mode::Inference)?;
            cases.push((t, gt));
        }
        Ok(ValidationSet { cases })
    }

    /// Number of cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// True when there is no case.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// Mean Dice per class over the cases, predicted by `predictor`.
    pub fn evaluate(
        &self,
        predictor: &Predictor,
        class_num: usize,
        ignore: u16,
    ) -> Result<Vec<f64>> {
        let mut sums = vec![0.0; class_num - 1];
        for (s, gt) in &self.cases {
            let probs = predictor.predict(s.image.data.view())?;
            let probs = invert_prediction(&s.history, probs)?;
            let pred = argmax(probs.view());
            if pred.shape() != gt.shape() {
                return Err(LearnError::Other(format!(
                    "{}: prediction shape {:?} differs from label shape {:?}",
                    s.name,
                    pred.shape(),
                    gt.shape()
                )));
            }
            for (a, d) in sums
                .iter_mut()
                .zip(dice_per_class(&pred, gt, class_num, ignore)?)
            {
                *a += d;
            }
        }
        let n = self.cases.len().max(1) as f64;
        Ok(sums.into_iter().map(|s| s / n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition written out: 2 TP / (|P| + |G|) over pixels whose label
    /// is not `ignore`, 1 when the class is in neither.
    fn by_hand(p: &[u16], g: &[u16], c: u16, ignore: u16) -> f64 {
        let (mut tp, mut np, mut ng) = (0.0, 0.0, 0.0);
        for (&a, &b) in p.iter().zip(g) {
            if b == ignore {
                continue;
            }
            tp += f64::from(u8::from(a == c && b == c));
            np += f64::from(u8::from(a == c));
            ng += f64::from(u8::from(b == c));
        }
        if np + ng == 0.0 {
            1.0
        } else {
            2.0 * tp / (np + ng)
        }
    }

    #[test]
    fn dice_per_class_matches_the_definition_with_ignored_pixels() {
        let g = vec![0u16, 1, 1, 2, 255, 255, 1, 0, 2, 0, 0, 1];
        let p = vec![0u16, 1, 2, 2, 1, 2, 1, 1, 0, 0, 0, 1];
        let ga = ArrayD::from_shape_vec(vec![3, 4], g.clone()).unwrap();
        let pa = ArrayD::from_shape_vec(vec![3, 4], p.clone()).unwrap();
        let d = dice_per_class(&pa, &ga, 4, 255).unwrap();
        for c in 1..4u16 {
            assert_eq!(d[c as usize - 1], by_hand(&p, &g, c, 255), "class {c}");
        }
        // class 3 is absent from both: 1
        assert_eq!(d[2], 1.0);
        // the ignored pixels are left out: class 1 is 2*3/(4+4), not 2*3/(5+4)
        assert_eq!(d[0], 0.75);
        let bad = ArrayD::from_shape_vec(vec![4, 3], p).unwrap();
        assert!(dice_per_class(&bad, &ga, 4, 255).is_err());
    }
}
