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

/// Keeps, of the log file `path`, its header (a first line that does not
/// start with a number) and the complete lines (ending in a newline) of
/// iterations up to `upto`, rewritten atomically: a run resumed from the
/// checkpoint of iteration `upto` then appends without duplicating the
/// iterations the interrupted run logged after it, or a line cut by the
/// kill. JSON lines are judged by their `iteration`.
fn truncate_log(path: &Path, upto: usize) -> Result<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut kept = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        let iteration = if line.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["iteration"].as_u64())
                .map(|v| v as usize)
        } else {
            line.split(',').next().and_then(|f| f.parse::<usize>().ok())
        };
        match iteration {
            Some(it) if it <= upto => kept.push(line.to_string()),
            None if i == 0 && !line.starts_with('{') => kept.push(line.to_string()),
            _ => {}
        }
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    medseg_core::write_atomic(path, out.as_bytes())?;
    Ok(kept)
}

impl RunLog {
    /// Opens the log files in `dir`: afresh, or, resuming from the
    /// checkpoint of iteration `n` (`resume_from = Some(n)`), keeping the
    /// earlier lines up to iteration `n` (see [`truncate_log`]) and their
    /// points for the curves.
    pub fn open(dir: &Path, class_num: usize, resume_from: Option<usize>) -> Result<Self> {
        let train_path = dir.join("train_log.csv");
        let valid_path = dir.join("valid_log.csv");
        let mut losses = Vec::new();
        let mut dice = Vec::new();
        let mut train_header = false;
        if let Some(n) = resume_from {
            let kept = truncate_log(&train_path, n)?;
            train_header = kept
                .first()
                .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()));
            for line in kept.iter().skip(1) {
                let f: Vec<&str> = line.split(',').collect();
                if let (Some(Ok(it)), Some(Ok(loss))) = (
                    f.first().map(|v| v.parse::<f64>()),
                    f.get(2).map(|v| v.parse::<f64>()),
                ) {
                    losses.push((it, loss));
                }
            }
            for line in truncate_log(&valid_path, n)?.iter().skip(1) {
                let f: Vec<f64> = line.split(',').filter_map(|v| v.parse().ok()).collect();
                if f.len() >= 2 {
                    dice.push(ValidResult {
                        iteration: f[0] as usize,
                        mean_dice: f[1],
                        class_dice: f[2..].to_vec(),
                    });
                }
            }
            truncate_log(&dir.join("log.jsonl"), n)?;
        }
        let append = resume_from.is_some();
        let mut valid = open(&valid_path, append)?;
        if !append || valid.metadata().map(|m| m.len() == 0).unwrap_or(true) {
            let cols: Vec<String> = (1..class_num).map(|c| format!("dice_class{c}")).collect();
            writeln!(valid, "iteration,mean_dice,{}", cols.join(","))
                .map_err(|e| medseg_core::Error::io(&valid_path, e))?;
        }
        Ok(RunLog {
            dir: dir.to_path_buf(),
            class_num,
            train: open(&train_path, append)?,
            valid,
            jsonl: open(&dir.join("log.jsonl"), append)?,
            train_header,
            losses,
            dice,
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
