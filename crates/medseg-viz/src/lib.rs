#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod charts;
mod raster;

pub use charts::{
    bar_chart, box_plot, box_stats, line_chart, scatter_chart, BarSeries, BoxStats, LabelledPoint,
    Series, CHART_HEIGHT, CHART_WIDTH,
};
pub use medseg_core::{Error, Result};
pub use raster::{
    class_colour, default_window, grey_to_rgb, montage, overlay_labels, save_png, RgbImage,
    MONTAGE_BACKGROUND,
};
