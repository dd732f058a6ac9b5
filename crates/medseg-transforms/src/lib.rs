#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod genesis;
mod geometric;
mod grid;
mod intensity;
mod invert;
mod label;
mod pipeline;
mod spatial;

pub use genesis::{bezier_lut, interp, InOutPainting, LocalShuffling, NonLinearTransform};
pub use geometric::{
    ElasticDeformation, RandomAffine, RandomRescale, RandomResizedCrop, RandomRotate, Resample,
};
pub use grid::{GridOp, Interp};
pub use intensity::{
    mean_std, percentile, BrightnessAdditive, BrightnessMultiplicative, ContrastAdjust,
    GammaCorrection, GaussianBlur, GaussianNoise, HistEqual, IntensityClip, NormalizeWithMeanStd,
    NormalizeWithMinMax, NormalizeWithPercentiles,
};
pub use invert::{invert_label, invert_prediction};
pub use label::{
    label_to_probability, LabelConvert, LabelToProbability, PartialLabelToProbability,
};
pub use pipeline::{
    build_pipeline, from_params, Constructor, Mode, Pipeline, Registry, Stage, Transform,
};
pub use spatial::{
    CenterCrop, CropWithForeground, Pad, RandomCrop, RandomFlip, RandomForegroundCrop, RandomRot90,
    RandomTranspose,
};

/// Names of the built-in transforms, as registered by [`Registry::with_builtins`].
pub const BUILTIN_NAMES: &[&str] = &[
    "BrightnessAdditive",
    "BrightnessMultiplicative",
    "CenterCrop",
    "ContrastAdjust",
    "CropWithForeground",
    "ElasticDeformation",
    "GammaCorrection",
    "GaussianBlur",
    "GaussianNoise",
    "HistEqual",
    "InOutPainting",
    "IntensityClip",
    "LabelConvert",
    "LabelToProbability",
    "LocalShuffling",
    "NonLinearTransform",
    "NormalizeWithMeanStd",
    "NormalizeWithMinMax",
    "NormalizeWithPercentiles",
    "Pad",
    "PartialLabelToProbability",
    "RandomAffine",
    "RandomCrop",
    "RandomFlip",
    "RandomForegroundCrop",
    "RandomRescale",
    "RandomResizedCrop",
    "RandomRot90",
    "RandomRotate",
    "RandomTranspose",
    "Resample",
];

fn register_builtins(r: &mut Registry) {
    r.register_de::<BrightnessAdditive>("BrightnessAdditive");
    r.register_de::<BrightnessMultiplicative>("BrightnessMultiplicative");
    r.register_de::<CenterCrop>("CenterCrop");
    r.register_de::<ContrastAdjust>("ContrastAdjust");
    r.register_de::<CropWithForeground>("CropWithForeground");
    r.register_de::<ElasticDeformation>("ElasticDeformation");
    r.register_de::<GammaCorrection>("GammaCorrection");
    r.register_de::<GaussianBlur>("GaussianBlur");
    r.register_de::<GaussianNoise>("GaussianNoise");
    r.register_de::<HistEqual>("HistEqual");
    r.register_de::<InOutPainting>("InOutPainting");
    r.register_de::<LocalShuffling>("LocalShuffling");
    r.register_de::<NonLinearTransform>("NonLinearTransform");
    r.register_de::<IntensityClip>("IntensityClip");
    r.register_de::<LabelConvert>("LabelConvert");
    r.register_de::<LabelToProbability>("LabelToProbability");
    r.register_de::<NormalizeWithMeanStd>("NormalizeWithMeanStd");
    r.register_de::<NormalizeWithMinMax>("NormalizeWithMinMax");
    r.register_de::<NormalizeWithPercentiles>("NormalizeWithPercentiles");
    r.register_de::<Pad>("Pad");
    r.register_de::<PartialLabelToProbability>("PartialLabelToProbability");
    r.register_de::<RandomAffine>("RandomAffine");
    r.register_de::<RandomCrop>("RandomCrop");
    r.register_de::<RandomFlip>("RandomFlip");
    r.register_de::<RandomForegroundCrop>("RandomForegroundCrop");
    r.register_de::<RandomRescale>("RandomRescale");
    r.register_de::<RandomResizedCrop>("RandomResizedCrop");
    r.register_de::<RandomRot90>("RandomRot90");
    r.register_de::<RandomRotate>("RandomRotate");
    r.register_de::<RandomTranspose>("RandomTranspose");
    r.register_de::<Resample>("Resample");
}
