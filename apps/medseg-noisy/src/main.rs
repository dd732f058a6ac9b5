//! `medseg-noisy`: training from noisy labels, from a config file with a
//! `[noisy]` section.

/// The `--help` text.
const ABOUT: &str = "Training from noisy labels for medseg.

The training labels are noisy (dilated, eroded, distorted, shifted...). The
[noisy] section selects the method: Baseline (the configured loss on every
pixel; with GeneralizedCELoss, MAELoss or NoiseRobustDiceLoss as training.loss
it is the noise-robust-loss method), CoTeaching (two networks, each trained on
the pixels its peer finds small-loss; params forget_rate, gradual, exponent) or
TriNet (three networks, each trained on the pixels where the other two agree).
Noisy labels come from the manifest, or are made from clean ones on the fly by
the CorruptLabels transform (first in dataset.train_transforms). Predict and
evaluate with medseg-infer and medseg-eval.";

fn main() -> anyhow::Result<()> {
    medseg_cli::train_main("medseg-noisy", ABOUT, medseg_cli::Regime::Noisy)
}
