//! Intensity transforms, applied per channel (in parallel over channels).
//! They change the image only; labels, weights and geometry are untouched.
//! Random parameters are drawn per channel, serially, before any parallel work.

use crate::pipeline::{check_p, check_range, record, Transform, Validate};
use medseg_core::{Error, Result, Sample};
use ndarray::{ArrayViewMutD, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::Deserialize;

fn default_p() -> f64 {
    0.5
}

fn draw(rng: &mut ChaCha8Rng, r: [f64; 2]) -> f64 {
    if r[0] == r[1] {
        r[0]
    } else {
        rng.random_range(r[0]..r[1])
    }
}

/// Resolves the `channels` parameter against an image of `c` channels.
fn channel_list(channels: &Option<Vec<usize>>, c: usize) -> Result<Vec<usize>> {
    match channels {
        None => Ok((0..c).collect()),
        Some(list) => {
            if let Some(bad) = list.iter().find(|&&i| i >= c) {
                return Err(Error::invalid(
                    "channels",
                    format!("channel {bad} does not exist in an image of {c} channels"),
                ));
            }
            Ok(list.clone())
        }
    }
}

/// Per-channel value list (`mean`, `lower`, ...) matching `channels`.
fn per_channel<T: Copy>(v: &Option<Vec<T>>, n: usize, key: &str) -> Result<Vec<Option<T>>> {
    match v {
        None => Ok(vec![None; n]),
        Some(list) if list.len() == n => Ok(list.iter().map(|x| Some(*x)).collect()),
        Some(list) if list.len() == 1 => Ok(vec![Some(list[0]); n]),
        Some(list) => Err(Error::invalid(
            key,
            format!(
                "needs one value per selected channel ({n}) or one for all, got {}",
                list.len()
            ),
        )),
    }
}

/// Runs `f(channel_index_in_list, view)` in parallel over the selected channels.
fn for_channels<P: Sync>(
    sample: &mut Sample,
    chans: &[usize],
    params: &[P],
    f: impl Fn(ArrayViewMutD<'_, f32>, &P) + Sync,
) {
    sample
        .image
        .data
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(c, view)| {
            if let Some(i) = chans.iter().position(|&x| x == c) {
                f(view, &params[i]);
            }
        });
}

/// Mean and population standard deviation (numpy's `std`, ddof 0) of the
/// values selected by `keep`, in f64; `None` when none is selected.
pub fn mean_std<'a>(
    values: impl Iterator<Item = &'a f32>,
    keep: impl Fn(f32) -> bool,
) -> Option<(f64, f64)> {
    let (mut n, mut s, mut s2) = (0usize, 0f64, 0f64);
    for &v in values {
        if keep(v) {
            n += 1;
            s += v as f64;
            s2 += (v as f64) * (v as f64);
        }
    }
    if n == 0 {
        return None;
    }
    let m = s / n as f64;
    Some((m, (s2 / n as f64 - m * m).max(0.0).sqrt()))
}

/// Percentile `q` in [0, 100] with numpy's default (linear) interpolation.
/// `None` for an empty input.
pub fn percentile(values: &[f32], q: f64) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    let rank = q.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (_, &mut a, right) = v.select_nth_unstable_by(lo, f32::total_cmp);
    let b = if hi > lo {
        *right
            .iter()
            .min_by(|x, y| x.total_cmp(y))
            .expect("hi < len")
    } else {
        a
    };
    let f = (rank - lo as f64) as f32;
    Some(a + (b - a) * f)
}

/// Z-score normalisation per channel (PyMIC's `NormalizeWithMeanStd`, MONAI's
/// `NormalizeIntensity`): `(x - mean) / std`. Mean and std are given, or
/// computed over the whole channel, over voxels above `mask_threshold`, or
/// over non-zero voxels (`nonzero`, in which case zero voxels stay zero). A
/// zero std is taken as 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeWithMeanStd {
    /// Channels to normalise (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Fixed means, one per selected channel (or one for all).
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    /// Fixed standard deviations, one per selected channel (or one for all).
    #[serde(default)]
    pub std: Option<Vec<f32>>,
    /// Statistics over non-zero voxels only, and only those are changed.
    #[serde(default)]
    pub nonzero: bool,
    /// Statistics over voxels strictly above this value (all voxels are changed).
    #[serde(default)]
    pub mask_threshold: Option<f32>,
}

