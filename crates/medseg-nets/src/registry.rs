//! Networks by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_nn::VarBuilder;

use crate::config::UNetConfig;
use crate::coplenet::COPLENet;
use crate::error::{NetError, Result};
use crate::layers::Ctx;
use crate::r2unet::{R2UNet, ResUNet};
use crate::stn::{Stn, StnConfig};
use crate::unet::{CCTNet, DualDecoderUNet, MCNet, UNet, URPCNet};
use crate::unet2d5::UNet2D5;
use crate::unet3plus::UNet3Plus;
use crate::unetpp::UNetPlusPlus;
use crate::SegNetwork;

/// Builds a network from its JSON configuration and a VarBuilder.
pub type NetBuilder =
    Arc<dyn Fn(&serde_json::Value, VarBuilder) -> Result<Box<dyn SegNetwork>> + Send + Sync>;

/// Maps network names (the `name` key of a configuration, PyMIC's
/// `net_type` is accepted too) to builders. Users add their own with
/// [`NetRegistry::register`].
#[derive(Clone)]
pub struct NetRegistry {
    builders: BTreeMap<String, NetBuilder>,
}

impl std::fmt::Debug for NetRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetRegistry")
            .field("names", &self.names())
            .finish()
    }
}

/// Which built-in network a name selects.
#[derive(Clone, Copy)]
enum Kind {
    UNet(Option<usize>),
    Attention(Option<usize>),
    UNetpp,
    Dual,
    MCNet,
    Cct,
    Urpc,
    UNet2D5,
    ScSE,
    Cople,
    R2(bool),
    Res,
    U3p,
}

/// Parses a [`UNetConfig`] from JSON, naming unknown keys and bad values.
pub fn parse_unet_config(config: &serde_json::Value) -> Result<UNetConfig> {
    let cfg: UNetConfig = serde_json::from_value(config.clone())
        .map_err(|e| NetError::Config(format!("{e} in {config}")))?;
    cfg.validate()
        .map_err(|m| NetError::Config(format!("{}: {m}", cfg.name)))?;
    Ok(cfg)
}

fn build_builtin(
    kind: Kind,
    config: &serde_json::Value,
    vb: VarBuilder,
) -> Result<Box<dyn SegNetwork>> {
    let mut cfg = parse_unet_config(config)?;
    let forced = match kind {
        Kind::UNet(d) | Kind::Attention(d) => d,
        _ => None,
    };
    if let Some(d) = forced {
        let given = config.get("dimension").and_then(|v| v.as_u64());
        if given.is_some_and(|g| g as usize != d) {
            return Err(NetError::Config(format!(
                "{}: dimension {} contradicts the name",
                cfg.name, cfg.dimension
            )));
        }
        cfg.dimension = d;
    }
    if matches!(kind, Kind::Cople) && cfg.dimension != 2 {
        return Err(NetError::Config(format!(
            "{}: COPLENet is a 2D network; dimension must be 2",
            cfg.name
        )));
    }
    if matches!(kind, Kind::UNet2D5) {
        let given = config.get("dimension").and_then(|v| v.as_u64());
        if given.is_some_and(|g| g != 3) {
            return Err(NetError::Config(format!(
                "{}: UNet2D5 takes 3D input; dimension must be 3",
                cfg.name
            )));
        }
        cfg.dimension = 3;
    } else if cfg.conv_dims.is_some() {
        return Err(NetError::Config(format!(
            "{}: key conv_dims applies to UNet2D5 only",
            cfg.name
        )));
    }
    if !matches!(kind, Kind::Cct) {
        let set = cfg.cct_keys_set();
        if !set.is_empty() {
            return Err(NetError::Config(format!(
                "{}: keys {} apply to CCTNet only",
                cfg.name,
                set.join(", ")
            )));
        }
    }
    let ctx = Ctx::new(vb, cfg.seed);
    let net: Box<dyn SegNetwork> = match kind {
        Kind::UNet(_) => Box::new(UNet::build(&ctx, cfg, false)?),
        Kind::Attention(_) => Box::new(UNet::build(&ctx, cfg, true)?),
        Kind::UNetpp => Box::new(UNetPlusPlus::build(&ctx, cfg)?),
        Kind::Dual => Box::new(DualDecoderUNet::build(&ctx, cfg)?),
        Kind::MCNet => Box::new(MCNet::build(&ctx, cfg)?),
        Kind::Cct => Box::new(CCTNet::build(&ctx, cfg)?),
        Kind::Urpc => Box::new(URPCNet::build(&ctx, cfg)?),
        Kind::UNet2D5 => Box::new(UNet2D5::build(&ctx, cfg)?),
        Kind::ScSE => Box::new(UNet::build(&ctx.with_scse(true), cfg, false)?),
        Kind::Cople => Box::new(COPLENet::build(&ctx, cfg)?),
        Kind::R2(att) => Box::new(R2UNet::build(&ctx, cfg, att)?),
        Kind::Res => Box::new(ResUNet::build(&ctx, cfg)?),
        Kind::U3p => Box::new(UNet3Plus::build(&ctx, cfg)?),
    };
    Ok(net)
}

