//! Shared CPU kernels for convolution and transposed convolution (private).
//!
//! Everything works on 5-D channel-first tensors `[N, C, D, H, W]`; 2-D ops are
//! mapped onto these with `D = 1` and a kernel depth of 1.
//!
//! Three primitives cover every forward and backward pass, for a convolution with
//! input `x [N, Cin, in...]`, weight `w [Cout, Cin/g, k...]` and output
//! `y [N, Cout, out...]`:
//! - [`conv_fwd`]: `y = conv(x, w)` (+ bias over `Cout`), im2col tiles + gemm;
//! - [`conv_bwd_data`]: `dx = conv^T(dy, w)` (+ bias over `Cin`), which is also the
//!   forward pass of a transposed convolution. It gathers `dy` patches for tiles
//!   of input positions (so tiles never write the same element) and multiplies
//!   by the transposed weight; the non-overlapping case (kernel == stride, e.g.
//!   the 2x2 stride-2 up-sampling of a UNet) is one gemm plus a scatter;
//! - [`conv_bwd_weight`]: `dw = sum_n dy · im2col(x)^T`, with per-thread
//!   accumulators.
//!
//! Work is split into (sample, tile of positions) items. With enough items they
//! run in parallel on rayon's pool with a single-threaded gemm each; otherwise
//! items run one after the other and gemm itself uses the rayon pool, so the two
//! levels never oversubscribe the cores. Patch buffers come from a thread-local
//! scratch vector that is reused between calls.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;
use std::cell::RefCell;

/// Geometry of one convolution (conv orientation: `inp` is the conv input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub inp: [usize; 3],
    pub out: [usize; 3],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
    pub d: [usize; 3],
    /// 2D convolution on rank-4 tensors: the depth axis (of size 1) is left
    /// out of the tensor shapes, so that no reshape enters the autograd graph.
    pub planar: bool,
}

fn prod3(a: [usize; 3]) -> usize {
    a[0] * a[1] * a[2]
}

impl Geom {
    fn in_sp(&self) -> usize {
        prod3(self.inp)
    }
    fn out_sp(&self) -> usize {
        prod3(self.out)
    }
    fn kvol(&self) -> usize {
        prod3(self.k)
    }
    fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of an im2col matrix (`Cin/g * kvol`).
    fn kdim(&self) -> usize {
        self.cin_g() * self.kvol()
    }
    /// Drops the depth axis (index 2) of a rank-5 shape in planar mode.
    fn shape(&self, d: [usize; 5]) -> Vec<usize> {
        if self.planar {
            vec![d[0], d[1], d[3], d[4]]
        } else {
            d.to_vec()
        }
    }
    pub(crate) fn x_dims(&self) -> Vec<usize> {
        self.shape([self.n, self.cin, self.inp[0], self.inp[1], self.inp[2]])
    }
    pub(crate) fn y_dims(&self) -> Vec<usize> {
        self.shape([self.n, self.cout, self.out[0], self.out[1], self.out[2]])
    }
    pub(crate) fn w_dims(&self) -> Vec<usize> {
        self.shape([self.cout, self.cin_g(), self.k[0], self.k[1], self.k[2]])
    }
    /// 1x1x1 kernel, stride 1, no padding: the conv is a plain matrix product.
    fn pointwise(&self) -> bool {
        self.k == [1; 3] && self.s == [1; 3] && self.p == [0; 3] && self.inp == self.out
    }
    /// Kernel equal to stride, no padding, no dilation, output tiles the input
    /// exactly: every input element belongs to exactly one patch.
    fn patchify(&self) -> bool {
        (0..3).all(|i| {
            self.k[i] == self.s[i]
                && self.p[i] == 0
                && (self.d[i] == 1 || self.k[i] == 1)
                && self.out[i] * self.s[i] == self.inp[i]
        })
    }
}

// ---------------------------------------------------------------------------
// helpers: slices, scratch, pointers, gemm

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str, dims: &[usize]) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("medseg-ops {op}: only f32 tensors are supported"),
    };
    if l.dims() != dims {
        bail!(
            "medseg-ops {op}: expected shape {dims:?}, got {:?}",
            l.dims()
        );
    }
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("medseg-ops {op}: expected a contiguous tensor"),
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a reusable thread-local buffer of `len` floats (contents
/// unspecified) that starts on a 64-byte boundary, so that the gemm
/// microkernel's 16-float loads of a patch matrix each touch one cache line.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    const PAD: usize = 16; // floats in a cache line
    fn aligned(v: &mut [f32], len: usize) -> &mut [f32] {
        let off = v.as_ptr().align_offset(64).min(PAD);
        &mut v[off..off + len]
    }
    SCRATCH.with(|c| match c.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len + PAD {
                v.resize(len + PAD, 0.0);
            }
            f(aligned(&mut v, len))
        }
        // re-entered on this thread (work stealing): use a fresh buffer
        Err(_) => f(aligned(&mut vec![0.0; len + PAD], len)),
    })
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `dst[m x n] (=|+=) lhs[m x k] · rhs[k x n]`, all row/column strides in elements;
/// `dst` has column stride 1 and row stride `dst_rs`.
///
/// # Safety
/// All pointers must be valid for the given extents and `dst` must not alias the inputs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    parallel: bool,
) {
    sgemm_strided(
        m,
        n,
        k,
        (dst, dst_rs, 1),
        accumulate,
        (lhs, lhs_rs, lhs_cs),
        (rhs, rhs_rs, rhs_cs),
        parallel,
    )
}