impl Validate for NormalizeWithMeanStd {
    fn validate(&self) -> Result<()> {
        if self.nonzero && self.mask_threshold.is_some() {
            return Err(Error::invalid(
                "nonzero",
                "use either nonzero or mask_threshold, not both",
            ));
        }
        if let Some(s) = &self.std {
            if s.iter().any(|v| v.is_nan() || *v <= 0.0) {
                return Err(Error::invalid("std", "must be positive"));
            }
        }
        Ok(())
    }
}

impl Transform for NormalizeWithMeanStd {
    fn name(&self) -> &str {
        "NormalizeWithMeanStd"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        let means = per_channel(&self.mean, chans.len(), "mean")?;
        let stds = per_channel(&self.std, chans.len(), "std")?;
        let mut stats = Vec::with_capacity(chans.len());
        for (i, &c) in chans.iter().enumerate() {
            let view = sample.image.data.index_axis(Axis(0), c);
            let thr = self.mask_threshold;
            let nz = self.nonzero;
            let computed = mean_std(view.iter(), |v| match thr {
                Some(t) => v > t,
                None => !nz || v != 0.0,
            })
            .unwrap_or((0.0, 1.0));
            let m = means[i].map(f64::from).unwrap_or(computed.0);
            let mut s = stds[i].map(f64::from).unwrap_or(computed.1);
            if s == 0.0 {
                s = 1.0;
            }
            stats.push((m as f32, s as f32));
        }
        let nz = self.nonzero;
        for_channels(&mut sample, &chans, &stats, |mut v, &(m, s)| {
            v.mapv_inplace(|x| if nz && x == 0.0 { 0.0 } else { (x - m) / s });
        });
        record(
            &mut sample,
            "NormalizeWithMeanStd",
            serde_json::json!({ "channels": chans, "mean_std": stats }),
        );
        Ok(sample)
    }
}

fn default_minmax_range() -> [f32; 2] {
    [-1.0, 1.0]
}

/// Clips each channel to `[lower, upper]` (given, or the channel's min and
/// max) and maps that interval linearly onto `output_range` (default
/// `[-1, 1]`, as PyMIC's `NormalizeWithMinMax`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeWithMinMax {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Lower thresholds per selected channel (default: the channel minimum).
    #[serde(default)]
    pub threshold_lower: Option<Vec<f32>>,
    /// Upper thresholds per selected channel (default: the channel maximum).
    #[serde(default)]
    pub threshold_upper: Option<Vec<f32>>,
    /// The output interval.
    #[serde(default = "default_minmax_range")]
    pub output_range: [f32; 2],
}

impl Validate for NormalizeWithMinMax {
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// Maps `[v0, v1]` to `[o0, o1]` after clipping; a flat interval maps to `o0`.
fn rescale_clip(mut v: ArrayViewMutD<'_, f32>, v0: f32, v1: f32, out: [f32; 2], clip: bool) {
    let span = v1 - v0;
    v.mapv_inplace(|x| {
        let x = if clip {
            x.clamp(v0.min(v1), v1.max(v0))
        } else {
            x
        };
        if span == 0.0 {
            out[0]
        } else {
            out[0] + (x - v0) / span * (out[1] - out[0])
        }
    });
}

impl Transform for NormalizeWithMinMax {
    fn name(&self) -> &str {
        "NormalizeWithMinMax"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        let lo = per_channel(&self.threshold_lower, chans.len(), "threshold_lower")?;
        let hi = per_channel(&self.threshold_upper, chans.len(), "threshold_upper")?;
        let mut bounds = Vec::new();
        for (i, &c) in chans.iter().enumerate() {
            let view = sample.image.data.index_axis(Axis(0), c);
            let mn = view.iter().copied().fold(f32::INFINITY, f32::min);
            let mx = view.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            bounds.push((lo[i].unwrap_or(mn), hi[i].unwrap_or(mx)));
        }
        let out = self.output_range;
        for_channels(&mut sample, &chans, &bounds, |v, &(a, b)| {
            rescale_clip(v, a, b, out, true)
        });
        record(
            &mut sample,
            "NormalizeWithMinMax",
            serde_json::json!({ "channels": chans, "bounds": bounds }),
        );
        Ok(sample)
    }
}

fn default_plo() -> f64 {
    0.1
}
fn default_phi() -> f64 {
    99.9
}
fn unit_interval() -> [f32; 2] {
    [0.0, 1.0]
}
fn yes() -> bool {
    true
}

/// Maps the channel's `percentile_lower`..`percentile_upper` percentiles
/// linearly onto `output_range` (default `[0, 1]`), clipping by default:
/// PyMIC's `NormalizeWithPercentiles`, MONAI's `ScaleIntensityRangePercentiles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeWithPercentiles {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Lower percentile in [0, 100].
    #[serde(default = "default_plo")]
    pub percentile_lower: f64,
    /// Upper percentile in [0, 100].
    #[serde(default = "default_phi")]
    pub percentile_upper: f64,
    /// The output interval.
    #[serde(default = "unit_interval")]
    pub output_range: [f32; 2],
    /// Clip to the output interval.
    #[serde(default = "yes")]
    pub clip: bool,
}

