//! Process-wide settings for programs that train or run networks.
//!
//! A training step or a whole-volume inference allocates and frees buffers of
//! several MiB many times per second (every activation, gradient and patch
//! matrix). glibc's default `malloc` serves blocks over 128 KiB to 32 MiB
//! with `mmap` and gives them back with `munmap`, so each step page-faults
//! its activations in again, and trims freed memory at the top of the heap.
//! [`tune_allocator`] turns both off, as medseg's binaries and benchmarks do
//! at start-up; on `xtask bench unet` this made the quickstart UNet's
//! inference 1.6-1.7x and its training step up to 1.3x faster, with the same
//! peak resident memory (`docs/performance.md`).

/// Environment variable that, when set to `default`, leaves the allocator
/// as the C library configures it.
pub const MALLOC_ENV: &str = "MEDSEG_MALLOC";

/// Tunes glibc's `malloc` for large, short-lived tensor buffers: no `mmap`
/// for blocks under 1 GiB, no trimming of the heap, at most 4 arenas.
///
/// Call it once, first thing in `main`, before threads start. It is a
/// process-wide setting, which is why the library crates never call it; a
/// program that embeds medseg decides for itself. Returns whether the
/// settings were applied: `false` on other C libraries and platforms, or
/// when `MEDSEG_MALLOC=default` is set in the environment.
pub fn tune_allocator() -> bool {
    if std::env::var(MALLOC_ENV).is_ok_and(|v| v == "default") {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        // SAFETY: mallopt only changes allocator parameters; it returns 1 on
        // success and 0 when a value is rejected.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
                && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1
                && mallopt(M_ARENA_MAX, 4) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
