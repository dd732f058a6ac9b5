#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod edt;
mod error;
mod evaluate;
mod label;
mod options;
mod overlap;
pub mod report;
mod stats;
mod surface;
mod util;

pub use edt::distance_transform;
pub use error::{MetricsError, Result};
pub use evaluate::{evaluate_case, evaluate_foreground, ClassMetrics};
pub use label::{labels_present, LabelValue};
pub use options::{
    AssdDefinition, Connectivity, EmptyPolicies, EmptyPolicy, Hd95Definition, MetricOptions,
};
pub use overlap::{confusion, dice, Counts};
pub use report::{
    mean_std, metric_value, pair_by_file_name, CaseMetrics, CasePair, ColumnStats, MetricTable,
    METRIC_NAMES,
};
pub use stats::percentile;
pub use surface::{surface_distances, surface_distances_masks, SurfaceDistances};
