//! PyMIC transforms (`train_transform = [...]` with `Name_param` keys in
//! `[dataset]`) to medseg transform specs, with PyMIC's defaults.

use super::{Ctx, Effect};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const SEC: &str = "dataset";

/// Every transform of PyMIC 0.6's `TransformDict`; their `name_` prefixes
/// identify transform parameters.
pub(crate) const PYMIC_TRANSFORMS: &[&str] = &[
    "Affine",
    "AdaptiveContrastAdjust",
    "BrightnessAdditive",
    "BrightnessMultiplicative",
    "ChannelWiseThreshold",
    "ChannelWiseThresholdWithNormalize",
    "CropWithBoundingBox",
    "CropWithForeground",
    "CropHumanRegion",
    "CenterCrop",
    "Crop4Dino",
    "Crop4VoCo",
    "Crop4Vox2Vec",
    "Crop4VoxMMSD",
    "Crop4VolumeFusion",
    "GrayscaleToRGB",
    "GammaCorrection",
    "GaussianNoise",
    "GaussianBlur",
    "HistEqual",
    "InPainting",
    "InOutPainting",
    "LabelConvert",
    "LabelSelect",
    "LabelConvertNonzero",
    "LabelToProbability",
    "LocalShuffling",
    "IntensityClip",
    "MaskedImageModeling",
    "NonLinearTransform",
    "NormalizeWithMeanStd",
    "NormalizeWithMinMax",
    "NormalizeWithPercentiles",
    "PartialLabelToProbability",
    "RandomCrop",
    "RandomSlice",
    "RandomResizedCrop",
    "RandomRescale",
    "RandomTranspose",
    "RandomFlip",
    "RandomRotate",
    "RandomRot90",
    "ReduceLabelDim",
    "Rescale",
    "Resample",
    "SelfReconstructionLabel",
    "MaskedImageModelingLabel",
    "OutPainting",
    "Pad",
    "PatchSwaping",
    "VolumeFusion",
    "VolumeFusionShuffle",
];

/// Transforms that only touch the label (nothing happens to an image
/// without one).
pub(crate) const LABEL_ONLY: &[&str] = &[
    "LabelConvert",
    "LabelToProbability",
    "PartialLabelToProbability",
];

/// What the transforms need from the rest of the config.
pub(crate) struct TfContext {
    /// `network.class_num` (PyMIC sets `LabelToProbability_class_num` from it).
    pub class_num: usize,
    /// `dataset.patch_size`: the default size of Pad, CenterCrop,
    /// RandomCrop and RandomResizedCrop.
    pub patch_size: Option<Value>,
    /// Image channels (`modal_num`).
    pub channels: usize,
}

/// Translates transform names, caching one spec (or `None` when unmapped)
/// per name, since PyMIC shares parameters between the lists.
pub(crate) struct Translator<'a> {
    tc: &'a TfContext,
    cache: BTreeMap<String, Option<Value>>,
}

impl<'a> Translator<'a> {
    pub(crate) fn new(tc: &'a TfContext) -> Self {
        Translator {
            tc,
            cache: BTreeMap::new(),
        }
    }

    /// Specs of a list of names (unmapped ones left out, and noted).
    pub(crate) fn list(&mut self, cx: &mut Ctx, list_key: &str, names: &[String]) -> Vec<Value> {
        names
            .iter()
            .filter_map(|n| {
                if !self.cache.contains_key(n) {
                    let spec = translate(cx, self.tc, n, list_key);
                    self.cache.insert(n.clone(), spec);
                }
                self.cache[n].clone()
            })
            .collect()
    }

    /// Notes the parameters of transforms in use that PyMIC does not read,
    /// and of transforms in no list.
    pub(crate) fn finish(&self, cx: &mut Ctx) {
        for key in cx.keys(SEC) {
            let Some(t) = PYMIC_TRANSFORMS
                .iter()
                .find(|t| key.starts_with(&format!("{}_", t.to_lowercase())))
            else {
                continue;
            };
            let why = match self.cache.get(*t) {
                Some(Some(_)) => format!("PyMIC 0.6's {t} does not read this parameter"),
                Some(None) => format!("a parameter of {t}, which is not mapped"),
                None => format!("{t} is in no transform list"),
            };
            cx.note(SEC, &key, Effect::NoEffect, why);
        }
    }
}

fn p(cx: &mut Ctx, name: &str, param: &str) -> Option<Value> {
    cx.get(SEC, &format!("{}_{param}", name.to_lowercase()))
}

