//! The per-round log of a simulation: `rounds.csv` (rewritten atomically
//! after every round) and `rounds.png` (validation Dice and training loss
//! of each site per round).

use crate::error::{FedError, Result};
use medseg_viz::Series;
use std::path::{Path, PathBuf};

/// What happened in one round.
#[derive(Debug, Clone)]
pub struct RoundRecord {
    /// The round (from 1).
    pub round: usize,
    /// Per site: asked to train.
    pub asked: Vec<bool>,
    /// Per site: answered (asked and did not drop out).
    pub answered: Vec<bool>,
    /// Per site: mean local training loss (NaN when it did not train).
    pub loss: Vec<f64>,
    /// Per site: validation Dice on its annotated classes after the
    /// round's aggregation (`None` when not validated).
    pub valid: Vec<Option<f64>>,
    /// Wall time of the round.
    pub seconds: f64,
}

impl RoundRecord {
    /// An empty record for `n` sites.
    pub fn new(round: usize, n: usize) -> Self {
        RoundRecord {
            round,
            asked: vec![false; n],
            answered: vec![false; n],
            loss: vec![f64::NAN; n],
            valid: vec![None; n],
            seconds: 0.0,
        }
    }

    /// One line for the terminal.
    pub fn describe(&self, names: &[String]) -> String {
        let mut s = format!("round {:>3} ({:.1} s):", self.round, self.seconds);
        for (k, n) in names.iter().enumerate() {
            let state = if self.answered[k] {
                format!("loss {:.4}", self.loss[k])
            } else if self.asked[k] {
                "dropped".into()
            } else {
                "idle".into()
            };
            s.push_str(&format!(" {n} {state}"));
            if let Some(d) = self.valid[k] {
                s.push_str(&format!(" (valid Dice {d:.4})"));
            }
            s.push(';');
        }
        s.pop();
        s
    }
}

/// The growing log.
pub struct RoundsLog {
    csv: PathBuf,
    png: PathBuf,
    names: Vec<String>,
    rows: Vec<RoundRecord>,
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        String::new()
    }
}

impl RoundsLog {
    /// A log of the sites `names`, written under `dir`.
    pub fn new(dir: &Path, names: Vec<String>) -> Self {
        RoundsLog {
            csv: dir.join("rounds.csv"),
            png: dir.join("rounds.png"),
            names,
            rows: Vec::new(),
        }
    }

    /// Adds a round and rewrites the CSV: `round, answered, dropped,
    /// seconds`, then per site `loss_<site>` and `valid_dice_<site>`
    /// (empty where undefined).
    ///
    /// # Errors
    /// The CSV cannot be written.
    pub fn push(&mut self, r: RoundRecord) -> Result<()> {
        self.rows.push(r);
        let mut text = String::from("round,answered,dropped,seconds");
        for n in &self.names {
            text.push_str(&format!(",loss_{n},valid_dice_{n}"));
        }
        text.push('\n');
        for r in &self.rows {
            let list = |f: &dyn Fn(usize) -> bool| {
                (0..self.names.len())
                    .filter(|&k| f(k))
                    .map(|k| self.names[k].as_str())
                    .collect::<Vec<_>>()
                    .join(";")
            };
            text.push_str(&format!(
                "{},{},{},{:.3}",
                r.round,
                list(&|k| r.answered[k]),
                list(&|k| r.asked[k] && !r.answered[k]),
                r.seconds
            ));
            for k in 0..self.names.len() {
                text.push_str(&format!(
                    ",{},{}",
                    num(r.loss[k]),
                    num(r.valid[k].unwrap_or(f64::NAN))
                ));
            }
            text.push('\n');
        }
        medseg_core::write_atomic(&self.csv, text.as_bytes()).map_err(|e| FedError::Io {
            path: self.csv.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Draws the curves and returns the paths of the CSV and the PNG.
    ///
    /// # Errors
    /// The picture cannot be written.
    pub fn finish(self) -> Result<(PathBuf, PathBuf)> {
        let mut series = Vec::new();
        for (k, n) in self.names.iter().enumerate() {
            let valid: Vec<(f64, f64)> = self
                .rows
                .iter()
                .filter_map(|r| r.valid[k].map(|d| (r.round as f64, d)))
                .collect();
            if !valid.is_empty() {
                series.push(Series {
                    name: format!("{n} valid Dice"),
                    points: valid,
                });
            }
            series.push(Series {
                name: format!("{n} train loss"),
                points: self
                    .rows
                    .iter()
                    .map(|r| (r.round as f64, r.loss[k]))
                    .collect(),
            });
        }
        medseg_viz::line_chart(
            &self.png,
            "Federated training per round",
            "round",
            "Dice on the site's classes / loss",
            &series,
        )
        .map_err(|e| FedError::Io {
            path: self.png.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok((self.csv, self.png))
    }
}