impl Validate for NormalizeWithPercentiles {
    fn validate(&self) -> Result<()> {
        check_percentiles(self.percentile_lower, self.percentile_upper)
    }
}

fn check_percentiles(lo: f64, hi: f64) -> Result<()> {
    if !(0.0..=100.0).contains(&lo) || !(0.0..=100.0).contains(&hi) || lo > hi {
        return Err(Error::invalid(
            "percentile_lower",
            format!("percentiles must satisfy 0 <= lower <= upper <= 100, got {lo} and {hi}"),
        ));
    }
    Ok(())
}

impl Transform for NormalizeWithPercentiles {
    fn name(&self) -> &str {
        "NormalizeWithPercentiles"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        let (pl, pu, out, clip) = (
            self.percentile_lower,
            self.percentile_upper,
            self.output_range,
            self.clip,
        );
        let bounds: Vec<(f32, f32)> = chans
            .par_iter()
            .map(|&c| {
                let v: Vec<f32> = sample
                    .image
                    .data
                    .index_axis(Axis(0), c)
                    .iter()
                    .copied()
                    .collect();
                (
                    percentile(&v, pl).unwrap_or(0.0),
                    percentile(&v, pu).unwrap_or(0.0),
                )
            })
            .collect();
        for_channels(&mut sample, &chans, &bounds, |v, &(a, b)| {
            rescale_clip(v, a, b, out, clip)
        });
        record(
            &mut sample,
            "NormalizeWithPercentiles",
            serde_json::json!({ "channels": chans, "bounds": bounds }),
        );
        Ok(sample)
    }
}

/// Clips intensities to `[lower, upper]`, given as values (a CT window) or
/// as percentiles of the channel (PyMIC's `IntensityClip`). A bound that is
/// not given is not applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntensityClip {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Lower values per selected channel (or one for all).
    #[serde(default)]
    pub lower: Option<Vec<f32>>,
    /// Upper values per selected channel (or one for all).
    #[serde(default)]
    pub upper: Option<Vec<f32>>,
    /// Lower percentile, used where `lower` is not given.
    #[serde(default)]
    pub percentile_lower: Option<f64>,
    /// Upper percentile, used where `upper` is not given.
    #[serde(default)]
    pub percentile_upper: Option<f64>,
}

impl Validate for IntensityClip {
    fn validate(&self) -> Result<()> {
        check_percentiles(
            self.percentile_lower.unwrap_or(0.0),
            self.percentile_upper.unwrap_or(100.0),
        )
    }
}