/// [`sgemm`] with any `dst` strides; each matrix is `(pointer, row stride,
/// column stride)`. The gemm kernel reads its left operand fastest when that
/// operand's row stride is 1 (it then packs by copying runs instead of
/// gathering), and its right operand without packing when that operand's row
/// stride is 1; a column-major `dst` keeps the problem the way round it is
/// given.
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_rs, dst_cs): (*mut f32, usize, usize),
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.add(i * dst_rs + j * dst_cs) = 0.0;
                }
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        if parallel {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        },
    )
}

/// Number of positions per tile for a patch matrix with `rows` rows.
fn tile_len(rows: usize, positions: usize, n: usize, min_tile: usize) -> usize {
    const BUDGET: usize = 96 * 1024; // floats, ~384 KB
    let mut t = (BUDGET / rows.max(1)).max(min_tile);
    t = t.div_ceil(16) * 16;
    // enough items for the threads when there are few samples
    let want = 4 * rayon::current_num_threads();
    let tiles_wanted = want.div_ceil(n.max(1));
    if positions.div_ceil(t) < tiles_wanted {
        t = positions.div_ceil(tiles_wanted).max(min_tile).div_ceil(16) * 16;
    }
    t.clamp(1, positions.max(1))
}

/// Whether `items` work items should run in parallel (each with a serial gemm).
pub(crate) fn outer_parallel(items: usize) -> bool {
    let nt = rayon::current_num_threads();
    nt > 1 && items >= 2 * nt
}

pub(crate) fn run_items(items: usize, f: impl Fn(usize, bool) + Sync) {
    if outer_parallel(items) {
        (0..items).into_par_iter().for_each(|i| f(i, false));
    } else {
        let par = rayon::current_num_threads() > 1;
        for i in 0..items {
            f(i, par);
        }
    }
}

/// Decomposes a flat position into (d, h, w).
fn unflat(p: usize, dims: [usize; 3]) -> (usize, usize, usize) {
    (
        p / (dims[1] * dims[2]),
        (p / dims[2]) % dims[1],
        p % dims[2],
    )
}

/// Calls `f(j, len, d, h, w0)` for each run of positions of `[p0, p1)` that
/// lies within one row along W (`j` is the offset of the run inside the tile).
#[inline]
fn for_runs(
    p0: usize,
    p1: usize,
    dims: [usize; 3],
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let (mut d, mut h, mut w) = unflat(p0, dims);
    let mut p = p0;
    while p < p1 {
        let len = (dims[2] - w).min(p1 - p);
        f(p - p0, len, d, h, w);
        p += len;
        w = 0;
        h += 1;
        if h == dims[1] {
            h = 0;
            d += 1;
        }
    }
}

/// Forward map along one axis: input index `o*s + off`, if inside `[0, n)`.
#[inline]
fn fwd_idx(o: usize, s: usize, off: isize, n: usize) -> Option<usize> {
    let i = (o * s) as isize + off;
    (i >= 0 && (i as usize) < n).then_some(i as usize)
}

/// Backward map along one axis: output index `(i + off) / s` when divisible and inside `[0, n)`.
#[inline]
fn bwd_idx(i: usize, s: usize, off: isize, n: usize) -> Option<usize> {
    let t = i as isize + off;
    if t < 0 || (t as usize) % s != 0 {
        return None;
    }
    let o = t as usize / s;
    (o < n).then_some(o)
}

/// `seg[j] = src[(w0 + j)*s + off]`, zero where outside `src`.
#[inline]
fn fill_fwd(seg: &mut [f32], src: &[f32], w0: usize, s: usize, off: isize) {
    let len = seg.len();
    let n = src.len() as isize;
    let lo_w = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(s)
    };
    let j_lo = lo_w.saturating_sub(w0).min(len);
    let lim = n - 1 - off;
    let j_hi = if lim < 0 {
        0
    } else {
        (lim as usize / s + 1).saturating_sub(w0).min(len)
    }
    .max(j_lo);
    seg[..j_lo].fill(0.0);
    seg[j_hi..].fill(0.0);
    if j_hi > j_lo {
        let start = ((w0 + j_lo) * s) as isize + off;
        let start = start as usize;
        if s == 1 {
            seg[j_lo..j_hi].copy_from_slice(&src[start..start + (j_hi - j_lo)]);
        } else {
            for (k, v) in seg[j_lo..j_hi].iter_mut().enumerate() {
                *v = src[start + k * s];
            }
        }
    }
}

