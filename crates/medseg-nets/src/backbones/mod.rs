//! Reusable encoders ("backbones") shared by several networks: the ResNet
//! of BasicBlocks ([`ResNet`]: CE-Net, PSPNet, DeepLabV3+, D-LinkNet) and the
//! VGG feature extractor ([`Vgg`]: SegNet, TernausUNet), in torchvision's
//! module layout so that their state dicts import by name; JMedSeg's dilated
//! Bottleneck ResNet ([`DilatedResNet`]: DANet, OCNet, OCRNet, EANet) and HRNet
//! stages ([`HRNetBackbone`]: HRNet); HarDNet ([`HarDNet`]: HarDNet-MSEG) and
//! the ResNetV2 of TransUNet ([`resnetv2`]) in their authors' layouts.

pub mod dilated_resnet;
pub mod hardnet;
pub mod hrnet;
pub mod resnet;
pub mod resnetv2;
pub mod vgg;

pub use dilated_resnet::{Bottleneck, DilatedResNet, DilatedResNetSpec, ResNetFlavour};
pub use hardnet::{HarDBlock, HarDNet, HarDNetSpec};
pub use hrnet::{HRNetBackbone, HRNetSpec};
pub use resnet::{BasicBlock, ResNet, ResNetNames, ResNetSpec};
pub use vgg::{Vgg, VGG11_CONVS, VGG16_CONVS, VGG_WIDTHS};
