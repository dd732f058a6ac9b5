//! Encoders shared by several networks: the VGG feature extractor
//! ([`Vgg`], used by SegNet and TernausUNet), in torchvision's module
//! layout so that its state dicts import by name.

pub mod vgg;

pub use vgg::{Vgg, VGG11_CONVS, VGG16_CONVS, VGG_WIDTHS};
