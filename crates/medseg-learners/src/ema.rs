//! Exponential moving average of weights (Mean Teacher's teacher).

use candle_core::{Result, Var};

/// Updates each teacher variable **in place**:
/// `teacher = decay * teacher + (1 - decay) * student`.
///
/// Pairs are matched by position; shapes must agree. Unlike PyMIC 0.5's
/// `ema_param.data.mul_(alpha).add(1 - alpha, param.data)`, whose `add`
/// result is discarded, the blended value is stored.
pub fn ema_update(teacher: &[Var], student: &[Var], decay: f64) -> Result<()> {
    if teacher.len() != student.len() {
        candle_core::bail!(
            "EMA: teacher has {} tensors, student {}",
            teacher.len(),
            student.len()
        );
    }
    for (t, s) in teacher.iter().zip(student) {
        let blended = ((t.as_tensor() * decay)? + (s.as_tensor() * (1.0 - decay))?)?;
        t.set(&blended)?;
    }
    Ok(())
}

/// The decay actually used at iteration `it`: `min(1 - 1 / (it + 1), decay)`,
/// so that early teachers follow the student closely (Tarvainen & Valpola).
pub fn ema_decay_at(it: usize, decay: f64) -> f64 {
    (1.0 - 1.0 / (it as f64 + 1.0)).min(decay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn update_is_exact_and_in_place() {
        let dev = Device::Cpu;
        let t = Var::from_tensor(&Tensor::new(&[1.0f64, 2.0, -3.0], &dev).unwrap()).unwrap();
        let s = Var::from_tensor(&Tensor::new(&[5.0f64, 0.0, 1.0], &dev).unwrap()).unwrap();
        let handle = t.as_tensor().clone();
        ema_update(std::slice::from_ref(&t), std::slice::from_ref(&s), 0.75).unwrap();
        let got = t.as_tensor().to_vec1::<f64>().unwrap();
        assert_eq!(got, vec![0.75 + 1.25, 1.5, -2.25 + 0.25]);
        // the teacher tensor a model holds sees the change (in place)
        assert_eq!(handle.to_vec1::<f64>().unwrap(), got);
        // student unchanged
        assert_eq!(s.as_tensor().to_vec1::<f64>().unwrap(), vec![5.0, 0.0, 1.0]);
        // repeated updates converge geometrically to the student
        for _ in 0..200 {
            ema_update(std::slice::from_ref(&t), std::slice::from_ref(&s), 0.75).unwrap();
        }
        let got = t.as_tensor().to_vec1::<f64>().unwrap();
        assert!((got[0] - 5.0).abs() < 1e-12);
    }

    #[test]
    fn decay_warms_up() {
        assert_eq!(ema_decay_at(0, 0.99), 0.0);
        assert_eq!(ema_decay_at(1, 0.99), 0.5);
        assert_eq!(ema_decay_at(1000, 0.99), 0.99);
    }

    #[test]
    fn mismatched_lists_are_an_error() {
        let dev = Device::Cpu;
        let t = Var::from_tensor(&Tensor::new(&[1.0f64], &dev).unwrap()).unwrap();
        assert!(ema_update(&[t], &[], 0.5).is_err());
    }
}
