//! SegViz (Kanhere et al. 2023, "SegViz: A federated-learning based
//! framework for multi-organ segmentation on heterogeneous data sets with
//! partial annotations"): sites annotating different organs share a body
//! and keep their own segmentation head.

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde::{Deserialize, Serialize};

use super::fedbn::default_norm_patterns;
use super::{ensure, parse_params, to_json};
use crate::aggregator::{check_patterns, matches_any, weighted_average, Aggregator, NormKeys};
use crate::error::{FedError, Result};
use crate::weights::{ClientUpdate, Weights};

/// The output layers of medseg-nets' networks, as glob patterns
/// ([`key_matches`](crate::key_matches)):
///
/// | pattern | network (layer) |
/// | --- | --- |
/// | `*out_conv*` | UNet 2D/3D, AttentionUNet, UNet_ScSE, UNet2D5, URPC, CCTNet (incl. `aux_decoders.N.decoder.out_conv`), DualDecoderUNet (`main_decoder`/`aux_decoder`), MCNet (`decoder1..3`), COPLENet, DANet, OCNet, OCRNet (`head.out_conv`), EANet (`out_conv`), and the deep-supervision heads `decoder.out_conv1..3` |
/// | `final.*`, `final_*` | UNet++ (and its deep-supervision heads), HRNet (`final_layer`) |
/// | `Conv_1x1.*` | R2UNet, R2AttentionUNet |
/// | `output_layer.*` | ResUNet |
/// | `outconv*` | UNet3Plus (`outconv1`, deep supervision `outconv2..5`) |
/// | `conv_final.*` | MultiResUNet (its final conv and batch norm) |
/// | `finalconv3.*` | CE-Net |
/// | `classifier.*` | SegNet (TernausUNet's `final` is matched by `final.*`) |
/// | `segmentation_head.*` | PSPNet, DeepLabV3+ |
/// | `out.conv.*` | UNETR (top-level `out` only) |
/// | `output.*` | Swin-UNet (top-level `output` only) |
/// | `side?.*` | U^2-Net's side outputs `side1..6` (its fused `outconv` is matched by `outconv*`) |
/// | `agg1.conv5.*` | HarDNet-MSEG |
/// | `decoder_2d.final_out.*` | SETR |
/// | `conv2.weight`, `conv2.bias` | DenseUNet (top-level `conv2` only; HRNet's stem `conv2` matches too and stays local) |
/// | `fuse.4.conv.*` | OneNet (LightNet's inner `fuse.4.conv` matches too and stays local) |
/// | `decode.2.conv.*` | LightNet |
///
/// D-LinkNet's `finalconv3` is matched by `finalconv3.*`.
pub const DEFAULT_HEAD_PATTERNS: [&str; 19] = [
    "*out_conv*",
    "final.*",
    "final_*",
    "Conv_1x1.*",
    "output_layer.*",
    "outconv*",
    "conv_final.*",
    "finalconv3.*",
    "classifier.*",
    "segmentation_head.*",
    "out.conv.*",
    "output.*",
    "conv2.weight",
    "conv2.bias",
    "side?.*",
    "agg1.conv5.*",
    "decoder_2d.final_out.*",
    "fuse.4.conv.*",
    "decode.2.conv.*",
];

/// SegViz's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegVizParams {
    /// Glob patterns of the head arrays that stay at each site. Default
    /// [`DEFAULT_HEAD_PATTERNS`]. The original work isolated MONAI's last
    /// up-sampling block (`model.2`); for medseg-nets' UNet the
    /// equivalent is `["decoder.up4.*", "decoder.out_conv*"]`.
    pub head_patterns: Vec<String>,
    /// Keep normalisation layers local too, as FedBN does (the paper's
    /// best variant, "SegViz-FedBN"). Default `false`.
    pub local_norms: bool,
    /// With `local_norms`: name patterns of normalisation arrays (as
    /// [`FedBNParams::norm_patterns`](crate::FedBNParams::norm_patterns)).
    pub norm_patterns: Vec<String>,
    /// With `local_norms`: detect normalisation layers from shapes (as
    /// [`FedBNParams::detect_norm_layers`](crate::FedBNParams::detect_norm_layers)).
    pub detect_norm_layers: bool,
}

impl Default for SegVizParams {
    fn default() -> Self {
        Self {
            head_patterns: DEFAULT_HEAD_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            local_norms: false,
            norm_patterns: default_norm_patterns(),
            detect_norm_layers: true,
        }
    }
}

/// SegViz: the shared body is averaged as FedAvg while each site's
/// segmentation head (arrays matching [`SegVizParams::head_patterns`])
/// stays local, so sites may even have heads with different numbers of
/// classes (head arrays are never compared across sites). With
/// [`SegVizParams::local_norms`] normalisation layers stay local too.
/// Registered as `SegViz`.
///
/// The global weights carry the initial heads unchanged; a usable model
/// of site `s` is the global body plus `s`'s head
/// ([`Weights::merge_local`]). A multi-organ prediction runs each site's
/// model on the image and combines their probabilities with
/// [`assemble_heads`].
#[derive(Debug, Clone, Default)]
pub struct SegViz {
    params: SegVizParams,
    norms: Option<NormKeys>,
}

