//! Network summary: layers, parameter count, output shapes and
//! multiply-adds for one input size.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::layers::{start_recording, stop_recording, LayerRecord};
use crate::SegNetwork;

/// What [`summarize`] reports.
#[derive(Clone, Debug, PartialEq)]
pub struct NetSummary {
    /// The network's configuration.
    pub config: serde_json::Value,
    /// Input shape used, `[N, C, ...spatial]`.
    pub input_shape: Vec<usize>,
    /// Every layer call of one eval-mode forward pass, in order.
    pub layers: Vec<LayerRecord>,
    /// Trainable scalars of the whole network (also the layers an eval pass
    /// does not run, such as auxiliary decoders).
    pub total_params: usize,
    /// Multiply-adds of one eval-mode forward pass (convolutions).
    pub total_macs: u64,
    /// Output shapes: `logits`, then `deep[i]` and `aux[i]`.
    pub outputs: Vec<(String, Vec<usize>)>,
}

/// Runs one eval-mode forward pass on zeros of `input_shape` and records
/// every layer. Eval mode leaves running statistics untouched.
pub fn summarize(
    net: &dyn SegNetwork,
    input_shape: &[usize],
    device: &Device,
) -> Result<NetSummary> {
    let x = Tensor::zeros(input_shape.to_vec(), DType::F32, device)?;
    start_recording();
    let out = net.forward_t(&x, false);
    let layers = stop_recording();
    let out = out?;
    let mut outputs = vec![("logits".to_string(), out.logits.dims().to_vec())];
    for (i, t) in out.deep.iter().enumerate() {
        outputs.push((format!("deep[{i}]"), t.dims().to_vec()));
    }
    for (i, t) in out.aux.iter().enumerate() {
        outputs.push((format!("aux[{i}]"), t.dims().to_vec()));
    }
    let total_macs = layers.iter().map(|l| l.macs).sum();
    Ok(NetSummary {
        config: net.config(),
        input_shape: input_shape.to_vec(),
        layers,
        total_params: net.num_parameters(),
        total_macs,
        outputs,
    })
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.2} K", n / 1e3)
    } else {
        format!("{n}")
    }
}

impl fmt::Display for NetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .config
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("network");
        writeln!(f, "{name}  input {:?}", self.input_shape)?;
        let w = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:<w$}  {:<16}  {:<24}  {:>10}  {:>14}",
            "layer", "kind", "output", "params", "mult-adds"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<w$}  {:<16}  {:<24}  {:>10}  {:>14}",
                l.name,
                l.kind,
                format!("{:?}", l.output_shape),
                l.params,
                l.macs
            )?;
        }
        for (n, s) in &self.outputs {
            writeln!(f, "output {n}: {s:?}")?;
        }
        writeln!(
            f,
            "trainable parameters: {} ({})",
            self.total_params,
            human(self.total_params as f64)
        )?;
        write!(
            f,
            "multiply-adds per forward pass: {} ({})",
            self.total_macs,
            human(self.total_macs as f64)
        )
    }
}
