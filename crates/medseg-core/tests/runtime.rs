//! `tune_allocator`: the opt-out, and large blocks served from the heap.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn large_blocks_come_from_the_heap_once_tuned() {
    use medseg_core::runtime::{tune_allocator, MALLOC_ENV};

    /// glibc's `struct mallinfo2`.
    #[repr(C)]
    #[allow(dead_code)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 only reads allocator statistics.
    let mmapped = || unsafe { mallinfo2().hblkhd };

    // untuned, a 16 MiB block is mmap-ed (glibc's threshold starts at 128 KiB)
    let before = mmapped();
    let big = std::hint::black_box(vec![1u8; 16 << 20]);
    assert!(mmapped() >= before + (16 << 20), "glibc default: mmap-ed");
    drop(big);

    // the opt-out leaves glibc alone
    std::env::set_var(MALLOC_ENV, "default");
    assert!(!tune_allocator());
    std::env::remove_var(MALLOC_ENV);

    assert!(tune_allocator());
    let before = mmapped();
    let big = std::hint::black_box(vec![1u8; 16 << 20]);
    assert_eq!(mmapped(), before, "tuned: the block comes from the heap");
    drop(big);
}
