//! A network of your own, trained by the engine: a type implementing
//! `SegNetwork`, a typed config, and one registration line in the network
//! registry; `network.name` in a config then selects it like a built-in one.
//!
//! `cargo run -p medseg-learners --example custom_network`

#[path = "common/mod.rs"]
mod common;

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};
use medseg_learners::{Registries, TrainerBuilder};
use medseg_nets::{NetOutput, ParamInfo, SegNetwork};
use serde::{Deserialize, Serialize};

/// `[network]` of the tiny fully convolutional network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyFcnConfig {
    /// Registry name.
    pub name: String,
    /// Input channels (filled in from `dataset.in_channels`).
    pub in_chns: usize,
    /// Classes (filled in from `dataset.class_num`).
    pub class_num: usize,
    /// Hidden channels.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Seed (filled in from `training.seed`; candle's initialisers draw
    /// from their own generator, so it is recorded, not used).
    #[serde(default)]
    pub seed: u64,
}

fn default_width() -> usize {
    8
}

/// Two 3x3 convolutions with a ReLU between them and a 1x1 classifier.
pub struct TinyFcn {
    cfg: TinyFcnConfig,
    layers: [Conv2d; 3],
    params: Vec<ParamInfo>,
}

impl TinyFcn {
    /// Builds the network under `vb`.
    pub fn new(cfg: &TinyFcnConfig, vb: VarBuilder) -> CandleResult<Self> {
        let pad = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let w = cfg.width;
        let layers = [
            candle_nn::conv2d(cfg.in_chns, w, 3, pad, vb.pp("conv1"))?,
            candle_nn::conv2d(w, w, 3, pad, vb.pp("conv2"))?,
            candle_nn::conv2d(w, cfg.class_num, 1, Default::default(), vb.pp("head"))?,
        ];
        let mut params = Vec::new();
        for (name, l) in ["conv1", "conv2", "head"].iter().zip(&layers) {
            params.push(ParamInfo {
                name: format!("{name}.weight"),
                shape: l.weight().dims().to_vec(),
                trainable: true,
            });
            if let Some(b) = l.bias() {
                params.push(ParamInfo {
                    name: format!("{name}.bias"),
                    shape: b.dims().to_vec(),
                    trainable: true,
                });
            }
        }
        Ok(TinyFcn {
            cfg: cfg.clone(),
            layers,
            params,
        })
    }
}

impl SegNetwork for TinyFcn {
    fn forward_t(&self, x: &Tensor, _train: bool) -> CandleResult<NetOutput> {
        let h = self.layers[0].forward(x)?.relu()?;
        let h = self.layers[1].forward(&h)?.relu()?;
        Ok(NetOutput {
            logits: self.layers[2].forward(&h)?,
            deep: Vec::new(),
            aux: Vec::new(),
        })
    }
    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }
    fn dimension(&self) -> usize {
        2
    }
    fn in_chns(&self) -> usize {
        self.cfg.in_chns
    }
    fn class_num(&self) -> usize {
        self.cfg.class_num
    }
    fn parameters(&self) -> &[ParamInfo] {
        &self.params
    }
}

/// Trains `TinyFCN` for a few iterations on a tiny phantom and checks that
/// the checkpoint holds its weights.
pub fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("data");
    common::tiny_phantom(&root)?;
    let out = dir.path().join("run");
    let net = "name = \"TinyFCN\"\nwidth = 6";
    let cfg = common::tiny_config(&root, &out, net, common::DICE_CE, "", "")?;

    let mut registries = Registries::with_builtins();
    // the one registration line
    registries.networks.register("TinyFCN", |v, vb| {
        let cfg: TinyFcnConfig = serde_json::from_value(v.clone())
            .map_err(|e| medseg_nets::NetError::Config(format!("TinyFCN: {e}")))?;
        Ok(Box::new(TinyFcn::new(&cfg, vb)?))
    });

    let mut trainer = TrainerBuilder::new(cfg)
        .registries(registries)
        .progress(false)
        .build()?;
    anyhow::ensure!(
        trainer.network().num_parameters() == (9 * 6 + 6) + (9 * 36 + 6) + (6 * 4 + 4),
        "parameter count"
    );
    let summary = trainer.run()?;
    println!("{summary}");
    let ck = out.join("checkpoints/latest.safetensors");
    let bytes = std::fs::read(&ck)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    anyhow::ensure!(st.tensor("conv2.weight")?.shape() == [6, 6, 3, 3]);
    anyhow::ensure!(summary.best.is_some(), "validation did not run");
    Ok(())
}
