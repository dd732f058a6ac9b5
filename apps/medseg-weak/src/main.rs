//! `medseg-weak`: weakly supervised training from scribbles, from a config
//! file with a `[weak]` section.

/// The `--help` text.
const ABOUT: &str = "Weakly supervised (scribble) training for medseg.

The training labels are scribbles: every unannotated pixel holds
dataset.ignore_label (default 255), so the configured loss (use CrossEntropyLoss)
is the partial cross-entropy. Scribbles come from the manifest's label column,
from another column (dataset.label_column = \"scribble\"), or are drawn from full
labels on the fly by the SimulateScribbles transform (first in
dataset.train_transforms).

The [weak] section selects the method (method = pCE, EntropyMinimization,
TotalVariation, MumfordShah, GatedCRF, USTM or DMPLS), the maximum weight of its
regularisation (regularize_w), its sigmoid ramp-up (rampup_start, rampup_end),
the teacher's EMA decay (ema_decay, USTM) and method parameters (params). DMPLS
needs DualDecoderUNet. Predict and evaluate with medseg-infer and medseg-eval.";

fn main() -> anyhow::Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    medseg_cli::train_main("medseg-weak", ABOUT, medseg_cli::Regime::Weak)
}
