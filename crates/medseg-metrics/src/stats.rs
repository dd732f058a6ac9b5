//! Order statistics as NumPy computes them.

/// The `q`-th percentile (`q` in `[0, 100]`) of `values` with linear
/// interpolation between order statistics, as `numpy.percentile(x, q)`
/// (default `method="linear"`) and `torch.quantile(x, q / 100)` compute it.
/// NaN for an empty slice. Reorders `values`.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = (q / 100.0) * (n - 1) as f64;
    let lo = (pos.floor() as usize).min(n - 1);
    let t = pos - lo as f64;
    let (_, a, upper) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    if lo + 1 >= n || t == 0.0 {
        return a;
    }
    let b = upper.iter().copied().fold(f64::INFINITY, f64::min);
    // numpy's _lerp: a + (b - a) t, evaluated from the nearer end
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// Arithmetic mean; NaN for an empty slice.
pub(crate) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Largest value; NaN for an empty slice.
pub(crate) fn max(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
