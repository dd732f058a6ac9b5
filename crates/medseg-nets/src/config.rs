//! Typed network configurations.
//!
//! The keys follow PyMIC's network section (`in_chns`, `class_num`,
//! `feature_chns`, `dropout`, `up_mode`, `multiscale_pred`, `dimension`,
//! `norm_type`), so a PyMIC configuration carries over. Unknown keys are
//! rejected with the key named in the error.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a decoder up-samples the coarser feature map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpMode {
    /// Transposed convolution, kernel 2 and stride 2 (PyMIC `0` / `"transconv"`).
    TransConv,
    /// 1x1 convolution then nearest up-sampling (PyMIC `1` / `"nearest"`).
    Nearest,
    /// 1x1 convolution then bi/tri-linear up-sampling with aligned corners
    /// (PyMIC `2` / `"bilinear"` / `"trilinear"`; the default).
    #[default]
    Linear,
}

impl UpMode {
    /// Parses PyMIC's integer or string spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0" | "transconv" => Some(UpMode::TransConv),
            "1" | "nearest" => Some(UpMode::Nearest),
            "2" | "bilinear" | "trilinear" | "linear" => Some(UpMode::Linear),
            _ => None,
        }
    }
}

impl Serialize for UpMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            UpMode::TransConv => "transconv",
            UpMode::Nearest => "nearest",
            UpMode::Linear => "bilinear",
        })
    }
}

impl<'de> Deserialize<'de> for UpMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        let raw = Raw::deserialize(d)?;
        let text = match raw {
            Raw::Int(i) => i.to_string(),
            Raw::Str(s) => s,
        };
        UpMode::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "up_mode `{text}` is not one of 0/transconv, 1/nearest, 2/bilinear/trilinear"
            ))
        })
    }
}

/// Normalisation after each convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormType {
    /// BatchNorm with running statistics (PyMIC's default).
    #[default]
    BatchNorm,
    /// InstanceNorm without affine parameters (PyTorch's default).
    InstanceNorm,
    /// GroupNorm with `group_num` groups and affine parameters.
    GroupNorm,
}

/// Kind of perturbation of an auxiliary decoder (CCT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuxDecoderType {
    /// Dropout on the deepest feature map (PyMIC `DropOut`, p = 0.5 here).
    DropOut,
    /// Drops the most activated region of the deepest feature map.
    FeatureDrop,
    /// Multiplicative uniform noise on the deepest feature map.
    FeatureNoise,
    /// Virtual adversarial perturbation of the deepest feature map.
    #[serde(rename = "VAT")]
    Vat,
}

fn d_dimension() -> usize {
    2
}
fn d_features() -> Vec<usize> {
    vec![32, 64, 128, 256, 512]
}
fn d_dropout() -> Vec<f64> {
    vec![0.0, 0.0, 0.2, 0.3, 0.4]
}
fn d_groups() -> usize {
    8
}
fn d_aux() -> Vec<AuxDecoderType> {
    vec![
        AuxDecoderType::DropOut,
        AuxDecoderType::FeatureDrop,
        AuxDecoderType::FeatureNoise,
        AuxDecoderType::Vat,
    ]
}
fn d_uniform() -> f64 {
    0.3
}
fn d_vat_it() -> usize {
    2
}
fn d_vat_xi() -> f64 {
    1e-6
}
fn d_vat_eps() -> f64 {
    2.0
}

/// Configuration shared by the UNet family (UNet, AttentionUNet, UNet++,
/// the dual-decoder, CCT, MCNet and URPC variants).
///
/// Defaults are PyMIC's: `feature_chns = [32, 64, 128, 256, 512]`,
/// `dropout = [0, 0, 0.2, 0.3, 0.4]`, `up_mode = bilinear`, batch norm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Registry name of the network (`net_type` in PyMIC files is accepted).
    #[serde(alias = "net_type")]
    pub name: String,
    /// Spatial dimensions of the convolutions, 2 or 3. A 2D network given a
    /// `[N, C, D, H, W]` tensor folds depth into the batch.
    #[serde(default = "d_dimension")]
    pub dimension: usize,
    /// Input channels.
    pub in_chns: usize,
    /// Output classes (logit channels).
    pub class_num: usize,
    /// Feature channels per resolution level, 2 to 5 levels.
    #[serde(default = "d_features")]
    pub feature_chns: Vec<usize>,
    /// Dropout probability per level (same length as `feature_chns`).
    #[serde(default = "d_dropout")]
    pub dropout: Vec<f64>,
    /// Up-sampling in the decoder.
    #[serde(default)]
    pub up_mode: UpMode,
    /// Deep supervision: extra 1x1 output heads on decoder levels 1..L-2,
    /// returned in [`crate::NetOutput::deep`] at their own resolution.
    #[serde(default, alias = "deep_supervise")]
    pub multiscale_pred: bool,
    /// Normalisation layer.
    #[serde(default)]
    pub norm_type: NormType,
    /// Groups for `group_norm`.
    #[serde(default = "d_groups")]
    pub group_num: usize,
    /// Seed of the initial weights and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
    /// UNet2D5 only: convolution dimension (2 or 3) per level (default
    /// `[2, 2, 3, 3, 3]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_dims: Option<Vec<usize>>,
    /// CCT only: the auxiliary decoders (default: all four kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cct_aux_decoders: Option<Vec<AuxDecoderType>>,
    /// CCT only: range of the multiplicative feature noise (default 0.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniform_range: Option<f64>,
    /// CCT only: VAT power iterations (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_it: Option<usize>,
    /// CCT only: VAT finite-difference step (default 1e-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_xi: Option<f64>,
    /// CCT only: VAT perturbation norm (default 2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_eps: Option<f64>,
}

