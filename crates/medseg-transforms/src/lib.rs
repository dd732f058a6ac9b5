#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cast;
mod colour;
mod genesis;
mod geometric;
mod grid;
mod intensity;
mod invert;
mod jpeg;
mod label;
mod moire;
mod perspective;
mod photo;
mod pipeline;
mod screen_photo;
mod spatial;

pub use cast::{apply_cast, CastParams, ScreenColorCast};
pub use colour::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, ColorJitter};
pub use genesis::{bezier_lut, interp, InOutPainting, LocalShuffling, NonLinearTransform};
pub use jpeg::{
    dct8x8, idct8x8, jpeg_block, jpeg_like, quant_table, quantise, JpegQuality, CHROMA_TABLE,
    LUMA_TABLE,
};
pub use moire::{moire_pattern, Moire, MoireCombine, MoireMode, MoireParams};
pub use perspective::{
    apply_homography, perspective_coeffs, perspective_warp, Corners, RandomPerspective,
};
pub use screen_photo::ScreenPhoto;

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
    "ColorJitter",
    "ContrastAdjust",
    "CropWithForeground",
    "ElasticDeformation",
    "GammaCorrection",
    "GaussianBlur",
    "GaussianNoise",
    "HistEqual",
    "InOutPainting",
    "IntensityClip",
    "JpegQuality",
    "LabelConvert",
    "LabelToProbability",
    "LocalShuffling",
    "Moire",
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
    "RandomPerspective",
    "RandomRescale",
    "RandomResizedCrop",
    "RandomRot90",
    "RandomRotate",
    "RandomTranspose",
    "Resample",
    "ScreenColorCast",
    "ScreenPhoto",
];

fn register_builtins(r: &mut Registry) {
    r.register_de::<BrightnessAdditive>("BrightnessAdditive");
    r.register_de::<BrightnessMultiplicative>("BrightnessMultiplicative");
    r.register_de::<CenterCrop>("CenterCrop");
    r.register_de::<ColorJitter>("ColorJitter");
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
    r.register_de::<JpegQuality>("JpegQuality");
    r.register_de::<LabelConvert>("LabelConvert");
    r.register_de::<LabelToProbability>("LabelToProbability");
    r.register_de::<Moire>("Moire");
    r.register_de::<NormalizeWithMeanStd>("NormalizeWithMeanStd");
    r.register_de::<NormalizeWithMinMax>("NormalizeWithMinMax");
    r.register_de::<NormalizeWithPercentiles>("NormalizeWithPercentiles");
    r.register_de::<Pad>("Pad");
    r.register_de::<PartialLabelToProbability>("PartialLabelToProbability");
    r.register_de::<RandomAffine>("RandomAffine");
    r.register_de::<RandomCrop>("RandomCrop");
    r.register_de::<RandomFlip>("RandomFlip");
    r.register_de::<RandomForegroundCrop>("RandomForegroundCrop");
    r.register_de::<RandomPerspective>("RandomPerspective");
    r.register_de::<RandomRescale>("RandomRescale");
    r.register_de::<RandomResizedCrop>("RandomResizedCrop");
    r.register_de::<RandomRot90>("RandomRot90");
    r.register_de::<RandomRotate>("RandomRotate");
    r.register_de::<RandomTranspose>("RandomTranspose");
    r.register_de::<Resample>("Resample");
    r.register_de::<ScreenColorCast>("ScreenColorCast");
    r.register_de::<ScreenPhoto>("ScreenPhoto");
}