fn num(cx: &mut Ctx, name: &str, param: &str, default: f64) -> f64 {
    p(cx, name, param)
        .and_then(|v| v.as_f64())
        .unwrap_or(default)
}

fn key(name: &str, param: &str) -> String {
    format!("{}_{param}", name.to_lowercase())
}

/// The size of a crop or pad: `Name_output_size`, else `dataset.patch_size`.
fn size(cx: &mut Ctx, tc: &TfContext, name: &str) -> Option<Value> {
    let s = p(cx, name, "output_size").or_else(|| tc.patch_size.clone());
    if s.is_none() {
        cx.note_free(
            &format!("dataset.{}", key(name, "output_size")),
            "(absent)",
            Effect::ChangesResults,
            format!("{name} needs an output size (or dataset.patch_size)"),
        );
    }
    s
}

/// Per-channel probability folded into one: PyMIC applies with `probability`
/// and then to each channel with `probability_per_channel`.
fn prob(cx: &mut Ctx, tc: &TfContext, name: &str) -> f64 {
    let p0 = num(cx, name, "probability", 0.5);
    let pc = num(cx, name, "probability_per_channel", 0.5);
    if tc.channels > 1 && pc < 1.0 {
        cx.note_free(
            &format!("dataset.{}", key(name, "probability_per_channel")),
            &pc.to_string(),
            Effect::Approximated,
            "medseg applies to all selected channels at once with probability \
             probability x probability_per_channel",
        );
    }
    p0 * pc
}

fn inverse(cx: &mut Ctx, name: &str, default: bool) {
    let k = key(name, "inverse");
    match cx.peek(SEC, &k).and_then(Value::as_bool) {
        Some(v) if v != default => cx.note(
            SEC,
            &k,
            Effect::ChangesResults,
            "medseg maps predictions back through spatial transforms when they change the \
             size; the choice is not configurable",
        ),
        _ => cx.note(SEC, &k, Effect::NoEffect, "PyMIC's default"),
    }
}