impl NetRegistry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self {
            builders: BTreeMap::new(),
        }
    }

    /// The built-in networks:
    /// `UNet` (2D or 3D by `dimension`), `UNet2D`, `UNet3D`,
    /// `AttentionUNet`, `AttentionUNet2D`, `AttentionUNet3D`,
    /// `UNetpp` (alias `UNet++`, `NestedUNet`), `DualDecoderUNet` (alias
    /// `DBNet`), `MCNet`, `CCTNet`, `URPC`, `UNet2D5`, `UNet_ScSE`, `COPLENet` (2D), `R2UNet`,
    /// `R2AttentionUNet`, `ResUNet`, `UNet3Plus`, `MultiResUNet`, `DenseUNet`,
    /// `CENet` (alias `CE-Net`), `PSPNet`, `DeepLabV3Plus` (alias
    /// `DeepLabV3+`), `SegNet`, `TernausUNet`, `UNETR` (`UNETR2D`,
    /// `UNETR3D`), `SwinUNet` (alias `Swin-UNet`), `TransUNet`, `DANet`, `OCNet`, `OCRNet`,
    /// `U2Net`, `U2NetP` (alias `U2Net-small`), `CSNet` (alias `CS-Net`),
    /// `HarDNetMSEG` (alias `HarDNet-MSEG`), `SETR`, `OneNet`, `LightNet`, `HRNet`,
    /// `DLinkNet` (alias `D-LinkNet`), `EANet`.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        let table: [(&str, Kind); 21] = [
            ("UNet", Kind::UNet(None)),
            ("UNet2D", Kind::UNet(Some(2))),
            ("UNet3D", Kind::UNet(Some(3))),
            ("AttentionUNet", Kind::Attention(None)),
            ("AttentionUNet2D", Kind::Attention(Some(2))),
            ("AttentionUNet3D", Kind::Attention(Some(3))),
            ("UNetpp", Kind::UNetpp),
            ("UNet++", Kind::UNetpp),
            ("NestedUNet", Kind::UNetpp),
            ("DualDecoderUNet", Kind::Dual),
            ("DBNet", Kind::Dual),
            ("MCNet", Kind::MCNet),
            ("CCTNet", Kind::Cct),
            ("URPC", Kind::Urpc),
            ("UNet2D5", Kind::UNet2D5),
            ("UNet_ScSE", Kind::ScSE),
            ("COPLENet", Kind::Cople),
            ("R2UNet", Kind::R2(false)),
            ("R2AttentionUNet", Kind::R2(true)),
            ("ResUNet", Kind::Res),
            ("UNet3Plus", Kind::U3p),
        ];
        for (name, kind) in table {
            r.register(name, move |c, vb| build_builtin(kind, c, vb));
        }
        // Networks with their own configuration types.
        r.register("MultiResUNet", crate::multiresunet::build_from_config);
        r.register("DenseUNet", crate::denseunet::build_from_config);
        r.register("CENet", crate::cenet::build_from_config);
        r.register("CE-Net", crate::cenet::build_from_config);
        r.register("PSPNet", crate::pspnet::build_from_config);
        r.register("DeepLabV3Plus", crate::deeplabv3plus::build_from_config);
        r.register("DeepLabV3+", crate::deeplabv3plus::build_from_config);
        r.register("SegNet", crate::segnet::build_from_config);
        r.register("TernausUNet", crate::ternaus::build_from_config);
        // transformer hybrids (issue 21, part B)
        r.register("UNETR", |c, vb| {
            crate::unetr::build_from_config(c, vb, None)
        });
        r.register("UNETR2D", |c, vb| {
            crate::unetr::build_from_config(c, vb, Some(2))
        });
        r.register("UNETR3D", |c, vb| {
            crate::unetr::build_from_config(c, vb, Some(3))
        });
        // Swin-UNet
        r.register("SwinUNet", crate::swinunet::build_from_config);
        r.register("Swin-UNet", crate::swinunet::build_from_config);
        // TransUNet (network zoo II)
        r.register("TransUNet", crate::transunet::build_from_config);
        // attention heads on a dilated ResNet (JMedSeg)
        r.register("DANet", crate::danet::build_from_config);
        r.register("OCNet", crate::ocnet::build_from_config);
        r.register("OCRNet", crate::ocrnet::build_from_config);
        r.register("EANet", crate::eanet::build_from_config);
        // U2Net and CS-Net
        r.register("U2Net", |c, vb| {
            crate::u2net::build_from_config(c, vb, false)
        });
        r.register("U2NetP", |c, vb| {
            crate::u2net::build_from_config(c, vb, true)
        });
        r.register("U2Net-small", |c, vb| {
            crate::u2net::build_from_config(c, vb, true)
        });
        r.register("CSNet", crate::csnet::build_from_config);
        r.register("CS-Net", crate::csnet::build_from_config);
        // HarDNet-MSEG and SETR (JMedSeg)
        r.register("HarDNetMSEG", crate::hardnet_mseg::build_from_config);
        r.register("HarDNet-MSEG", crate::hardnet_mseg::build_from_config);
        r.register("SETR", crate::setr::build_from_config);
        // HRNet, D-LinkNet and JMedSeg's light networks
        r.register("OneNet", crate::onenet::build_from_config);
        r.register("LightNet", crate::lightnet::build_from_config);
        r.register("HRNet", crate::hrnet::build_from_config);
        r.register("DLinkNet", crate::dlinknet::build_from_config);
        r.register("D-LinkNet", crate::dlinknet::build_from_config);
        r
    }

    /// Adds (or replaces) a network under `name`.
    pub fn register<F>(&mut self, name: &str, builder: F)
    where
        F: Fn(&serde_json::Value, VarBuilder) -> Result<Box<dyn SegNetwork>>
            + Send
            + Sync
            + 'static,
    {
        self.builders.insert(name.to_string(), Arc::new(builder));
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.builders.keys().cloned().collect()
    }

    /// Builds the network named by `config["name"]` (or `config["net_type"]`).
    ///
    /// An `stn` table in the configuration (e.g. `"stn": {}`, see
    /// [`StnConfig`]) puts a spatial transformer in front of the network:
    /// the network is built from the rest of the configuration and wrapped
    /// in an [`Stn`] whose parameters live under `stn.`.
    pub fn build(&self, config: &serde_json::Value, vb: VarBuilder) -> Result<Box<dyn SegNetwork>> {
        // `pretrained` and `freeze_encoder` are the trainer's keys
        // (see `split_pretrained`), not the network's.
        if config.get(crate::PRETRAINED_KEY).is_some() || config.get(crate::FREEZE_KEY).is_some() {
            let (rest, _) = crate::split_pretrained(config)?;
            return self.build(&rest, vb);
        }
        if let Some(stn) = config.get("stn") {
            let cfg = StnConfig::from_json(stn)?;
            let mut rest = config.clone();
            if let Some(o) = rest.as_object_mut() {
                o.remove("stn");
            }
            let inner = self.build(&rest, vb.clone())?;
            return Ok(Box::new(Stn::new(&cfg, inner, vb)?));
        }
        let name = config
            .get("name")
            .or_else(|| config.get("net_type"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                NetError::Config(format!(
                    "missing string key `name` in network config {config}"
                ))
            })?;
        let b = self
            .builders
            .get(name)
            .ok_or_else(|| NetError::UnknownNetwork {
                name: name.to_string(),
                known: self.names().join(", "),
            })?;
        b(config, vb)
    }
}

impl Default for NetRegistry {
    fn default() -> Self {
        Self::with_builtins()
    }
}

/// Builds a built-in network from its configuration, e.g.
/// `{"name": "UNet", "dimension": 2, "in_chns": 1, "class_num": 2}`.
/// Parameters are created in (or read from) `vb` under PyMIC's names.
pub fn build_network(config: &serde_json::Value, vb: VarBuilder) -> Result<Box<dyn SegNetwork>> {
    NetRegistry::with_builtins().build(config, vb)
}
