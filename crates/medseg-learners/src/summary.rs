//! What a run reports: validation scores and the end-of-run summary.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Validation scores at one iteration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValidResult {
    /// The iteration (one-based count of steps done).
    pub iteration: usize,
    /// Mean Dice over cases, per foreground class (index 0 is class 1).
    pub class_dice: Vec<f64>,
    /// Mean of `class_dice`: the model-selection metric.
    pub mean_dice: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps done in total (including resumed ones).
    pub iterations: usize,
    /// Best validation result, if validation ran.
    pub best: Option<ValidResult>,
    /// Last validation result.
    pub last: Option<ValidResult>,
    /// Whether early stopping ended the run.
    pub early_stopped: bool,
    /// The run folder (checkpoints, logs, plots).
    pub out_dir: PathBuf,
    /// Mean training loss over the last 10% of steps.
    pub final_loss: f64,
    /// Mean training loss over the first 10% of steps of this invocation.
    pub first_loss: f64,
}

impl TrainSummary {
    /// The summary of `losses` (one per step of this invocation): the means
    /// of their first and last tenths.
    pub(crate) fn loss_tenths(losses: &[f64]) -> (f64, f64) {
        let tenth = (losses.len() / 10).max(1);
        let mean = |s: &[f64]| {
            if s.is_empty() {
                f64::NAN
            } else {
                s.iter().sum::<f64>() / s.len() as f64
            }
        };
        (
            mean(&losses[..tenth.min(losses.len())]),
            mean(&losses[losses.len().saturating_sub(tenth)..]),
        )
    }
}

impl std::fmt::Display for TrainSummary {
    /// The lines the training apps print at the end of a run: iterations,
    /// first and last training loss, the best validation, where the results are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "trained {} iterations{}",
            self.iterations,
            if self.early_stopped {
                " (early stop)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "training loss: first 10% {:.4}, last 10% {:.4}",
            self.first_loss, self.final_loss
        )?;
        if let Some(b) = &self.best {
            let per: Vec<String> = b
                .class_dice
                .iter()
                .enumerate()
                .map(|(i, d)| format!("class {}: {d:.4}", i + 1))
                .collect();
            writeln!(
                f,
                "best validation mean Dice {:.4} at iteration {} ({})",
                b.mean_dice,
                b.iteration,
                per.join(", ")
            )?;
        }
        writeln!(
            f,
            "checkpoints: {}",
            self.out_dir.join("checkpoints").display()
        )?;
        write!(f, "logs and curves: {}", self.out_dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_text_names_the_figures_and_folders() {
        let s = TrainSummary {
            iterations: 40,
            best: Some(ValidResult {
                iteration: 30,
                class_dice: vec![0.5, 0.25],
                mean_dice: 0.375,
            }),
            last: None,
            early_stopped: true,
            out_dir: PathBuf::from("runs/x"),
            final_loss: 0.125,
            first_loss: 1.5,
        };
        let text = s.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "trained 40 iterations (early stop)");
        assert_eq!(lines[1], "training loss: first 10% 1.5000, last 10% 0.1250");
        assert_eq!(
            lines[2],
            "best validation mean Dice 0.3750 at iteration 30 (class 1: 0.5000, class 2: 0.2500)"
        );
        assert!(lines[3].ends_with("checkpoints") && lines[4].ends_with("runs/x"));
        let none = TrainSummary {
            best: None,
            early_stopped: false,
            ..s
        };
        assert!(!none.to_string().contains("validation"));
    }

    #[test]
    fn loss_tenths_average_the_first_and_last_tenth() {
        let l: Vec<f64> = (0..20).map(|i| i as f64).collect();
        assert_eq!(TrainSummary::loss_tenths(&l), (0.5, 18.5));
        let (a, b) = TrainSummary::loss_tenths(&[]);
        assert!(a.is_nan() && b.is_nan());
        assert_eq!(TrainSummary::loss_tenths(&[3.0]), (3.0, 3.0));
    }
}
