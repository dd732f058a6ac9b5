//! Line charts, box plots and grouped bar charts drawn with plotters into an
//! in-memory bitmap, then written with [`crate::save_png`].

use crate::raster::{class_colour, save_png, RgbImage};
use medseg_core::{Error, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::Once;

/// Width of every chart, in pixels.
pub const CHART_WIDTH: usize = 800;
/// Height of every chart, in pixels.
pub const CHART_HEIGHT: usize = 500;

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
static REGISTER: Once = Once::new();
const FONT: &str = "sans-serif";

/// Registers the embedded DejaVu Sans Mono font with plotters under the
/// family names charts use. Idempotent.
fn ensure_font() {
    REGISTER.call_once(|| {
        for name in [FONT, "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                // The embedded font is a valid TrueType file; a failure here
                // only means text is not drawn, never a panic.
                let _ = plotters::style::register_font(name, style, FONT_BYTES);
            }
        }
    });
}

/// The colour of series `i` (the overlay palette, skipping class 0).
fn series_colour(i: usize) -> RGBColor {
    let c = class_colour((i % 12) as u16 + 1);
    RGBColor(c[0], c[1], c[2])
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: drawing chart: {e}", path.display()))
}

/// A range `[lo, hi]` with a margin of `frac` of its width on both sides,
/// widened to unit width when degenerate or empty.
fn padded_range(values: impl Iterator<Item = f64>, frac: f64) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        return (lo - 0.5, hi + 0.5);
    }
    let m = (hi - lo) * frac;
    (lo - m, hi + m)
}