impl Transform for IntensityClip {
    fn name(&self) -> &str {
        "IntensityClip"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        let lo = per_channel(&self.lower, chans.len(), "lower")?;
        let hi = per_channel(&self.upper, chans.len(), "upper")?;
        let mut bounds = Vec::new();
        for (i, &c) in chans.iter().enumerate() {
            let needs = (lo[i].is_none() && self.percentile_lower.is_some())
                || (hi[i].is_none() && self.percentile_upper.is_some());
            let values = if needs {
                sample
                    .image
                    .data
                    .index_axis(Axis(0), c)
                    .iter()
                    .copied()
                    .collect()
            } else {
                Vec::new()
            };
            let a = lo[i]
                .or_else(|| self.percentile_lower.and_then(|q| percentile(&values, q)))
                .unwrap_or(f32::NEG_INFINITY);
            let b = hi[i]
                .or_else(|| self.percentile_upper.and_then(|q| percentile(&values, q)))
                .unwrap_or(f32::INFINITY);
            if a > b {
                return Err(Error::invalid(
                    "lower",
                    format!("lower bound {a} above upper bound {b}"),
                ));
            }
            bounds.push((a, b));
        }
        for_channels(&mut sample, &chans, &bounds, |mut v, &(a, b)| {
            v.mapv_inplace(|x| x.clamp(a, b))
        });
        let shown: Vec<[Option<f32>; 2]> = bounds
            .iter()
            .map(|&(a, b)| [a.is_finite().then_some(a), b.is_finite().then_some(b)])
            .collect();
        record(
            &mut sample,
            "IntensityClip",
            serde_json::json!({ "channels": chans, "bounds": shown }),
        );
        Ok(sample)
    }
}

fn default_gamma() -> [f64; 2] {
    [0.7, 1.5]
}

/// With probability `p`, per channel: `x' = ((x - min) / (max - min))^gamma
/// * (max - min) + min`, gamma uniform in `gamma_range` (PyMIC's
/// `GammaCorrection`). Constant channels are unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GammaCorrection {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Range of gamma.
    #[serde(default = "default_gamma")]
    pub gamma_range: [f64; 2],
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for GammaCorrection {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("gamma_range", self.gamma_range)?;
        if self.gamma_range[0] <= 0.0 {
            return Err(Error::invalid("gamma_range", "gamma must be positive"));
        }
        Ok(())
    }
}

impl Transform for GammaCorrection {
    fn name(&self) -> &str {
        "GammaCorrection"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        if rng.random::<f64>() >= self.p {
            record(
                &mut sample,
                "GammaCorrection",
                serde_json::json!({ "applied": false }),
            );
            return Ok(sample);
        }
        let gammas: Vec<f32> = chans
            .iter()
            .map(|_| draw(rng, self.gamma_range) as f32)
            .collect();
        for_channels(&mut sample, &chans, &gammas, |mut v, &g| {
            let mn = v.iter().copied().fold(f32::INFINITY, f32::min);
            let mx = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if mx > mn {
                let span = mx - mn;
                v.mapv_inplace(|x| ((x - mn) / span).powf(g) * span + mn);
            }
        });
        record(
            &mut sample,
            "GammaCorrection",
            serde_json::json!({ "channels": chans, "gamma": gammas }),
        );
        Ok(sample)
    }
}

fn default_noise_std() -> [f64; 2] {
    [0.0, 0.1]
}

/// With probability `p`, adds Gaussian noise of mean `mean` and a standard
/// deviation drawn per channel from `std_range`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianNoise {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Mean of the noise.
    #[serde(default)]
    pub mean: f64,
    /// Range of the standard deviation.
    #[serde(default = "default_noise_std")]
    pub std_range: [f64; 2],
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for GaussianNoise {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("std_range", self.std_range)?;
        if self.std_range[0] < 0.0 {
            return Err(Error::invalid("std_range", "must be non-negative"));
        }
        Ok(())
    }
}

impl Transform for GaussianNoise {
    fn name(&self) -> &str {
        "GaussianNoise"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        if rng.random::<f64>() >= self.p {
            record(
                &mut sample,
                "GaussianNoise",
                serde_json::json!({ "applied": false }),
            );
            return Ok(sample);
        }
        // per channel: (std, seed of an independent stream)
        let params: Vec<(f32, u64)> = chans
            .iter()
            .map(|_| (draw(rng, self.std_range) as f32, rng.random()))
            .collect();
        let mean = self.mean as f32;
        for_channels(&mut sample, &chans, &params, |mut v, &(s, seed)| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            for x in v.iter_mut() {
                let z: f32 = r.sample(StandardNormal);
                *x += mean + s * z;
            }
        });
        let stds: Vec<f32> = params.iter().map(|p| p.0).collect();
        record(
            &mut sample,
            "GaussianNoise",
            serde_json::json!({ "channels": chans, "std": stds }),
        );
        Ok(sample)
    }
}

fn default_blur_sigma() -> [f64; 2] {
    [0.5, 1.0]
}

