//! Reusable encoders ("backbones") shared by several networks: the ResNet
//! of BasicBlocks ([`ResNet`]: CE-Net, PSPNet, DeepLabV3+) and the VGG
//! feature extractor ([`Vgg`]: SegNet, TernausUNet), in torchvision's module
//! layout so that their state dicts import by name, and the HRNet stages
//! ([`HRNetBackbone`]: HRNet) in JMedSeg's layout.

pub mod hrnet;
pub mod resnet;
pub mod vgg;

pub use hrnet::{HRNetBackbone, HRNetSpec};
pub use resnet::{BasicBlock, ResNet, ResNetNames, ResNetSpec};
pub use vgg::{Vgg, VGG11_CONVS, VGG16_CONVS, VGG_WIDTHS};
