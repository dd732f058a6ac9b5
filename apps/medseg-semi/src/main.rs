//! `medseg-semi`: semi-supervised training (a few labelled and many
//! unlabelled images) from a config file with a `[semi]` section.

/// The `--help` text.
const ABOUT: &str = "Semi-supervised training for medseg.

The [semi] section selects the method (method = EntropyMinimization, MeanTeacher,
UAMT, CCT, CPS, URPC or MCNet), the maximum weight of the unsupervised loss
(regularize_w), its sigmoid ramp-up (rampup_start, rampup_end, fractions of
training.iterations), the teacher's EMA decay (ema_decay, Mean Teacher and UA-MT)
and method parameters (params). Labelled images come from dataset.train_csv in
batches of dataset.train_batch_size, unlabelled ones from
dataset.train_unlabelled_csv in batches of dataset.train_batch_size_unlab. CCT,
URPC and MCNet need the networks CCTNet, URPC and MCNet.";

fn main() -> anyhow::Result<()> {
    // large tensor buffers: keep freed memory in the heap (docs/performance.md)
    medseg_core::runtime::tune_allocator();
    medseg_cli::train_main("medseg-semi", ABOUT, medseg_cli::Regime::Semi)
}