/// Normalised Gaussian kernel of `sigma` voxels, radius `ceil(3 sigma)`.
fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.iter().map(|v| (v / s) as f32).collect()
}

/// Separable Gaussian smoothing of a channel along every spatial axis of
/// length > 1, edges replicated (`mode = "nearest"`).
pub(crate) fn blur_channel(mut v: ArrayViewMutD<'_, f32>, sigma: f64) {
    if sigma <= 0.0 {
        return;
    }
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as i64;
    for ax in 0..v.ndim() {
        let n = v.shape()[ax];
        if n < 2 {
            continue;
        }
        let mut buf = vec![0f32; n];
        for mut lane in v.lanes_mut(Axis(ax)) {
            for (i, b) in buf.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (j, kv) in k.iter().enumerate() {
                    let idx = (i as i64 + j as i64 - r).clamp(0, n as i64 - 1) as usize;
                    acc += kv * lane[idx];
                }
                *b = acc;
            }
            for (dst, src) in lane.iter_mut().zip(&buf) {
                *dst = *src;
            }
        }
    }
}

/// With probability `p`, Gaussian smoothing with sigma (voxels) drawn per
/// channel from `sigma_range`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianBlur {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Range of sigma in voxels.
    #[serde(default = "default_blur_sigma")]
    pub sigma_range: [f64; 2],
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Validate for GaussianBlur {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("sigma_range", self.sigma_range)?;
        if self.sigma_range[0] < 0.0 {
            return Err(Error::invalid("sigma_range", "must be non-negative"));
        }
        Ok(())
    }
}

impl Transform for GaussianBlur {
    fn name(&self) -> &str {
        "GaussianBlur"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, mut sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        if rng.random::<f64>() >= self.p {
            record(
                &mut sample,
                "GaussianBlur",
                serde_json::json!({ "applied": false }),
            );
            return Ok(sample);
        }
        let sigmas: Vec<f64> = chans.iter().map(|_| draw(rng, self.sigma_range)).collect();
        for_channels(&mut sample, &chans, &sigmas, |v, &s| blur_channel(v, s));
        record(
            &mut sample,
            "GaussianBlur",
            serde_json::json!({ "channels": chans, "sigma": sigmas }),
        );
        Ok(sample)
    }
}

fn default_add() -> [f64; 2] {
    [-0.1, 0.1]
}
fn default_mul() -> [f64; 2] {
    [0.75, 1.25]
}

/// With probability `p`, adds a value drawn per channel from `range`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrightnessAdditive {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Range of the added value.
    #[serde(default = "default_add")]
    pub range: [f64; 2],
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

/// With probability `p`, multiplies by a factor drawn per channel from `range`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrightnessMultiplicative {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Range of the factor.
    #[serde(default = "default_mul")]
    pub range: [f64; 2],
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

/// With probability `p`, scales the contrast about the channel mean:
/// `x' = (x - mean) * f + mean`, `f` drawn per channel from `range`; with
/// `preserve_range` the result is clipped to the channel's former [min, max]
/// (as nnU-Net's contrast augmentation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastAdjust {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Range of the factor.
    #[serde(default = "default_mul")]
    pub range: [f64; 2],
    /// Clip to the former intensity range.
    #[serde(default = "yes")]
    pub preserve_range: bool,
    /// Probability of applying.
    #[serde(default = "default_p")]
    pub p: f64,
}

/// Shared body of the random point-wise transforms.
fn pointwise(
    name: &str,
    mut sample: Sample,
    rng: &mut ChaCha8Rng,
    channels: &Option<Vec<usize>>,
    range: [f64; 2],
    p: f64,
    f: impl Fn(ArrayViewMutD<'_, f32>, f32) + Sync,
) -> Result<Sample> {
    let chans = channel_list(channels, sample.image.channels())?;
    if rng.random::<f64>() >= p {
        record(&mut sample, name, serde_json::json!({ "applied": false }));
        return Ok(sample);
    }
    let vals: Vec<f32> = chans.iter().map(|_| draw(rng, range) as f32).collect();
    for_channels(&mut sample, &chans, &vals, |v, &x| f(v, x));
    record(
        &mut sample,
        name,
        serde_json::json!({ "channels": chans, "value": vals }),
    );
    Ok(sample)
}

impl Validate for BrightnessAdditive {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("range", self.range)
    }
}

