//! Options that choose between the conventions of the reference libraries.

use serde::{Deserialize, Serialize};

/// Which voxels count as neighbours when the surface (mask minus its erosion)
/// is extracted.
///
/// Matches `scipy.ndimage.generate_binary_structure(ndim, connectivity)` as
/// used by MedPy (`connectivity=1` is [`Connectivity::Face`],
/// `connectivity=ndim` is [`Connectivity::Full`]). MONAI always uses face
/// connectivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    /// Neighbours share a face: 4 in 2D, 6 in 3D (MedPy default, MONAI).
    #[default]
    Face,
    /// Neighbours share a face, an edge or a corner: 8 in 2D, 26 in 3D
    /// (MedPy `connectivity=ndim`).
    Full,
}

/// How the 95th-percentile Hausdorff distance is formed from the two
/// directed distance sets (prediction surface to ground-truth surface and
/// back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Hd95Definition {
    /// The percentile of the union of both directed sets, as MedPy `hd95`
    /// and seg-metrics compute it.
    #[default]
    Pooled,
    /// The larger of the two directed percentiles, as MONAI
    /// `HausdorffDistanceMetric(percentile=95)` and DeepMind surface-distance
    /// compute it.
    MaxOfDirected,
}

/// How the average symmetric surface distance is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AssdDefinition {
    /// Mean of the union of both directed sets, as MedPy 0.5 `assd` and
    /// MONAI `SurfaceDistanceMetric(symmetric=True)` compute it.
    #[default]
    PooledMean,
    /// Mean of the two directed means.
    MeanOfDirectedMeans,
}

/// The value a metric takes when it is undefined because a mask (or a
/// denominator) is empty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyPolicy {
    /// Not a number (MONAI's convention for "both empty").
    Nan,
    /// Positive infinity (MONAI's Hausdorff and ASD when one mask is empty).
    Inf,
    /// Zero.
    Zero,
    /// A fixed value, for example PyMIC's 50 mm for HD95 or 20 mm for ASSD
    /// when one mask is empty, or 1.0 for MedPy's `jc` of two empty masks.
    Cap(f64),
}

impl EmptyPolicy {
    /// The value this policy stands for.
    pub fn value(self) -> f64 {
        match self {
            EmptyPolicy::Nan => f64::NAN,
            EmptyPolicy::Inf => f64::INFINITY,
            EmptyPolicy::Zero => 0.0,
            EmptyPolicy::Cap(v) => v,
        }
    }
}

/// Policies for a distance metric when one or both masks are empty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmptyPolicies {
    /// Exactly one of prediction and ground truth is empty.
    pub one_empty: EmptyPolicy,
    /// Both are empty.
    pub both_empty: EmptyPolicy,
}

impl EmptyPolicies {
    /// The value to report for a pair with `n_pred` and `n_gt` surface
    /// voxels, or `None` when both are non-empty and the metric is defined.
    pub fn resolve(&self, n_pred: usize, n_gt: usize) -> Option<f64> {
        match (n_pred == 0, n_gt == 0) {
            (true, true) => Some(self.both_empty.value()),
            (true, false) | (false, true) => Some(self.one_empty.value()),
            (false, false) => None,
        }
    }
}

/// Everything that chooses a convention in [`crate::evaluate_case`].
///
/// The default uses MedPy's definitions (pooled HD95, pooled ASSD, face
/// connectivity) with MONAI's empty-mask values (infinity when one mask is
/// empty, NaN when both are). [`MetricOptions::medpy`] and
/// [`MetricOptions::monai`] reproduce each library's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricOptions {
    /// Neighbourhood used to extract surfaces.
    pub connectivity: Connectivity,
    /// Definition of HD95 (the percentile is [`MetricOptions::percentile`]).
    pub hd95: Hd95Definition,
    /// Percentile for the "HD95" value, in `[0, 100]` (95 by default),
    /// interpolated linearly between order statistics as `numpy.percentile`
    /// and `torch.quantile` do.
    pub percentile: f64,
    /// Definition of ASSD.
    pub assd: AssdDefinition,
    /// Tolerance in mm for the normalised surface Dice (MONAI
    /// `compute_surface_dice` `class_thresholds`): a surface voxel counts as
    /// correct when its distance to the other surface is `<=` the tolerance.
    pub nsd_tolerance_mm: f64,
    /// Values of Hausdorff, HD95, ASD and ASSD when masks are empty.
    pub distance_empty: EmptyPolicies,
    /// Values of the normalised surface Dice when masks are empty (MONAI:
    /// 0 when one is empty, NaN when both are).
    pub nsd_empty: EmptyPolicies,
    /// Value of an overlap ratio whose denominator is zero: Dice, IoU and
    /// volume similarity of two empty masks, precision without predicted
    /// voxels, recall without ground-truth voxels, specificity without
    /// negatives, relative volume error without ground truth. MedPy 0.5.2
    /// under NumPy 2 gives NaN for all of these except `jc` (1.0).
    pub overlap_zero_division: EmptyPolicy,
    /// Compute the surface-distance metrics at all (they are NaN when off).
    pub surface_distances: bool,
}

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions {
            connectivity: Connectivity::Face,
            hd95: Hd95Definition::Pooled,
            percentile: 95.0,
            assd: AssdDefinition::PooledMean,
            nsd_tolerance_mm: 1.0,
            distance_empty: EmptyPolicies {
                one_empty: EmptyPolicy::Inf,
                both_empty: EmptyPolicy::Nan,
            },
            nsd_empty: EmptyPolicies {
                one_empty: EmptyPolicy::Zero,
                both_empty: EmptyPolicy::Nan,
            },
            overlap_zero_division: EmptyPolicy::Nan,
            surface_distances: true,
        }
    }
}

impl MetricOptions {
    /// MedPy 0.5.2 conventions: pooled HD95, pooled ASSD, face connectivity.
    /// MedPy raises on empty masks; here those distances are NaN.
    pub fn medpy() -> Self {
        MetricOptions {
            distance_empty: EmptyPolicies {
                one_empty: EmptyPolicy::Nan,
                both_empty: EmptyPolicy::Nan,
            },
            ..MetricOptions::default()
        }
    }

    /// MONAI 1.6 conventions: HD95 as the larger directed percentile, pooled
    /// ASSD (`symmetric=True`), face connectivity, infinity when one mask is
    /// empty and NaN when both are. (MONAI's HD95 itself comes out NaN when
    /// one mask is empty, an artefact of interpolating between infinities;
    /// the Hausdorff distance and ASD come out infinite.)
    pub fn monai() -> Self {
        MetricOptions {
            hd95: Hd95Definition::MaxOfDirected,
            ..MetricOptions::default()
        }
    }

    /// Checks that the numbers in the options are in range.
    pub fn validate(&self) -> crate::Result<()> {
        if !(0.0..=100.0).contains(&self.percentile) {
            return Err(crate::MetricsError::InvalidOption(format!(
                "percentile must lie in [0, 100], got {}",
                self.percentile
            )));
        }
        if !self.nsd_tolerance_mm.is_finite() || self.nsd_tolerance_mm < 0.0 {
            return Err(crate::MetricsError::InvalidOption(format!(
                "nsd_tolerance_mm must be finite and >= 0, got {}",
                self.nsd_tolerance_mm
            )));
        }
        Ok(())
    }
}
