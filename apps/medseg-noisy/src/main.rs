//! `medseg-noisy`: training from noisy labels, from a config file with a
//! `[noisy]` section.

/// The `--help` text.
const ABOUT: &str = "Training from noisy labels for medseg.

The training labels are noisy (dilated, eroded, distorted, shifted...). The
[noisy] section selects the method: Baseline (the configured loss on every
pixel; with GeneralizedCELoss, MAELoss or NoiseRobustDiceLoss as training.loss
it is the noise-robust-loss method), CoTeaching (two networks, each trained on
the pixels its peer finds small-loss; params forget_rate, gradual, exponent) or
TriNet (three networks, each trained on the pixels where the other two agree),
DAST (a clean and a noisy decoder, from a few clean images and many noisy ones;
dataset.train_noisy_csv) or CLSLSR (confident learning first trains `folds`
networks, each on the other folds, flags the pixels whose label their
out-of-sample probabilities contradict and writes them to
<output_dir>/confident/; then the network trains with SLSRLoss smoothing the
flagged labels; params folds, fold_iterations, prune, correct, group_column).
Noisy labels come from the manifest, or are made from clean ones on the fly by
the CorruptLabels transform (first in dataset.train_transforms). Predict and
evaluate with medseg-infer and medseg-eval.";

fn main() -> anyhow::Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    medseg_cli::train_main("medseg-noisy", ABOUT, medseg_cli::Regime::Noisy)
}