/// `seg[j] = src[(w0 + j + off)/s]` when divisible and inside `src`, else zero.
#[inline]
fn fill_bwd(seg: &mut [f32], src: &[f32], w0: usize, s: usize, off: isize) {
    if s == 1 {
        fill_fwd(seg, src, w0, 1, off);
        return;
    }
    for (j, v) in seg.iter_mut().enumerate() {
        *v = match bwd_idx(w0 + j, s, off, src.len()) {
            Some(o) => src[o],
            None => 0.0,
        };
    }
}

/// im2col for positions `[p0, p1)` of the output of sample `xn` (all channels), group `grp`.
/// `col` is `[Cin/g * kvol, p1 - p0]` row-major, rows ordered like the weight.
fn im2col(g: &Geom, xn: &[f32], grp: usize, p0: usize, p1: usize, col: &mut [f32]) {
    let tw = p1 - p0;
    let isp = g.in_sp();
    let [id_n, ih_n, iw_n] = g.inp;
    let mut row = 0;
    for ci in 0..g.cin_g() {
        let xc = &xn[(grp * g.cin_g() + ci) * isp..][..isp];
        for kd in 0..g.k[0] {
            let offd = (kd * g.d[0]) as isize - g.p[0] as isize;
            for kh in 0..g.k[1] {
                let offh = (kh * g.d[1]) as isize - g.p[1] as isize;
                for kw in 0..g.k[2] {
                    let offw = (kw * g.d[2]) as isize - g.p[2] as isize;
                    let dst = &mut col[row * tw..(row + 1) * tw];
                    for_runs(p0, p1, g.out, |j, len, od, oh, ow| {
                        let seg = &mut dst[j..j + len];
                        match (
                            fwd_idx(od, g.s[0], offd, id_n),
                            fwd_idx(oh, g.s[1], offh, ih_n),
                        ) {
                            (Some(id), Some(ih)) => {
                                let src = &xc[(id * ih_n + ih) * iw_n..][..iw_n];
                                fill_fwd(seg, src, ow, g.s[2], offw);
                            }
                            _ => seg.fill(0.0),
                        }
                    });
                    row += 1;
                }
            }
        }
    }
}