fn translate(cx: &mut Ctx, tc: &TfContext, name: &str, list_key: &str) -> Option<Value> {
    let mut s = Map::new();
    let put = |s: &mut Map<String, Value>, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            s.insert(k.into(), v);
        }
    };
    let medseg_name: &str = match name {
        "NormalizeWithMeanStd" => {
            for k in ["channels", "mean", "std", "mask_threshold"] {
                let v = p(cx, name, k);
                put(&mut s, k, v);
            }
            let bg = p(cx, name, "set_background_to_random").and_then(|v| v.as_bool());
            if s.contains_key("mask_threshold") && bg != Some(false) {
                cx.note_free(
                    &format!("dataset.{}", key(name, "set_background_to_random")),
                    "True",
                    Effect::ChangesResults,
                    "medseg keeps the normalised background; it does not replace it with noise",
                );
            }
            inverse(cx, name, false);
            name
        }
        "NormalizeWithMinMax" => {
            for k in ["channels", "threshold_lower", "threshold_upper"] {
                let v = p(cx, name, k);
                put(&mut s, k, v);
            }
            s.insert("output_range".into(), json!([-1.0, 1.0]));
            inverse(cx, name, false);
            name
        }
        "NormalizeWithPercentiles" => {
            let v = p(cx, name, "channels");
            put(&mut s, "channels", v);
            s.insert(
                "percentile_lower".into(),
                json!(num(cx, name, "percentile_lower", 0.1)),
            );
            s.insert(
                "percentile_upper".into(),
                json!(num(cx, name, "percentile_upper", 99.9)),
            );
            let mode = num(cx, name, "output_mode", 0.0);
            let range = if mode == 0.0 { [0.0, 1.0] } else { [-1.0, 1.0] };
            s.insert("output_range".into(), json!(range));
            s.insert("clip".into(), json!(true));
            inverse(cx, name, false);
            name
        }
        "IntensityClip" => {
            let v = p(cx, name, "channels");
            put(&mut s, "channels", v);
            let perc = p(cx, name, "percentile_mode").and_then(|v| v.as_bool()) == Some(true);
            for (k, pk) in [("lower", "percentile_lower"), ("upper", "percentile_upper")] {
                if let Some(v) = p(cx, name, k) {
                    if perc {
                        let first = v.as_array().and_then(|a| a.first().cloned()).unwrap_or(v);
                        s.insert(pk.into(), first);
                    } else {
                        s.insert(k.into(), v);
                    }
                }
            }
            inverse(cx, name, false);
            name
        }
        "GammaCorrection" => {
            let v = p(cx, name, "channels");
            put(&mut s, "channels", v);
            let r = [
                num(cx, name, "gamma_min", 0.7),
                num(cx, name, "gamma_max", 1.5),
            ];
            s.insert("gamma_range".into(), json!(r));
            s.insert("p".into(), json!(prob(cx, tc, name)));
            if num(cx, name, "intensity_flip_probability", 0.0) > 0.0 {
                cx.note_free(
                    &format!("dataset.{}", key(name, "intensity_flip_probability")),
                    "> 0",
                    Effect::ChangesResults,
                    "medseg's GammaCorrection does not invert intensities",
                );
            }
            inverse(cx, name, false);
            name
        }
        "GaussianNoise" => {
            let v = p(cx, name, "channels");
            put(&mut s, "channels", v);
            let r = [
                num(cx, name, "std_min", 0.02),
                num(cx, name, "std_max", 0.1),
            ];
            s.insert("std_range".into(), json!(r));
            s.insert("p".into(), json!(prob(cx, tc, name)));
            cx.note_free(
                &format!("dataset.{list_key}"),
                "GaussianNoise",
                Effect::Approximated,
                "PyMIC clips the noisy image to its former range; medseg does not",
            );
            inverse(cx, name, false);
            name
        }
        "GaussianBlur" | "BrightnessAdditive" | "BrightnessMultiplicative" => {
            let v = p(cx, name, "channels");
            put(&mut s, "channels", v);
            let (lo, hi) = (p(cx, name, "sigma_min"), p(cx, name, "sigma_max"));
            let range_key = if name == "GaussianBlur" {
                "sigma_range"
            } else {
                "range"
            };
            match (lo, hi) {
                (Some(a), Some(b)) => {
                    s.insert(range_key.into(), json!([a, b]));
                }
                _ => cx.note_free(
                    &format!("dataset.{}", key(name, "sigma_min")),
                    "(absent)",
                    Effect::ChangesResults,
                    format!("PyMIC's {name} requires sigma_min and sigma_max"),
                ),
            }
            s.insert("p".into(), json!(prob(cx, tc, name)));
            inverse(cx, name, false);
            name
        }
        "ContrastAdjust" => {
            let v = p(cx, name, "channels");
            put(&mut s, "channels", v);
            let r = [
                num(cx, name, "factor_min", 0.75),
                num(cx, name, "factor_max", 1.25),
            ];
            s.insert("range".into(), json!(r));
            let pr = p(cx, name, "preserve_range").unwrap_or(json!(true));
            s.insert("preserve_range".into(), pr);
            s.insert("p".into(), json!(prob(cx, tc, name)));
            inverse(cx, name, false);
            name
        }
        "HistEqual" => {
            let v = p(cx, name, "channels");
            put(&mut s, "channels", v);
            s.insert("bins".into(), json!(num(cx, name, "bin", 2000.0) as u64));
            inverse(cx, name, false);
            name
        }
        "Pad" | "CenterCrop" => {
            let sz = size(cx, tc, name)?;
            s.insert("size".into(), sz);
            if name == "Pad" && p(cx, name, "ceil_mode").and_then(|v| v.as_bool()) == Some(true) {
                cx.note_free(
                    "dataset.pad_ceil_mode",
                    "True",
                    Effect::ChangesResults,
                    "medseg's Pad pads to a size, not to a multiple of it",
                );
            }
            inverse(cx, name, true);
            name
        }
        "RandomCrop" => {
            let sz = size(cx, tc, name)?;
            s.insert("size".into(), sz);
            let focus = p(cx, name, "foreground_focus").and_then(|v| v.as_bool()) == Some(true);
            let ratio = p(cx, name, "foreground_ratio");
            let mask = p(cx, name, "mask_label");
            inverse(cx, name, true);
            if focus {
                s.insert(
                    "foreground_prob".into(),
                    json!(ratio.and_then(|v| v.as_f64()).unwrap_or(0.5)),
                );
                put(&mut s, "classes", mask);
                "RandomForegroundCrop"
            } else {
                name
            }
        }
        "RandomResizedCrop" => {
            let sz = size(cx, tc, name)?;
            s.insert("size".into(), sz);
            let (lo, hi) = (
                p(cx, name, "resize_lower_bound"),
                p(cx, name, "resize_upper_bound"),
            );
            if let (Some(a), Some(b)) = (lo, hi) {
                s.insert("scale_range".into(), json!([a, b]));
            }
            cx.note(
                SEC,
                &key(name, "resize_prob"),
                Effect::Approximated,
                "medseg's RandomResizedCrop always rescales",
            );
            if num(cx, name, "foreground_ratio", 0.0) > 0.0 {
                cx.note_free(
                    &format!("dataset.{}", key(name, "foreground_ratio")),
                    "> 0",
                    Effect::ChangesResults,
                    "medseg's RandomResizedCrop does not focus on the foreground",
                );
            }
            inverse(cx, name, false);
            name
        }
        "RandomFlip" => {
            let mut axes = Vec::new();
            if p(cx, name, "flip_width").and_then(|v| v.as_bool()) == Some(true) {
                axes.push(-1);
            }
            if p(cx, name, "flip_height").and_then(|v| v.as_bool()) == Some(true) {
                axes.push(-2);
            }
            if cx
                .peek(SEC, "randomflip_flip_depth")
                .and_then(Value::as_bool)
                == Some(true)
            {
                cx.note(
                    SEC,
                    "randomflip_flip_depth",
                    Effect::NoEffect,
                    "PyMIC 0.6 flips depth only for arrays of 3 dimensions, channel included, \
                     so never for volumes [C, D, H, W]",
                );
            } else {
                cx.get(SEC, "randomflip_flip_depth");
            }
            if axes.is_empty() {
                return None;
            }
            s.insert("axes".into(), json!(axes));
            s.insert("p".into(), json!(0.5));
            inverse(cx, name, true);
            name
        }
        "RandomRotate" => {
            for k in ["angle_range_d", "angle_range_h", "angle_range_w"] {
                let v = p(cx, name, k);
                put(&mut s, k, v);
            }
            s.insert("p".into(), json!(num(cx, name, "probability", 0.5)));
            inverse(cx, name, true);
            name
        }
        "RandomRot90" => {
            s.insert("p".into(), json!(num(cx, name, "probability", 0.75)));
            inverse(cx, name, true);
            name
        }
        "RandomTranspose" => {
            inverse(cx, name, true);
            name
        }
        "RandomRescale" => {
            let (lo, hi) = (p(cx, name, "lower_bound"), p(cx, name, "upper_bound"));
            match (lo, hi) {
                (Some(a), Some(b)) => {
                    s.insert("ratio_range".into(), json!([a, b]));
                }
                _ => cx.note_free(
                    "dataset.randomrescale_lower_bound",
                    "(absent)",
                    Effect::ChangesResults,
                    "PyMIC's RandomRescale requires lower_bound and upper_bound",
                ),
            }
            s.insert("p".into(), json!(num(cx, name, "probability", 0.5)));
            inverse(cx, name, false);
            name
        }
        "Resample" => {
            let v = p(cx, name, "output_spacing");
            put(&mut s, "spacing", v);
            cx.note(
                SEC,
                &key(name, "ignore_zspacing_range"),
                Effect::ChangesResults,
                "medseg's Resample always resamples every axis",
            );
            inverse(cx, name, true);
            name
        }
        "LabelConvert" => {
            for k in ["source_list", "target_list"] {
                let v = p(cx, name, k);
                put(&mut s, k, v);
            }
            inverse(cx, name, false);
            name
        }
        "LabelToProbability" => {
            // PyMIC overwrites the parameter with network.class_num
            p(cx, name, "class_num");
            s.insert("class_num".into(), json!(tc.class_num));
            inverse(cx, name, false);
            name
        }
        "PartialLabelToProbability" => {
            p(cx, name, "class_num");
            s.insert("class_num".into(), json!(tc.class_num));
            // PyMIC marks unannotated pixels with the value class_num
            s.insert("ignore_label".into(), json!(tc.class_num));
            inverse(cx, name, false);
            name
        }
        "CropWithForeground" => {
            let v = p(cx, name, "labels");
            put(&mut s, "classes", v);
            let m = p(cx, name, "margin").unwrap_or(json!([5, 10, 10]));
            s.insert("margin".into(), m);
            inverse(cx, name, true);
            name
        }
        other => {
            let why = if ["NonLinearTransform", "LocalShuffling", "InOutPainting"].contains(&other)
            {
                format!(
                    "medseg's {other} (a Model Genesis corruption for [pretrain] view_transforms) \
                     takes other parameters; PyMIC's self-supervised pipeline is not mapped yet"
                )
            } else if PYMIC_TRANSFORMS.contains(&other) {
                format!("medseg-transforms has no {other}")
            } else {
                format!("`{other}` is not one of PyMIC 0.6's transforms")
            };
            cx.note_free(
                &format!("dataset.{list_key}"),
                other,
                Effect::ChangesResults,
                why,
            );
            return None;
        }
    };
    s.insert("name".into(), json!(medseg_name));
    Some(Value::Object(s))
}
