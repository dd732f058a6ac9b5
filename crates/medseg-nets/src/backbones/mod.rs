//! Reusable encoders ("backbones") shared by several networks.

pub mod resnet;

pub use resnet::{BasicBlock, ResNet, ResNetNames, ResNetSpec};