/// Gathers `dy` patches for input positions `[q0, q1)` of sample `dyn_`, group `grp`:
/// `col[(co, k), j] = dy[co, o]` where `o*s - p + k*d = i`. Shape `[Cout/g * kvol, q1 - q0]`.
fn gather_dy(g: &Geom, dyn_: &[f32], grp: usize, q0: usize, q1: usize, col: &mut [f32]) {
    let tw = q1 - q0;
    let osp = g.out_sp();
    let [od_n, oh_n, ow_n] = g.out;
    let mut row = 0;
    for co in 0..g.cout_g() {
        let dyc = &dyn_[(grp * g.cout_g() + co) * osp..][..osp];
        for kd in 0..g.k[0] {
            let offd = g.p[0] as isize - (kd * g.d[0]) as isize;
            for kh in 0..g.k[1] {
                let offh = g.p[1] as isize - (kh * g.d[1]) as isize;
                for kw in 0..g.k[2] {
                    let offw = g.p[2] as isize - (kw * g.d[2]) as isize;
                    let dst = &mut col[row * tw..(row + 1) * tw];
                    for_runs(q0, q1, g.inp, |j, len, id, ih, iw| {
                        let seg = &mut dst[j..j + len];
                        match (
                            bwd_idx(id, g.s[0], offd, od_n),
                            bwd_idx(ih, g.s[1], offh, oh_n),
                        ) {
                            (Some(od), Some(oh)) => {
                                let src = &dyc[(od * oh_n + oh) * ow_n..][..ow_n];
                                fill_bwd(seg, src, iw, g.s[2], offw);
                            }
                            _ => seg.fill(0.0),
                        }
                    });
                    row += 1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// the three primitives

/// `y = conv(x, w) + bias`; `x [N,Cin,in]`, `w [Cout,Cin/g,k]`, `y [N,Cout,out]`.
/// 3x3 stride-1 convolutions in the plane go through Winograd F(2x2, 3x3)
/// ([`crate::conv_winograd`]), everything else through im2col and gemm.
pub(crate) fn conv_fwd(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if crate::conv_winograd::applies(g) {
        return crate::conv_winograd::forward(g, x, w, bias);
    }
    conv_fwd_im2col(g, x, w, bias)
}

/// [`conv_fwd`] through im2col tiles and gemm, for any geometry.
pub(crate) fn conv_fwd_im2col(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (isp, osp) = (g.in_sp(), g.out_sp());
    let (cin_g, cout_g, kdim) = (g.cin_g(), g.cout_g(), g.kdim());
    let len = g.n * g.cout * osp;
    // every element is written below (each tile by its gemm), so no zero fill
    let mut y: Vec<f32> = Vec::with_capacity(len);
    if osp == 0 || g.n == 0 {
        return y;
    }
    let pw = g.pointwise();
    let t = tile_len(if pw { 1 } else { kdim }, osp, g.n, 64);
    let tiles = osp.div_ceil(t);
    let yp = SendPtr(y.as_mut_ptr());
    run_items(g.n * tiles, |it, par| {
        let (ni, ti) = (it / tiles, it % tiles);
        let p0 = ti * t;
        let p1 = (p0 + t).min(osp);
        let tw = p1 - p0;
        let xn = &x[ni * g.cin * isp..(ni + 1) * g.cin * isp];
        for grp in 0..g.groups {
            let wg = w[grp * cout_g * kdim..].as_ptr();
            // SAFETY: rows [grp*cout_g, (grp+1)*cout_g) x cols [p0, p1) of sample ni are
            // written by this item only.
            unsafe {
                let dst = yp.get().add((ni * g.cout + grp * cout_g) * osp + p0);
                if pw {
                    let rhs = xn[grp * cin_g * isp + p0..].as_ptr();
                    sgemm(
                        cout_g, tw, cin_g, dst, osp, false, wg, kdim, 1, rhs, isp, 1, par,
                    );
                } else {
                    with_scratch(kdim * tw, |col| {
                        im2col(g, xn, grp, p0, p1, col);
                        sgemm(
                            cout_g,
                            tw,
                            kdim,
                            dst,
                            osp,
                            false,
                            wg,
                            kdim,
                            1,
                            col.as_ptr(),
                            tw,
                            1,
                            par,
                        );
                    });
                }
                if let Some(b) = bias {
                    for co in 0..cout_g {
                        let bv = b[grp * cout_g + co];
                        let row = std::slice::from_raw_parts_mut(dst.add(co * osp), tw);
                        row.iter_mut().for_each(|v| *v += bv);
                    }
                }
            }
        }
    });
    // SAFETY: the items cover every (sample, channel, position) of y and
    // each gemm writes its whole tile (no accumulation into y).
    unsafe { y.set_len(len) };
    y
}

/// `dx = conv^T(dy, w) + bias[Cin]`: the input gradient of [`conv_fwd`], also the
/// forward pass of a transposed convolution.
/// Winograd for the same geometries as [`conv_fwd`].
pub(crate) fn conv_bwd_data(g: &Geom, dy: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if crate::conv_winograd::applies(g) {
        return crate::conv_winograd::backward_data(g, dy, w, bias);
    }
    conv_bwd_data_im2col(g, dy, w, bias)
}

/// [`conv_bwd_data`] through gathered `dy` patches (or one gemm and a
/// scatter when kernel equals stride), for any geometry.
pub(crate) fn conv_bwd_data_im2col(
    g: &Geom,
    dy: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (isp, osp) = (g.in_sp(), g.out_sp());
    let (cin_g, cout_g, kdim, kvol) = (g.cin_g(), g.cout_g(), g.kdim(), g.kvol());
    let len = g.n * g.cin * isp;
    // every element is written below (gemm tiles, or exactly one scatter per
    // element in the patchify case), so no zero fill
    let mut dx: Vec<f32> = Vec::with_capacity(len);
    if isp == 0 || g.n == 0 {
        return dx;
    }
    let dxp = SendPtr(dx.as_mut_ptr());
    let add_bias = |dst: *mut f32, grp: usize, tw: usize| {
        if let Some(b) = bias {
            for ci in 0..cin_g {
                let bv = b[grp * cin_g + ci];
                // SAFETY: caller passes a tile it owns
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(ci * isp), tw) };
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    };
    if g.pointwise() {
        let t = tile_len(1, isp, g.n, 64);
        let tiles = isp.div_ceil(t);
        run_items(g.n * tiles, |it, par| {
            let (ni, ti) = (it / tiles, it % tiles);
            let p0 = ti * t;
            let tw = (p0 + t).min(isp) - p0;
            for grp in 0..g.groups {
                // lhs(ci, co) = w[(grp*cout_g + co)*cin_g + ci]
                let lhs = w[grp * cout_g * cin_g..].as_ptr();
                let rhs = dy[(ni * g.cout + grp * cout_g) * osp + p0..].as_ptr();
                unsafe {
                    let dst = dxp.get().add((ni * g.cin + grp * cin_g) * isp + p0);
                    sgemm(
                        cin_g, tw, cout_g, dst, isp, false, lhs, 1, cin_g, rhs, osp, 1, par,
                    );
                    add_bias(dst, grp, tw);
                }
            }
        });
    } else if g.patchify() {
        // one gemm per tile of output positions, then scatter each (ci, k) row
        let t = tile_len(kdim, osp, g.n, 64);
        let tiles = osp.div_ceil(t);
        let [_, ih_n, iw_n] = g.inp;
        run_items(g.n * tiles, |it, par| {
            let (ni, ti) = (it / tiles, it % tiles);
            let p0 = ti * t;
            let p1 = (p0 + t).min(osp);
            let tw = p1 - p0;
            for grp in 0..g.groups {
                let lhs = w[grp * cout_g * kdim..].as_ptr();
                let rhs = dy[(ni * g.cout + grp * cout_g) * osp + p0..].as_ptr();
                with_scratch(kdim * tw, |tmp| {
                    // tmp[(ci,k), j] = sum_co w[co, ci, k] dy[co, p0 + j]
                    unsafe {
                        sgemm(
                            kdim,
                            tw,
                            cout_g,
                            tmp.as_mut_ptr(),
                            tw,
                            false,
                            lhs,
                            1,
                            kdim,
                            rhs,
                            osp,
                            1,
                            par,
                        )
                    };
                    for ci in 0..cin_g {
                        let c = grp * cin_g + ci;
                        let bv = bias.map_or(0.0, |b| b[c]);
                        let base = (ni * g.cin + c) * isp;
                        for kk in 0..kvol {
                            let (kd, kh, kw) = unflat(kk, g.k);
                            let src = &tmp[(ci * kvol + kk) * tw..][..tw];
                            for_runs(p0, p1, g.out, |j, len, od, oh, ow| {
                                let id = od * g.s[0] + kd;
                                let ih = oh * g.s[1] + kh;
                                let row0 = base + (id * ih_n + ih) * iw_n + kw;
                                for (m, v) in src[j..j + len].iter().enumerate() {
                                    // SAFETY: in the patchify case every dx element has
                                    // exactly one (position, k) pair, so items never overlap.
                                    unsafe { *dxp.get().add(row0 + (ow + m) * g.s[2]) = v + bv };
                                }
                            });
                        }
                    }
                });
            }
        });
    } else {
        // gather form: tiles of input positions, dx_tile = W^T · gather(dy)
        let rows = cout_g * kvol;
        // wt[grp][ci][(co, k)] = w[grp*cout_g + co][ci][k]
        let mut wt = vec![0f32; g.groups * cin_g * rows];
        for grp in 0..g.groups {
            for co in 0..cout_g {
                for ci in 0..cin_g {
                    let src = &w[((grp * cout_g + co) * cin_g + ci) * kvol..][..kvol];
                    let dst = &mut wt[(grp * cin_g + ci) * rows + co * kvol..][..kvol];
                    dst.copy_from_slice(src);
                }
            }
        }
        let t = tile_len(rows, isp, g.n, 64);
        let tiles = isp.div_ceil(t);
        run_items(g.n * tiles, |it, par| {
            let (ni, ti) = (it / tiles, it % tiles);
            let q0 = ti * t;
            let q1 = (q0 + t).min(isp);
            let tw = q1 - q0;
            let dyn_ = &dy[ni * g.cout * osp..(ni + 1) * g.cout * osp];
            for grp in 0..g.groups {
                let lhs = wt[grp * cin_g * rows..].as_ptr();
                with_scratch(rows * tw, |col| {
                    gather_dy(g, dyn_, grp, q0, q1, col);
                    unsafe {
                        let dst = dxp.get().add((ni * g.cin + grp * cin_g) * isp + q0);
                        sgemm(
                            cin_g,
                            tw,
                            rows,
                            dst,
                            isp,
                            false,
                            lhs,
                            rows,
                            1,
                            col.as_ptr(),
                            tw,
                            1,
                            par,
                        );
                        add_bias(dst, grp, tw);
                    }
                });
            }
        });
    }
    // SAFETY: as above, every element of dx has been written.
    unsafe { dx.set_len(len) };
    dx
}

/// `dy` of sample `ni`, group `grp`, positions `[p0, p0 + tw)`, transposed to
/// `dyt[j * cout_g + co]` (position-major), the layout in which the gemm packs
/// it by copying.
fn transpose_dy(g: &Geom, dy: &[f32], ni: usize, grp: usize, p0: usize, dyt: &mut [f32]) {
    let cout_g = g.cout_g();
    let osp = g.out_sp();
    let tw = dyt.len() / cout_g.max(1);
    let src = &dy[(ni * g.cout + grp * cout_g) * osp + p0..];
    // 8x8 blocks: eight rows of eight positions read as runs, written as
    // eight runs of eight channels; the edges element by element
    const B: usize = 8;
    let (jf, cf) = (tw / B * B, cout_g / B * B);
    for j0 in (0..jf).step_by(B) {
        for c0 in (0..cf).step_by(B) {
            transpose8x8(
                &src[c0 * osp + j0..],
                osp,
                &mut dyt[j0 * cout_g + c0..],
                cout_g,
            );
        }
    }
    for j in 0..tw {
        let c_start = if j < jf { cf } else { 0 };
        for co in c_start..cout_g {
            dyt[j * cout_g + co] = src[co * osp + j];
        }
    }
}

/// `dst[b * dst_rs + a] = src[a * src_rs + b]` for `a, b < 8`.
///
/// With AVX (this crate is built for the host CPU) the block is eight vector
/// loads, the usual unpack/shuffle/permute network and eight vector stores;
/// otherwise it goes through a small array.
#[inline]
pub(crate) fn transpose8x8(src: &[f32], src_rs: usize, dst: &mut [f32], dst_rs: usize) {
    assert!(src.len() >= 7 * src_rs + 8 && dst.len() >= 7 * dst_rs + 8);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    // SAFETY: AVX is enabled at compile time, and the assertion above keeps
    // every 8-float load and store inside the slices.
    unsafe {
        use std::arch::x86_64::*;
        let s = src.as_ptr();
        let r: [__m256; 8] = std::array::from_fn(|a| _mm256_loadu_ps(s.add(a * src_rs)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let d = dst.as_mut_ptr();
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (b, v) in out.into_iter().enumerate() {
            _mm256_storeu_ps(d.add(b * dst_rs), v);
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx")))]
    {
        let mut blk = [[0f32; 8]; 8];
        for (a, r) in blk.iter_mut().enumerate() {
            r.copy_from_slice(&src[a * src_rs..][..8]);
        }
        for b in 0..8 {
            for (a, v) in dst[b * dst_rs..][..8].iter_mut().enumerate() {
                *v = blk[a][b];
            }
        }
    }
}

/// `dw = sum_n dy_n · im2col(x_n)^T`, shape `[Cout, Cin/g, k]`.
///
/// Each tile's product is accumulated column-major, `dwt[grp][(ci, k)][co]`,
/// from `dy` transposed to position-major and the patch matrix as `im2col`
/// writes it, so that neither operand is gathered element by element when
/// the gemm packs it; the sum is transposed to the weight's layout once.
///
/// 3x3 stride-1 convolutions in the plane go through Winograd F(2x2, 3x3)
/// ([`crate::conv_winograd`]) instead.
pub(crate) fn conv_bwd_weight(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if crate::conv_winograd::applies(g) {
        return crate::conv_winograd::backward_weight(g, x, dy);
    }
    conv_bwd_weight_im2col(g, x, dy)
}

/// [`conv_bwd_weight`] through im2col tiles and gemm, for any geometry.
pub(crate) fn conv_bwd_weight_im2col(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (isp, osp) = (g.in_sp(), g.out_sp());
    let (cin_g, cout_g, kdim) = (g.cin_g(), g.cout_g(), g.kdim());
    let wlen = g.cout * kdim;
    if osp == 0 || g.n == 0 {
        return vec![0f32; wlen];
    }
    let pw = g.pointwise();
    let t = tile_len(if pw { 1 } else { kdim }, osp, g.n, 64);
    let tiles = osp.div_ceil(t);
    let items = g.n * tiles;
    let run = |range: std::ops::Range<usize>, par: bool, acc: &mut [f32]| {
        for it in range {
            let (ni, ti) = (it / tiles, it % tiles);
            let p0 = ti * t;
            let p1 = (p0 + t).min(osp);
            let tw = p1 - p0;
            let xn = &x[ni * g.cin * isp..(ni + 1) * g.cin * isp];
            let cols = if pw { 0 } else { kdim * tw };
            for grp in 0..g.groups {
                // dst[co, r] = acc[grp block][r * cout_g + co]: column-major
                let dst = (acc[grp * cout_g * kdim..].as_mut_ptr(), 1, cout_g);
                with_scratch(cols + cout_g * tw, |buf| {
                    let (col, dyt) = buf.split_at_mut(cols);
                    transpose_dy(g, dy, ni, grp, p0, dyt);
                    // lhs[co, j] = dyt[j * cout_g + co]
                    let lhs = (dyt.as_ptr(), 1, cout_g);
                    // rhs[j, r] = patch r at position j: x itself when pointwise
                    let rhs = if pw {
                        (xn[grp * cin_g * isp + p0..].as_ptr(), 1, isp)
                    } else {
                        im2col(g, xn, grp, p0, p1, col);
                        (col.as_ptr(), 1, tw)
                    };
                    // SAFETY: acc is this caller's, the scratch is this thread's,
                    // and the extents are those of the tile.
                    unsafe { sgemm_strided(cout_g, kdim, tw, dst, true, lhs, rhs, par) };
                });
            }
        }
    };
    let acc = if outer_parallel(items) {
        let nt = rayon::current_num_threads();
        let chunk = items.div_ceil(nt);
        let parts: Vec<Vec<f32>> = (0..nt)
            .into_par_iter()
            .map(|c| {
                let mut acc = vec![0f32; wlen];
                run(c * chunk..((c + 1) * chunk).min(items), false, &mut acc);
                acc
            })
            .collect();
        let mut it = parts.into_iter();
        let mut acc = it.next().unwrap_or_else(|| vec![0f32; wlen]);
        for p in it {
            acc.iter_mut().zip(p.iter()).for_each(|(a, b)| *a += b);
        }
        acc
    } else {
        let mut acc = vec![0f32; wlen];
        run(0..items, rayon::current_num_threads() > 1, &mut acc);
        acc
    };
    // dwt[grp][r][co] -> dw[grp * cout_g + co][r]
    let mut dw = vec![0f32; wlen];
    for grp in 0..g.groups {
        let blk = grp * cout_g * kdim;
        for co in 0..cout_g {
            for r in 0..kdim {
                dw[blk + co * kdim + r] = acc[blk + r * cout_g + co];
            }
        }
    }
    dw
}

/// Sum of `[N, C, S]` over `N` and `S` (bias gradient).
fn channel_sum(v: &[f32], n: usize, c: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f64; c];
    for ni in 0..n {
        for (ci, o) in out.iter_mut().enumerate() {
            let row = &v[(ni * c + ci) * s..][..s];
            // 16 f32 lanes over blocks of 4096 values (vectorised), blocks
            // summed in f64
            for block in row.chunks(4096) {
                let mut acc = [0f32; 16];
                let lanes = block.chunks_exact(16);
                let rest = lanes.remainder();
                for l in lanes {
                    let l: &[f32; 16] = l.try_into().expect("16 lanes");
                    for i in 0..16 {
                        acc[i] += l[i];
                    }
                }
                for (i, &x) in rest.iter().enumerate() {
                    acc[i] += x;
                }
                *o += acc.iter().map(|&x| x as f64).sum::<f64>();
            }
        }
    }
    out.into_iter().map(|x| x as f32).collect()
}

// ---------------------------------------------------------------------------
// candle custom ops

/// `y = conv(x, w) [+ b]` (CustomOp2 without bias, CustomOp3 with bias).
pub(crate) struct ConvFwdOp(pub Geom);
/// `dx = conv^T(dy, w) [+ b]` (also the transposed convolution).
pub(crate) struct ConvBwdDataOp(pub Geom);
/// `dw = conv_weight_grad(x, dy)`.
pub(crate) struct ConvBwdWeightOp(pub Geom);
/// Per-channel sum of a `[N, C, ...]` tensor, shape `[C]`.
pub(crate) struct ChannelSumOp;

/// Computes a gradient only for arguments that take part in backprop (inputs
/// that are plain tensors, like a network's input image, get none).
fn need(arg: &Tensor, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if arg.track_op() {
        f().map(Some)
    } else {
        Ok(None)
    }
}

fn storage(v: Vec<f32>, dims: &[usize]) -> (CpuStorage, Shape) {
    (CpuStorage::F32(v), Shape::from(dims.to_vec()))
}

impl CustomOp2 for ConvFwdOp {
    fn name(&self) -> &'static str {
        "medseg-conv"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = f32_slice(s1, l1, "conv input", &g.x_dims())?;
        let w = f32_slice(s2, l2, "conv weight", &g.w_dims())?;
        Ok(storage(conv_fwd(g, x, w, None), &g.y_dims()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let dx = need(x, || gy.apply_op2(w, ConvBwdDataOp(self.0)))?;
        let dw = need(w, || x.apply_op2(&gy, ConvBwdWeightOp(self.0)))?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvFwdOp {
    fn name(&self) -> &'static str {
        "medseg-conv-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = f32_slice(s1, l1, "conv input", &g.x_dims())?;
        let w = f32_slice(s2, l2, "conv weight", &g.w_dims())?;
        let b = f32_slice(s3, l3, "conv bias", &[g.cout])?;
        Ok(storage(conv_fwd(g, x, w, Some(b)), &g.y_dims()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let dx = need(x, || gy.apply_op2(w, ConvBwdDataOp(self.0)))?;
        let dw = need(w, || x.apply_op2(&gy, ConvBwdWeightOp(self.0)))?;
        let db = need(b, || gy.apply_op1(ChannelSumOp))?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for ConvBwdDataOp {
    fn name(&self) -> &'static str {
        "medseg-conv-bwd-data"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let dy = f32_slice(s1, l1, "transposed conv input", &g.y_dims())?;
        let w = f32_slice(s2, l2, "transposed conv weight", &g.w_dims())?;
        Ok(storage(conv_bwd_data(g, dy, w, None), &g.x_dims()))
    }
    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        gx: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = gx.contiguous()?;
        let ddy = need(dy, || gx.apply_op2(w, ConvFwdOp(self.0)))?;
        let dw = need(w, || gx.apply_op2(dy, ConvBwdWeightOp(self.0)))?;
        Ok((ddy, dw))
    }
}

impl CustomOp3 for ConvBwdDataOp {
    fn name(&self) -> &'static str {
        "medseg-conv-transpose-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let dy = f32_slice(s1, l1, "transposed conv input", &g.y_dims())?;
        let w = f32_slice(s2, l2, "transposed conv weight", &g.w_dims())?;
        let b = f32_slice(s3, l3, "transposed conv bias", &[g.cin])?;
        Ok(storage(conv_bwd_data(g, dy, w, Some(b)), &g.x_dims()))
    }
    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        gx: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gx = gx.contiguous()?;
        let ddy = need(dy, || gx.apply_op2(w, ConvFwdOp(self.0)))?;
        let dw = need(w, || gx.apply_op2(dy, ConvBwdWeightOp(self.0)))?;
        let db = need(b, || gx.apply_op1(ChannelSumOp))?;
        Ok((ddy, dw, db))
    }
}

impl CustomOp2 for ConvBwdWeightOp {
    fn name(&self) -> &'static str {
        "medseg-conv-bwd-weight"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = f32_slice(s1, l1, "conv input", &g.x_dims())?;
        let dy = f32_slice(s2, l2, "conv output gradient", &g.y_dims())?;
        Ok(storage(conv_bwd_weight(g, x, dy), &g.w_dims()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _res: &Tensor,
        gw: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gw = gw.contiguous()?;
        let dx = need(x, || dy.apply_op2(&gw, ConvBwdDataOp(self.0)))?;
        let ddy = need(dy, || x.apply_op2(&gw, ConvFwdOp(self.0)))?;
        Ok((dx, ddy))
    }
}

impl CustomOp1 for ChannelSumOp {
    fn name(&self) -> &'static str {
        "medseg-channel-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims().to_vec();
        if dims.len() < 2 {
            bail!("medseg-ops channel sum: expected [N, C, ...], got {dims:?}");
        }
        let v = f32_slice(s, l, "channel sum", &dims)?;
        let (n, c) = (dims[0], dims[1]);
        let sp: usize = dims[2..].iter().product();
        Ok(storage(channel_sum(v, n, c, sp), &[c]))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let mut shape = vec![1usize; arg.rank()];
        shape[1] = g.elem_count();
        Ok(Some(g.reshape(shape)?.broadcast_as(arg.shape())?))
    }
}

/// Checks that a tensor is an f32 CPU tensor, naming `op` and `what` in the error.
pub(crate) fn check_f32_cpu(t: &Tensor, op: &str, what: &str) -> Result<()> {
    if t.dtype() != candle_core::DType::F32 {
        bail!("medseg-ops {op}: {what} must be f32, got {:?}", t.dtype());
    }
    if !t.device().is_cpu() {
        bail!("medseg-ops {op}: {what} must be on the CPU (no GPU kernels)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_dy_matches_the_definition_on_ragged_blocks() {
        // 13 channels and a 21-position tile: full 8x8 blocks plus both edges
        let g = Geom {
            n: 2,
            cin: 3,
            cout: 13,
            groups: 1,
            inp: [1, 5, 7],
            out: [1, 5, 7],
            k: [1, 3, 3],
            s: [1; 3],
            p: [0, 1, 1],
            d: [1; 3],
            planar: true,
        };
        let osp = 35;
        let dy: Vec<f32> = (0..g.n * g.cout * osp)
            .map(|i| i as f32 * 0.5 - 3.0)
            .collect();
        let (ni, p0, tw) = (1, 9, 21);
        let mut dyt = vec![f32::NAN; g.cout * tw];
        transpose_dy(&g, &dy, ni, 0, p0, &mut dyt);
        for j in 0..tw {
            for co in 0..g.cout {
                assert_eq!(
                    dyt[j * g.cout + co],
                    dy[(ni * g.cout + co) * osp + p0 + j],
                    "position {j}, channel {co}"
                );
            }
        }
    }

    #[test]
    fn transpose8x8_with_strides() {
        let src: Vec<f32> = (0..8 * 11).map(|i| i as f32).collect();
        let mut dst = vec![-1f32; 8 * 10];
        transpose8x8(&src, 11, &mut dst, 10);
        for a in 0..8 {
            for b in 0..8 {
                assert_eq!(dst[b * 10 + a], src[a * 11 + b]);
            }
            // the two columns past the block are untouched
            assert_eq!(dst[a * 10 + 8], -1.0);
            assert_eq!(dst[a * 10 + 9], -1.0);
        }
    }
}
