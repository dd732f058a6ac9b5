//! Dropout masks as a function of the training step, so that a resumed
//! run draws the masks the uninterrupted run drew.
//!
//! Every network draws its dropout masks from its own seeded ChaCha
//! generator. Without a step set, the generator runs on from one call to
//! the next (its position depends on everything drawn before). With
//! [`set_dropout_step`]`(Some(s))` on the calling thread, a network's
//! first mask of step `s` restarts its generator at the beginning of
//! stream `s` (same key: the network's seed), so the masks of step `s`
//! depend on the seed and `s` alone. The training engine sets the step
//! before each step.

use rand_chacha::ChaCha8Rng;
use std::cell::Cell;

thread_local! {
    static STEP: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Sets (or with `None` clears) the training step whose dropout masks the
/// networks called from this thread draw; see the module documentation.
pub fn set_dropout_step(step: Option<u64>) {
    STEP.with(|s| s.set(step));
}

/// The step set on this thread, if any.
pub fn dropout_step() -> Option<u64> {
    STEP.with(|s| s.get())
}

/// Moves `rng` to the start of the current step's stream the first time it
/// draws in that step (the generator's stream number records the step it
/// is on). Steps should start at 1: stream 0 is where a new generator is.
pub(crate) fn align(rng: &mut ChaCha8Rng) {
    let Some(step) = dropout_step() else {
        return;
    };
    if rng.get_stream() != step {
        rng.set_stream(step);
        rng.set_word_pos(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn draws(rng: &mut ChaCha8Rng) -> Vec<u32> {
        align(rng);
        (0..4).map(|_| rng.random()).collect()
    }

    #[test]
    fn masks_depend_on_the_seed_and_the_step_only() {
        let mut a = ChaCha8Rng::seed_from_u64(7);
        let mut b = ChaCha8Rng::seed_from_u64(7);
        // b has drawn before (an earlier run, or a different history)
        let _: u64 = b.random();
        set_dropout_step(Some(3));
        let (x, y) = (draws(&mut a), draws(&mut b));
        assert_eq!(x, y);
        // within a step the stream runs on
        assert_ne!(draws(&mut a), x);
        set_dropout_step(Some(4));
        let z = draws(&mut a);
        assert_ne!(z, x);
        assert_eq!(draws(&mut b), z);
        set_dropout_step(None);
        let mut c = ChaCha8Rng::seed_from_u64(7);
        let mut d = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(draws(&mut c), draws(&mut d));
    }
}