impl UNetConfig {
    /// A configuration with PyMIC's defaults.
    pub fn new(name: &str, dimension: usize, in_chns: usize, class_num: usize) -> Self {
        Self {
            name: name.to_string(),
            dimension,
            in_chns,
            class_num,
            feature_chns: d_features(),
            dropout: d_dropout(),
            up_mode: UpMode::default(),
            multiscale_pred: false,
            norm_type: NormType::default(),
            group_num: d_groups(),
            seed: 0,
            conv_dims: None,
            cct_aux_decoders: None,
            uniform_range: None,
            vat_it: None,
            vat_xi: None,
            vat_eps: None,
        }
    }

    /// Names of the CCT-only keys that are set (an error for other networks).
    pub fn cct_keys_set(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.cct_aux_decoders.is_some() {
            v.push("cct_aux_decoders");
        }
        if self.uniform_range.is_some() {
            v.push("uniform_range");
        }
        if self.vat_it.is_some() {
            v.push("vat_it");
        }
        if self.vat_xi.is_some() {
            v.push("vat_xi");
        }
        if self.vat_eps.is_some() {
            v.push("vat_eps");
        }
        v
    }

    /// CCT auxiliary decoders, defaulting to all four kinds.
    pub fn aux_decoders(&self) -> Vec<AuxDecoderType> {
        self.cct_aux_decoders.clone().unwrap_or_else(d_aux)
    }

    /// CCT feature-noise range (default 0.3).
    pub fn uniform_range(&self) -> f64 {
        self.uniform_range.unwrap_or_else(d_uniform)
    }

    /// CCT VAT parameters `(iterations, xi, eps)` (default `(2, 1e-6, 2.0)`).
    pub fn vat_params(&self) -> (usize, f64, f64) {
        (
            self.vat_it.unwrap_or_else(d_vat_it),
            self.vat_xi.unwrap_or_else(d_vat_xi),
            self.vat_eps.unwrap_or_else(d_vat_eps),
        )
    }

    /// Checks the values (lengths, ranges) and names the first bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.dimension != 2 && self.dimension != 3 {
            return Err(format!("dimension must be 2 or 3, got {}", self.dimension));
        }
        if self.in_chns == 0 {
            return Err("in_chns must be positive".into());
        }
        if self.class_num == 0 {
            return Err("class_num must be positive".into());
        }
        let l = self.feature_chns.len();
        if !(2..=5).contains(&l) {
            return Err(format!("feature_chns must have 2 to 5 levels, got {l}"));
        }
        if self.feature_chns.contains(&0) {
            return Err("feature_chns must be positive".into());
        }
        if self.dropout.len() != l {
            return Err(format!(
                "dropout has {} values but feature_chns has {l} levels",
                self.dropout.len()
            ));
        }
        if let Some(p) = self.dropout.iter().find(|p| !(0.0..1.0).contains(*p)) {
            return Err(format!("dropout {p} is outside [0, 1)"));
        }
        if self.norm_type == NormType::GroupNorm {
            if let Some(c) = self
                .feature_chns
                .iter()
                .find(|c| self.group_num == 0 || *c % self.group_num != 0)
            {
                return Err(format!(
                    "group_num {} does not divide feature channels {c}",
                    self.group_num
                ));
            }
        }
        Ok(())
    }
}

/// The type a network configuration key's value must have, for naming the
/// key at fault when a typed configuration fails to deserialise (serde's
/// message does not name the field).
#[derive(Clone, Copy)]
pub(crate) enum KeyKind {
    /// A string.
    Str,
    /// A non-negative integer (`usize`).
    Usize,
    /// A seed (`u64`).
    U64,
    /// A number (`f64`).
    F64,
    /// A boolean.
    Bool,
    /// A list of non-negative integers.
    UsizeList,
}

/// The keys every typed network configuration has.
const COMMON_KEYS: [(&str, KeyKind); 6] = [
    ("name", KeyKind::Str),
    ("net_type", KeyKind::Str),
    ("dimension", KeyKind::Usize),
    ("in_chns", KeyKind::Usize),
    ("class_num", KeyKind::Usize),
    ("seed", KeyKind::U64),
];

/// The first key of `config` whose value does not have its type (looked up
/// in the common keys and in `keys`), as "`key`".
fn bad_key(config: &serde_json::Value, keys: &[(&str, KeyKind)]) -> Option<String> {
    use serde_json::from_value as de;
    let obj = config.as_object()?;
    obj.iter().find_map(|(k, v)| {
        let kind = COMMON_KEYS
            .iter()
            .chain(keys)
            .find(|(name, _)| name == k)
            .map(|(_, kind)| *kind)?;
        let ok = match kind {
            KeyKind::Str => de::<String>(v.clone()).is_ok(),
            KeyKind::Usize => de::<usize>(v.clone()).is_ok(),
            KeyKind::U64 => de::<u64>(v.clone()).is_ok(),
            KeyKind::F64 => de::<f64>(v.clone()).is_ok(),
            KeyKind::Bool => de::<bool>(v.clone()).is_ok(),
            KeyKind::UsizeList => de::<Vec<usize>>(v.clone()).is_ok(),
        };
        (!ok).then(|| format!("`{k}`"))
    })
}

/// Deserialises a typed network configuration; on failure the error names
/// the first key whose value has the wrong type (`keys`: the network's own
/// keys beyond the common ones) and quotes the configuration.
pub(crate) fn parse_net_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
    keys: &[(&str, KeyKind)],
) -> crate::error::Result<T> {
    serde_json::from_value(config.clone()).map_err(|e| {
        let key = bad_key(config, keys).map_or(String::new(), |k| format!("key {k}: "));
        crate::error::NetError::Config(format!("{key}{e} in {config}"))
    })
}
