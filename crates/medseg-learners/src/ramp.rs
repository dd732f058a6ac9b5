//! Ramp-up functions for consistency weights, with PyMIC's definitions
//! (`pymic.util.ramps.get_rampup_ratio`): the iteration is clipped to
//! `[start, end]`, then `t = (it - start) / (end - start)`.

/// Shape of a ramp-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampMode {
    /// `t`
    Linear,
    /// `exp(-5 (1 - t)^2)` (Laine & Aila); `exp(-5)` at and before `start`.
    Sigmoid,
    /// `(cos(pi (1 - t)) + 1) / 2`
    Cosine,
}

/// The ramp-up ratio in `[0, 1]` at iteration `it` for a ramp from `start`
/// to `end` (iterations). When `end <= start` the ramp is a step at `start`.
pub fn rampup(it: f64, start: f64, end: f64, mode: RampMode) -> f64 {
    if end <= start {
        return if it >= start { 1.0 } else { 0.0 };
    }
    let t = (it.clamp(start, end) - start) / (end - start);
    let phase = 1.0 - t;
    match mode {
        RampMode::Linear => t,
        RampMode::Sigmoid => (-5.0 * phase * phase).exp(),
        RampMode::Cosine => 0.5 * ((std::f64::consts::PI * phase).cos() + 1.0),
    }
}

/// Shorthand for [`rampup`] with [`RampMode::Sigmoid`].
pub fn sigmoid_rampup(it: f64, start: f64, end: f64) -> f64 {
    rampup(it, start, end, RampMode::Sigmoid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_closed_form() {
        let e5 = (-5.0f64).exp();
        assert!((sigmoid_rampup(-1.0, 0.0, 100.0) - e5).abs() < 1e-15);
        assert!((sigmoid_rampup(0.0, 0.0, 100.0) - e5).abs() < 1e-15);
        assert!((sigmoid_rampup(50.0, 0.0, 100.0) - (-1.25f64).exp()).abs() < 1e-15);
        assert!((sigmoid_rampup(75.0, 10.0, 110.0) - (-5.0 * 0.35f64 * 0.35).exp()).abs() < 1e-15);
        assert_eq!(sigmoid_rampup(100.0, 0.0, 100.0), 1.0);
        assert_eq!(sigmoid_rampup(500.0, 0.0, 100.0), 1.0);
        let mut last = 0.0;
        for i in 0..=100 {
            let v = sigmoid_rampup(i as f64, 0.0, 100.0);
            assert!(v >= last);
            last = v;
        }
    }

    #[test]
    fn linear_and_cosine_closed_forms() {
        assert_eq!(rampup(5.0, 10.0, 20.0, RampMode::Linear), 0.0);
        assert_eq!(rampup(15.0, 10.0, 20.0, RampMode::Linear), 0.5);
        assert_eq!(rampup(25.0, 10.0, 20.0, RampMode::Linear), 1.0);
        assert!((rampup(15.0, 10.0, 20.0, RampMode::Cosine) - 0.5).abs() < 1e-15);
        assert!((rampup(10.0, 10.0, 20.0, RampMode::Cosine)).abs() < 1e-15);
        assert_eq!(rampup(10.0, 10.0, 10.0, RampMode::Sigmoid), 1.0);
        assert_eq!(rampup(9.0, 10.0, 10.0, RampMode::Sigmoid), 0.0);
    }
}