impl Transform for BrightnessAdditive {
    fn name(&self) -> &str {
        "BrightnessAdditive"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        pointwise(
            "BrightnessAdditive",
            sample,
            rng,
            &self.channels,
            self.range,
            self.p,
            |mut v, a| v.mapv_inplace(|x| x + a),
        )
    }
}

impl Validate for BrightnessMultiplicative {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("range", self.range)
    }
}

impl Transform for BrightnessMultiplicative {
    fn name(&self) -> &str {
        "BrightnessMultiplicative"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        pointwise(
            "BrightnessMultiplicative",
            sample,
            rng,
            &self.channels,
            self.range,
            self.p,
            |mut v, a| v.mapv_inplace(|x| x * a),
        )
    }
}

impl Validate for ContrastAdjust {
    fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        check_range("range", self.range)
    }
}

impl Transform for ContrastAdjust {
    fn name(&self) -> &str {
        "ContrastAdjust"
    }
    fn is_random(&self) -> bool {
        true
    }
    fn apply(&self, sample: Sample, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let keep = self.preserve_range;
        pointwise(
            "ContrastAdjust",
            sample,
            rng,
            &self.channels,
            self.range,
            self.p,
            move |mut v, f| {
                let (m, _) = mean_std(v.iter(), |_| true).unwrap_or((0.0, 0.0));
                let m = m as f32;
                let mn = v.iter().copied().fold(f32::INFINITY, f32::min);
                let mx = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                v.mapv_inplace(|x| {
                    let y = (x - m) * f + m;
                    if keep {
                        y.clamp(mn, mx)
                    } else {
                        y
                    }
                });
            },
        )
    }
}

fn default_bins() -> usize {
    256
}

/// Histogram equalisation per channel, output in [0, 1] (PyMIC's
/// `HistEqual`, computed as `skimage.exposure.equalize_hist`: the
/// cumulative histogram over `bins` equal bins between the channel's min and
/// max, interpolated linearly at the bin centres).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistEqual {
    /// Channels (default all).
    #[serde(default)]
    pub channels: Option<Vec<usize>>,
    /// Number of histogram bins.
    #[serde(default = "default_bins")]
    pub bins: usize,
}

impl Validate for HistEqual {
    fn validate(&self) -> Result<()> {
        if self.bins < 2 {
            return Err(Error::invalid("bins", "needs at least 2 bins"));
        }
        Ok(())
    }
}

/// Equalises one channel in place (see [`HistEqual`]).
fn equalize(mut v: ArrayViewMutD<'_, f32>, bins: usize) {
    let mn = v.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    let mx = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if mx <= mn || mx.is_nan() || mn.is_nan() {
        v.fill(1.0);
        return;
    }
    let width = (mx - mn) / bins as f64;
    let mut hist = vec![0u64; bins];
    for &x in v.iter() {
        let b = (((x as f64 - mn) / width) as usize).min(bins - 1);
        hist[b] += 1;
    }
    let total = v.len() as f64;
    let mut cdf = Vec::with_capacity(bins);
    let mut acc = 0u64;
    for h in &hist {
        acc += h;
        cdf.push(acc as f64 / total);
    }
    v.mapv_inplace(|x| {
        // position relative to the bin centres
        let t = (x as f64 - mn) / width - 0.5;
        if t <= 0.0 {
            cdf[0] as f32
        } else if t >= (bins - 1) as f64 {
            cdf[bins - 1] as f32
        } else {
            let i = t.floor() as usize;
            let f = t - i as f64;
            (cdf[i] + f * (cdf[i + 1] - cdf[i])) as f32
        }
    });
}

impl Transform for HistEqual {
    fn name(&self) -> &str {
        "HistEqual"
    }
    fn is_random(&self) -> bool {
        false
    }
    fn apply(&self, mut sample: Sample, _rng: &mut ChaCha8Rng) -> Result<Sample> {
        let chans = channel_list(&self.channels, sample.image.channels())?;
        let bins = vec![self.bins; chans.len()];
        for_channels(&mut sample, &chans, &bins, |v, &b| equalize(v, b));
        record(
            &mut sample,
            "HistEqual",
            serde_json::json!({ "channels": chans, "bins": self.bins }),
        );
        Ok(sample)
    }
}
