//! Run logs: CSV and JSON-lines files, and PNG curves of the training loss
//! and per-class validation Dice.

use crate::error::Result;
use crate::summary::ValidResult;
use medseg_viz::{line_chart, Series};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writers of one run's logs in its output folder:
/// `train_log.csv` (iteration, lr, loss, loss terms), `valid_log.csv`
/// (iteration, mean Dice, Dice per class), `log.jsonl` (both, one JSON
/// object per line), and `curves_loss.png` / `curves_dice.png`.
pub struct RunLog {
    dir: PathBuf,
    class_num: usize,
    train: File,
    valid: File,
    jsonl: File,
    train_header: bool,
    losses: Vec<(f64, f64)>,
    dice: Vec<ValidResult>,
}

fn open(path: &Path, append: bool) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| medseg_core::Error::io(path, e))?;
    Ok(f)
}

impl RunLog {
    /// Opens the log files in `dir`; `append` keeps earlier lines (resume).
    pub fn open(dir: &Path, class_num: usize, append: bool) -> Result<Self> {
        let train_path = dir.join("train_log.csv");
        let train_header = append && train_path.exists();
        let mut valid = open(&dir.join("valid_log.csv"), append)?;
        if !append || valid.metadata().map(|m| m.len() == 0).unwrap_or(true) {
            let cols: Vec<String> = (1..class_num).map(|c| format!("dice_class{c}")).collect();
            writeln!(valid, "iteration,mean_dice,{}", cols.join(","))
                .map_err(|e| medseg_core::Error::io(dir.join("valid_log.csv"), e))?;
        }
        Ok(RunLog {
            dir: dir.to_path_buf(),
            class_num,
            train: open(&train_path, append)?,
            valid,
            jsonl: open(&dir.join("log.jsonl"), append)?,
            train_header,
            losses: Vec::new(),
            dice: Vec::new(),
        })
    }

    /// Records one training step.
    pub fn train(&mut self, it: usize, lr: f64, loss: f64, terms: &[(String, f64)]) -> Result<()> {
        let p = self.dir.join("train_log.csv");
        let io = |e| medseg_core::Error::io(&p, e);
        if !self.train_header {
            let names: Vec<&str> = terms.iter().map(|t| t.0.as_str()).collect();
            writeln!(
                self.train,
                "iteration,lr,loss{}{}",
                if names.is_empty() { "" } else { "," },
                names.join(",")
            )
            .map_err(io)?;
            self.train_header = true;
        }
        let vals: Vec<String> = terms.iter().map(|t| format!("{:.6}", t.1)).collect();
        writeln!(
            self.train,
            "{it},{lr:.6e},{loss:.6}{}{}",
            if vals.is_empty() { "" } else { "," },
            vals.join(",")
        )
        .map_err(io)?;
        let mut obj = serde_json::json!({"kind": "train", "iteration": it, "lr": lr, "loss": loss});
        for (k, v) in terms {
            obj[k] = serde_json::json!(v);
        }
        writeln!(self.jsonl, "{obj}")
            .map_err(|e| medseg_core::Error::io(self.dir.join("log.jsonl"), e))?;
        self.losses.push((it as f64, loss));
        Ok(())
    }

    /// Records one validation.
    pub fn valid(&mut self, v: &ValidResult) -> Result<()> {
        let p = self.dir.join("valid_log.csv");
        let cols: Vec<String> = v.class_dice.iter().map(|d| format!("{d:.6}")).collect();
        writeln!(
            self.valid,
            "{},{:.6},{}",
            v.iteration,
            v.mean_dice,
            cols.join(",")
        )
        .map_err(|e| medseg_core::Error::io(&p, e))?;
        let obj = serde_json::json!({"kind": "valid", "iteration": v.iteration, "mean_dice": v.mean_dice, "class_dice": v.class_dice});
        writeln!(self.jsonl, "{obj}")
            .map_err(|e| medseg_core::Error::io(self.dir.join("log.jsonl"), e))?;
        self.dice.push(v.clone());
        Ok(())
    }

    /// Redraws `curves_loss.png` (raw and smoothed loss) and
    /// `curves_dice.png` (per-class and mean validation Dice).
    pub fn plot(&mut self) -> Result<()> {
        for f in [&mut self.train, &mut self.valid, &mut self.jsonl] {
            let _ = f.flush();
        }
        if !self.losses.is_empty() {
            let w = (self.losses.len() / 50).max(1);
            let smooth: Vec<(f64, f64)> = self
                .losses
                .windows(w)
                .map(|win| {
                    (
                        win[win.len() - 1].0,
                        win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64,
                    )
                })
                .collect();
            line_chart(
                &self.dir.join("curves_loss.png"),
                "training loss",
                "iteration",
                "loss",
                &[
                    Series {
                        name: "loss".into(),
                        points: self.losses.clone(),
                    },
                    Series {
                        name: format!("mean of {w}"),
                        points: smooth,
                    },
                ],
            )?;
        }
        if !self.dice.is_empty() {
            let mut series: Vec<Series> = (1..self.class_num)
                .map(|c| Series {
                    name: format!("class {c}"),
                    points: self
                        .dice
                        .iter()
                        .filter_map(|v| v.class_dice.get(c - 1).map(|d| (v.iteration as f64, *d)))
                        .collect(),
                })
                .collect();
            series.push(Series {
                name: "mean".into(),
                points: self
                    .dice
                    .iter()
                    .map(|v| (v.iteration as f64, v.mean_dice))
                    .collect(),
            });
            line_chart(
                &self.dir.join("curves_dice.png"),
                "validation Dice",
                "iteration",
                "Dice",
                &series,
            )?;
        }
        Ok(())
    }
}

/// The progress bar of a training loop of `len` iterations, at `start`;
/// hidden unless `show`.
pub(crate) fn progress_bar(show: bool, len: usize, start: usize) -> indicatif::ProgressBar {
    let pb = if show {
        indicatif::ProgressBar::new(len as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(start as u64);
    pb
}

/// The value of a step's loss, or an error at iteration `it` when it is
/// not finite (`hint` says what to try).
pub(crate) fn finite_loss(loss: &candle_core::Tensor, it: usize, hint: &str) -> Result<f64> {
    use crate::error::TensorContext;
    let v = loss
        .to_dtype(candle_core::DType::F64)
        .and_then(|l| l.to_scalar::<f64>())
        .ctx("reading the loss")?;
    if !v.is_finite() {
        return Err(crate::error::LearnError::Other(format!(
            "the loss became {v} at iteration {it}; {hint}"
        )));
    }
    Ok(v)
}