/// Draws into a white `CHART_WIDTH x CHART_HEIGHT` buffer and saves it.
fn render<F>(path: &Path, draw: F) -> Result<()>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
{
    ensure_font();
    let mut buf = vec![255u8; CHART_WIDTH * CHART_HEIGHT * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (CHART_WIDTH as u32, CHART_HEIGHT as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        draw(&root)?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(
        path,
        &RgbImage {
            width: CHART_WIDTH,
            height: CHART_HEIGHT,
            pixels: buf,
        },
    )
}

/// One named curve of a [`line_chart`]: `(x, y)` points in drawing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points `(x, y)`; non-finite points are skipped (the curve is broken there).
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` as coloured lines with a legend and axis labels, and writes
/// an 800 x 500 PNG to `path` (temporary file + rename). Non-finite points
/// are skipped; with no finite point at all the axes span `[0, 1]`.
///
/// # Errors
/// [`Error::Other`] when drawing fails, [`Error::Io`] on file errors.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let (x0, x1) = padded_range(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite).map(|p| p.0)),
        0.0,
    );
    let (y0, y1) = padded_range(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite).map(|p| p.1)),
        0.05,
    );
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, s) in series.iter().enumerate() {
            let colour = series_colour(i);
            // Break the curve at non-finite points.
            let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for p in &s.points {
                if p.0.is_finite() && p.1.is_finite() {
                    if let Some(last) = segments.last_mut() {
                        last.push(*p);
                    }
                } else if segments.last().is_some_and(|l| !l.is_empty()) {
                    segments.push(Vec::new());
                }
            }
            for (k, seg) in segments.into_iter().enumerate() {
                let ann = chart
                    .draw_series(LineSeries::new(seg, colour.stroke_width(2)))
                    .map_err(|e| plot_err(path, e))?;
                if k == 0 {
                    ann.label(s.name.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                }
            }
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }
        Ok(())
    })
}

/// Five-number summary with Tukey whiskers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxStats {
    /// First quartile (linear interpolation, as numpy's default percentile).
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// Smallest value at or above `q1 - 1.5 IQR`.
    pub whisker_lo: f64,
    /// Largest value at or below `q3 + 1.5 IQR`.
    pub whisker_hi: f64,
}

fn percentile_f64(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Box-plot statistics of the finite values of `values` (`None` when none is
/// finite). Quartiles interpolate linearly, as numpy's default percentile.
pub fn box_stats(values: &[f64]) -> Option<BoxStats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q1 = percentile_f64(&v, 25.0);
    let median = percentile_f64(&v, 50.0);
    let q3 = percentile_f64(&v, 75.0);
    let iqr = q3 - q1;
    let whisker_lo = v
        .iter()
        .copied()
        .find(|&x| x >= q1 - 1.5 * iqr)
        .unwrap_or(q1);
    let whisker_hi = v
        .iter()
        .rev()
        .copied()
        .find(|&x| x <= q3 + 1.5 * iqr)
        .unwrap_or(q3);
    Some(BoxStats {
        q1,
        median,
        q3,
        whisker_lo,
        whisker_hi,
    })
}

/// Draws category names centred under integer x positions `0..names.len()`.
fn draw_category_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    positions: &[(i32, i32)],
    names: &[String],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = TextStyle::from((FONT, 14).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (p, name) in positions.iter().zip(names) {
        root.draw(&Text::new(name.clone(), (p.0, p.1 + 6), style.clone()))?;
    }
    Ok(())
}

/// Draws one box per group (quartile box, median line, Tukey whiskers,
/// outliers as circles) and writes an 800 x 500 PNG to `path`. NaN and
/// infinite values are skipped; a group with no finite value gets its name
/// but no box.
///
/// # Errors
/// [`Error::Other`] when drawing fails, [`Error::Io`] on file errors.
pub fn box_plot(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
) -> Result<()> {
    let n = groups.len().max(1);
    let (y0, y1) = padded_range(groups.iter().flat_map(|g| g.1.iter().copied()), 0.05);
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y0..y1)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let half = 0.3;
        for (i, (_, values)) in groups.iter().enumerate() {
            let Some(s) = box_stats(values) else { continue };
            let x = i as f64;
            let colour = series_colour(i);
            chart
                .draw_series([
                    Rectangle::new(
                        [(x - half, s.q1), (x + half, s.q3)],
                        colour.mix(0.35).filled(),
                    ),
                    Rectangle::new([(x - half, s.q1), (x + half, s.q3)], BLACK.stroke_width(1)),
                ])
                .map_err(|e| plot_err(path, e))?;
            let q = half / 2.0;
            chart
                .draw_series(
                    [
                        (vec![(x - half, s.median), (x + half, s.median)], 3),
                        (vec![(x, s.q3), (x, s.whisker_hi)], 1),
                        (vec![(x, s.q1), (x, s.whisker_lo)], 1),
                        (vec![(x - q, s.whisker_hi), (x + q, s.whisker_hi)], 1),
                        (vec![(x - q, s.whisker_lo), (x + q, s.whisker_lo)], 1),
                    ]
                    .into_iter()
                    .map(|(pts, w)| PathElement::new(pts, BLACK.stroke_width(w))),
                )
                .map_err(|e| plot_err(path, e))?;
            let outliers = values
                .iter()
                .copied()
                .filter(|v| v.is_finite() && (*v < s.whisker_lo || *v > s.whisker_hi));
            chart
                .draw_series(outliers.map(|v| Circle::new((x, v), 3, colour.stroke_width(1))))
                .map_err(|e| plot_err(path, e))?;
        }
        let positions: Vec<(i32, i32)> = (0..groups.len())
            .map(|i| chart.backend_coord(&(i as f64, y0)))
            .collect();
        let names: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
        draw_category_labels(root, &positions, &names).map_err(|e| plot_err(path, e))?;
        Ok(())
    })
}

/// One series of a [`bar_chart`]: `(name, values per category, optional
/// symmetric errors per category)`.
pub type BarSeries = (String, Vec<f64>, Option<Vec<f64>>);

/// Draws grouped bars: one group per category, one bar per series
/// `(name, values, errors)` where `values[k]` belongs to `categories[k]` and
/// the optional `errors[k]` draws a symmetric error bar `± errors[k]`.
/// Non-finite values draw no bar; non-finite errors no error bar. Writes an
/// 800 x 500 PNG with a legend to `path`.
///
/// # Errors
/// [`Error::InvalidValue`] when a series' values or errors do not have one
/// entry per category; [`Error::Other`] when drawing fails; [`Error::Io`] on
/// file errors.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[BarSeries],
) -> Result<()> {
    for (name, values, errors) in series {
        if values.len() != categories.len() {
            return Err(Error::invalid(
                format!("bar_chart series `{name}`"),
                format!(
                    "{} values for {} categories",
                    values.len(),
                    categories.len()
                ),
            ));
        }
        if let Some(e) = errors {
            if e.len() != categories.len() {
                return Err(Error::invalid(
                    format!("bar_chart series `{name}` errors"),
                    format!("{} errors for {} categories", e.len(), categories.len()),
                ));
            }
        }
    }
    let n = categories.len().max(1);
    let mut extent: Vec<f64> = vec![0.0];
    for (_, values, errors) in series {
        for (k, v) in values.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let e = errors
                .as_ref()
                .map(|e| e[k])
                .filter(|e| e.is_finite())
                .unwrap_or(0.0)
                .abs();
            extent.push(v + e);
            extent.push(v - e);
        }
    }
    let (mut y0, mut y1) = padded_range(extent.into_iter(), 0.05);
    // Bars start at zero: do not leave a margin below zero when all are positive.
    if y0 < 0.0
        && series
            .iter()
            .all(|s| s.1.iter().all(|v| v.is_nan() || *v >= 0.0))
    {
        y0 = 0.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    render(path, |root| {
        // The legend gets its own column right of the plot, so that it never
        // hides bars, however many series there are.
        let legend_w = if series.is_empty() { 0 } else { 130 };
        let (plot_area, legend_area) = root.split_horizontally(CHART_WIDTH as i32 - legend_w);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y0..y1)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let ns = series.len().max(1);
        let group_w = 0.8;
        let bar_w = group_w / ns as f64;
        for (si, (name, values, errors)) in series.iter().enumerate() {
            let colour = series_colour(si);
            let bars = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(k, &v)| {
                    let left = k as f64 - group_w / 2.0 + si as f64 * bar_w;
                    Rectangle::new(
                        [(left + 0.1 * bar_w, 0.0), (left + 0.9 * bar_w, v)],
                        colour.filled(),
                    )
                });
            chart.draw_series(bars).map_err(|e| plot_err(path, e))?;
            let ly = 50 + 22 * si as i32;
            legend_area
                .draw(&Rectangle::new(
                    [(6, ly - 6), (20, ly + 6)],
                    colour.filled(),
                ))
                .map_err(|e| plot_err(path, e))?;
            legend_area
                .draw(&Text::new(
                    name.clone(),
                    (26, ly),
                    TextStyle::from((FONT, 14).into_font())
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(|e| plot_err(path, e))?;
            if let Some(errs) = errors {
                for (k, (&v, &e)) in values.iter().zip(errs).enumerate() {
                    if !v.is_finite() || !e.is_finite() {
                        continue;
                    }
                    let xc = k as f64 - group_w / 2.0 + (si as f64 + 0.5) * bar_w;
                    let cap = 0.25 * bar_w;
                    let (lo, hi) = (v - e.abs(), v + e.abs());
                    let lines = vec![
                        vec![(xc, lo), (xc, hi)],
                        vec![(xc - cap, lo), (xc + cap, lo)],
                        vec![(xc - cap, hi), (xc + cap, hi)],
                    ];
                    chart
                        .draw_series(
                            lines
                                .into_iter()
                                .map(|l| PathElement::new(l, BLACK.stroke_width(1))),
                        )
                        .map_err(|e| plot_err(path, e))?;
                }
            }
        }
        let positions: Vec<(i32, i32)> = (0..categories.len())
            .map(|i| chart.backend_coord(&(i as f64, y0)))
            .collect();
        draw_category_labels(root, &positions, categories).map_err(|e| plot_err(path, e))?;
        Ok(())
    })
}

/// One labelled point of a [`scatter_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledPoint {
    /// Text drawn beside the point.
    pub label: String,
    /// Horizontal position.
    pub x: f64,
    /// Vertical position.
    pub y: f64,
    /// Optional vertical error bar, `y ± error`.
    pub error: Option<f64>,
}

/// Draws labelled points (each with an optional vertical error bar), the
/// horizontal axis logarithmic (base 10) when `log_x`, and writes an
/// 800 x 500 PNG to `path`. Points with a non-finite coordinate are left
/// out. Used for accuracy against size charts (Dice against parameters).
///
/// # Errors
/// [`Error::InvalidValue`] naming the point when `log_x` and a finite `x`
/// is not positive; [`Error::Other`] when drawing fails; [`Error::Io`] on
/// file errors.
pub fn scatter_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[LabelledPoint],
    log_x: bool,
) -> Result<()> {
    let shown: Vec<&LabelledPoint> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    if log_x {
        if let Some(p) = shown.iter().find(|p| p.x <= 0.0) {
            return Err(Error::invalid(
                format!("scatter_chart point `{}`", p.label),
                format!("x = {} on a logarithmic axis (expected > 0)", p.x),
            ));
        }
    }
    let tx = |x: f64| if log_x { x.log10() } else { x };
    let (x0, x1) = padded_range(shown.iter().map(|p| tx(p.x)), 0.08);
    let (y0, y1) = padded_range(
        shown.iter().flat_map(|p| {
            let e = p.error.filter(|e| e.is_finite()).unwrap_or(0.0).abs();
            [p.y - e, p.y + e]
        }),
        0.08,
    );
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(path, e))?;
        let fmt_x = |v: &f64| {
            if log_x {
                let n = 10f64.powf(*v);
                if n >= 1e6 {
                    format!("{:.3}M", n / 1e6)
                } else if n >= 1e3 {
                    format!("{:.3}K", n / 1e3)
                } else {
                    format!("{n:.3}")
                }
            } else {
                format!("{v}")
            }
        };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&fmt_x)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, p) in shown.iter().enumerate() {
            let colour = series_colour(i);
            let x = tx(p.x);
            if let Some(e) = p.error.filter(|e| e.is_finite()) {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, p.y - e.abs()), (x, p.y + e.abs())],
                        colour.stroke_width(1),
                    )))
                    .map_err(|e| plot_err(path, e))?;
            }
            chart
                .draw_series(std::iter::once(Circle::new((x, p.y), 5, colour.filled())))
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    p.label.clone(),
                    (x, p.y),
                    TextStyle::from((FONT, 12).into_font())
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Bottom)),
                )))
                .map_err(|e| plot_err(path, e))?;
        }
        Ok(())
    })
}
