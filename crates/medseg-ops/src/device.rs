//! Which path an op takes: the fast CPU kernels of this crate, or candle's own
//! ops (any device and dtype, including CUDA).
//!
//! Every public op of this crate takes its kernel only when all its tensors
//! are f32 and on the CPU; otherwise it composes the same computation from
//! candle ops, which then run on the tensors' own device (candle's CUDA
//! kernels on a CUDA tensor). No op copies a tensor to or from the CPU.
//! [`with_candle_ops`] forces the candle path on the CPU as well, so that
//! tests and benchmarks can compare the two paths.

use candle_core::{DType, Tensor};
use std::cell::Cell;

thread_local! {
    static FORCE_CANDLE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the fast CPU kernels disabled on the calling thread: every op
/// of this crate called inside `f` (and the backward pass of the graph it
/// builds, which is recorded at forward time) uses candle's own ops, as it
/// does on a CUDA device. The previous setting is restored afterwards, also
/// when `f` panics.
pub fn with_candle_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCE_CANDLE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCE_CANDLE.with(|c| c.replace(true)));
    f()
}

/// True when the fast CPU kernels of this crate apply to `t`: an f32 tensor on
/// the CPU, outside [`with_candle_ops`]. Callers that compose their own
/// candle fallback (medseg-nets) use it to pick the same path as the ops.
pub fn fast_path(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !FORCE_CANDLE.with(|c| c.get())
}
