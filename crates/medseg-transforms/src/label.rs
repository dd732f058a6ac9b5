//! Label transforms: value remapping, one-hot encoding and the pixel-weight
//! map of partial labels.

use crate::pipeline::{record, Transform, Validate};
use medseg_core::{Error, LabelMap, Result, Sample, DEFAULT_IGNORE_LABEL};
use ndarray::{ArrayD, Axis, IxDyn, Zip};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Remaps label values: each value of `source_list` becomes the value at the
/// same position of `target_list`; other values are kept (PyMIC's
/// `LabelConvert`). The unannotated value is kept too unless listed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConvert {
    /// Values to replace.
    pub source_list: Vec<u16>,
    /// Replacement values, same length.
    pub target_list: Vec<u16>,
}

impl Validate for LabelConvert {
    fn validate(&self) -> Result<()> {
        if self.source_list.len() != self.target_list.len() {
            return Err(Error::invalid(
                "target_list",
                format!(
                    "has {} values but source_list has {}",
                    self.target_list.len(),
                    self.source_list.len()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(d) = self.source_list.iter().find(|v| !seen.insert(**v)) {
            return Err(Error::invalid(
                "source_list",
                format!("value {d} listed twice"),
            ));
        }
        Ok(())
    }
}

impl Transform for LabelConvert {
    fn name(&self) -> &str {
        "LabelConvert"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let mut lut: Vec<u16> = (0..=u16::MAX).collect();
        for (s, t) in self.source_list.iter().zip(&self.target_list) {
            lut[*s as usize] = *t;
        }
        if let Some(l) = sample.label.as_mut() {
            l.data.par_mapv_inplace(|v| lut[v as usize]);
        }
        record(
            &mut sample,
            "LabelConvert",
            serde_json::json!({ "source_list": self.source_list, "target_list": self.target_list }),
        );
        Ok(sample)
    }
}

/// PyMIC's `LabelToProbability` as a pipeline step. medseg keeps the class
/// map in the sample, because its losses take class maps and one-hot encode
/// them themselves (leaving the unannotated value out); this step checks that
/// every label value is a class below `class_num` or the `ignore` value, so
/// that a bad label fails here, naming the case, rather than inside a loss.
/// [`label_to_probability`] builds the one-hot array where one is needed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelToProbability {
    /// Number of classes, background included.
    pub class_num: u16,
    /// The unannotated value (255 by default).
    #[serde(default = "default_ignore")]
    pub ignore: u16,
}

fn default_ignore() -> u16 {
    DEFAULT_IGNORE_LABEL
}

impl Validate for LabelToProbability {
    fn validate(&self) -> Result<()> {
        if self.class_num < 2 {
            return Err(Error::invalid("class_num", "at least 2"));
        }
        Ok(())
    }
}

impl Transform for LabelToProbability {
    fn name(&self) -> &str {
        "LabelToProbability"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        if let Some(l) = sample.label.as_ref() {
            if let Some(bad) = l
                .data
                .iter()
                .copied()
                .find(|&v| v >= self.class_num && v != self.ignore)
            {
                return Err(Error::invalid(
                    "LabelToProbability.class_num",
                    format!(
                        "{}: label value {bad} is not a class below {} nor the ignore value {}",
                        sample.name, self.class_num, self.ignore
                    ),
                ));
            }
        }
        record(
            &mut sample,
            "LabelToProbability",
            serde_json::json!({ "class_num": self.class_num, "ignore": self.ignore }),
        );
        Ok(sample)
    }
}

/// One-hot encoding `[class_num, ...spatial]` of a label map `[1, ...spatial]`;
/// voxels with the `ignore` value (unannotated) get all zeros.
///
/// # Errors
/// [`Error::InvalidValue`] (key `class_num`) naming a value that is neither
/// below `class_num` nor `ignore`.
pub fn label_to_probability(
    label: &LabelMap,
    class_num: usize,
    ignore: Option<u16>,
) -> Result<ArrayD<f32>> {
    check_classes(label, class_num, ignore)?;
    let spatial = label.spatial_shape().to_vec();
    let mut shape = vec![class_num];
    shape.extend_from_slice(&spatial);
    let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
    let lab = label.data.index_axis(Axis(0), 0);
    for (c, mut plane) in out.axis_iter_mut(Axis(0)).enumerate() {
        Zip::from(&mut plane).and(&lab).par_for_each(|o, &v| {
            if v as usize == c && Some(v) != ignore {
                *o = 1.0;
            }
        });
    }
    Ok(out)
}

fn check_classes(label: &LabelMap, class_num: usize, ignore: Option<u16>) -> Result<()> {
    if let Some(bad) = label
        .classes()
        .into_iter()
        .find(|&v| v as usize >= class_num && Some(v) != ignore)
    {
        return Err(Error::invalid(
            "class_num",
            format!("label value {bad} is not a class below {class_num} nor the unannotated value"),
        ));
    }
    Ok(())
}

/// For partial or sparse labels (PyMIC's `PartialLabelToProbability`): sets
/// the pixel-weight map to zero where the label is `ignore_label` (keeping
/// any existing weight elsewhere, 1 when there was none), after checking
/// that every other value is a class below `class_num`. The one-hot map
/// itself is made at collation by [`label_to_probability`], since a
/// [`Sample`] stores labels as an integer map.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialLabelToProbability {
    /// Number of classes (background included).
    pub class_num: usize,
    /// The unannotated value.
    #[serde(default = "default_ignore")]
    pub ignore_label: u16,
}

impl Validate for PartialLabelToProbability {
    fn validate(&self) -> Result<()> {
        if self.class_num == 0 {
            return Err(Error::invalid("class_num", "must be at least 1"));
        }
        Ok(())
    }
}

impl Transform for PartialLabelToProbability {
    fn name(&self) -> &str {
        "PartialLabelToProbability"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let label = sample.label.as_ref().ok_or_else(|| {
            Error::invalid("label", format!("{}: sample has no label", sample.name))
        })?;
        check_classes(label, self.class_num, Some(self.ignore_label))?;
        let mut w = sample
            .pixel_weight
            .take()
            .unwrap_or_else(|| ArrayD::from_elem(label.data.raw_dim(), 1.0f32));
        let ignore = self.ignore_label;
        Zip::from(&mut w).and(&label.data).par_for_each(|w, &v| {
            if v == ignore {
                *w = 0.0;
            }
        });
        sample.pixel_weight = Some(w);
        record(
            &mut sample,
            "PartialLabelToProbability",
            serde_json::json!({ "class_num": self.class_num, "ignore_label": self.ignore_label }),
        );
        Ok(sample)
    }
}