impl SegViz {
    /// SegViz with `params`.
    ///
    /// # Errors
    /// No head pattern, or an empty pattern.
    pub fn new(params: SegVizParams) -> Result<Self> {
        ensure("SegViz", !params.head_patterns.is_empty(), || {
            "`head_patterns` is empty: every array would be averaged (that is FedAvg)".into()
        })?;
        check_patterns("SegViz", "head_patterns", &params.head_patterns)?;
        check_patterns("SegViz", "norm_patterns", &params.norm_patterns)?;
        let norms = params
            .local_norms
            .then(|| NormKeys::new(params.norm_patterns.clone(), params.detect_norm_layers));
        Ok(Self { params, norms })
    }

    /// Builds from JSON parameters, e.g.
    /// `{"head_patterns": ["decoder.out_conv*"], "local_norms": true}`.
    ///
    /// # Errors
    /// Unknown keys or bad values, named.
    pub fn from_json(params: &serde_json::Value) -> Result<Self> {
        Self::new(parse_params("SegViz", params)?)
    }

    /// The parameters.
    pub fn params(&self) -> &SegVizParams {
        &self.params
    }

    /// Whether `key` is a head array.
    pub fn is_head(&self, key: &str) -> bool {
        matches_any(&self.params.head_patterns, key)
    }

    fn observe(&mut self, w: &Weights) {
        if let Some(n) = &mut self.norms {
            n.observe(w);
        }
    }
}

impl Aggregator for SegViz {
    fn name(&self) -> &str {
        "SegViz"
    }

    fn params_json(&self) -> serde_json::Value {
        to_json(&self.params)
    }

    fn prepare(&mut self, initial: &Weights) -> Result<()> {
        self.observe(initial);
        Ok(())
    }

    fn aggregate(
        &mut self,
        round: usize,
        global: &Weights,
        updates: &[ClientUpdate],
    ) -> Result<Weights> {
        self.observe(global);
        for u in updates {
            self.observe(&u.weights);
        }
        let this = &*self;
        weighted_average(round, global, updates, &|k| this.is_local(k))
    }

    fn is_local(&self, key: &str) -> bool {
        self.is_head(key) || self.norms.as_ref().is_some_and(|n| n.contains(key))
    }
}

/// One site's prediction of an image, for [`assemble_heads`].
#[derive(Debug, Clone)]
pub struct HeadPrediction<'a> {
    /// The site, named in errors.
    pub site: &'a str,
    /// Class probabilities (softmax output) of the site's model (global
    /// body + its head), channel-first: `[C, H, W]` or `[C, D, H, W]`,
    /// spatial axes as the image's.
    pub probabilities: ArrayViewD<'a, f32>,
    /// The global label of each of the `C` channels; `0` is background
    /// (e.g. `[0, 1]` for a liver-only site, `[0, 3]` for a kidney-only
    /// one).
    pub labels: &'a [u16],
}

/// Assembles a multi-organ label map from the predictions of several sites
/// (each the shared body with that site's head): at each voxel every site
/// votes for its most probable channel (the first on ties); among the
/// sites voting for a foreground label the most confident one wins (the
/// first site on ties); the voxel is background when no site votes for
/// foreground. Returns the labels over the spatial axes (`[H, W]` or
/// `[D, H, W]`).
///
/// # Errors
/// No prediction, a prediction whose `labels` do not match its channels,
/// or spatial shapes that differ between sites (naming the site).
pub fn assemble_heads(heads: &[HeadPrediction<'_>]) -> Result<ArrayD<u16>> {
    let first = heads.first().ok_or_else(|| FedError::Prediction {
        site: "(none)".into(),
        msg: "no site prediction to assemble".into(),
    })?;
    let spatial = first.probabilities.shape().get(1..).unwrap_or(&[]).to_vec();
    let voxels: usize = spatial.iter().product();
    let mut best_p = vec![f32::NEG_INFINITY; voxels];
    let mut labels = vec![0u16; voxels];
    for h in heads {
        let shape = h.probabilities.shape();
        if shape.is_empty() || shape[0] == 0 {
            return Err(FedError::Prediction {
                site: h.site.to_string(),
                msg: format!("probabilities of shape {shape:?} have no channel axis"),
            });
        }
        let c = shape[0];
        if shape[1..] != spatial[..] {
            return Err(FedError::Prediction {
                site: h.site.to_string(),
                msg: format!(
                    "spatial shape {:?} differs from site `{}`'s {:?}",
                    &shape[1..],
                    first.site,
                    spatial
                ),
            });
        }
        if h.labels.len() != c {
            return Err(FedError::Prediction {
                site: h.site.to_string(),
                msg: format!("{} labels for {c} channels", h.labels.len()),
            });
        }
        let p = h.probabilities.as_standard_layout();
        let flat = p.as_slice().ok_or_else(|| FedError::Prediction {
            site: h.site.to_string(),
            msg: "probabilities are not contiguous".into(),
        })?;
        for j in 0..voxels {
            let mut arg = 0usize;
            let mut max = flat[j];
            for ch in 1..c {
                let v = flat[ch * voxels + j];
                if v > max {
                    max = v;
                    arg = ch;
                }
            }
            let label = h.labels[arg];
            if label != 0 && max > best_p[j] {
                best_p[j] = max;
                labels[j] = label;
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&spatial), labels).map_err(|e| FedError::Prediction {
        site: first.site.to_string(),
        msg: e.to_string(),
    })
}
