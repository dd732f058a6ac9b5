//! Winograd F(2x2, 3x3) for 3x3, stride-1 convolutions in the plane (private).
//!
//! Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (2016):
//! each 2x2 block of outputs is computed from a 4x4 block of inputs as
//! `Y = Aᵀ [ Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B) ] A`. The sum over input channels
//! is, for each of the 16 transformed positions, one matrix product
//! `M[ξ] (Cout x tiles) = U[ξ] (Cout x Cin) · V[ξ] (Cin x tiles)`, so the
//! multiply-adds of the products drop from 9 to 4 per output and channel
//! pair (2.25x); the transforms are additions only.
//!
//! It serves [`super::conv_kernels::conv_fwd`] and, with the kernel flipped
//! and transposed and the padding mirrored (`2 - p`), the input gradient
//! [`super::conv_kernels::conv_bwd_data`] of the same convolutions. Work is
//! split into (sample, depth slice, band of tile rows) items, each with its
//! transformed inputs and products in a scratch buffer sized to stay in L2.
//!
//! The transforms use the points 0, 1, -1, whose constants (1 and 1/2) are
//! exact in f32; results differ from the direct sum by rounding only
//! (`tests` below compare with the im2col path).

use crate::conv_kernels::{
    outer_parallel, run_items, sgemm, sgemm_strided, transpose8x8, with_scratch, Geom, SendPtr,
};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Environment variable that, set to `0`, turns the Winograd path off (for
/// comparisons; the im2col path computes the same convolutions).
pub(crate) const WINOGRAD_ENV: &str = "MEDSEG_WINOGRAD";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(WINOGRAD_ENV).map_or(true, |v| v != "0"))
}

/// Whether `g` is a convolution this path computes: a 3x3 kernel in H and W
/// (depth 1), stride 1, no dilation, padding at most 2, one group, and at
/// least 8 channels each side (below that the transforms cost more than
/// they save).
pub(crate) fn applies(g: &Geom) -> bool {
    enabled() && geometry_fits(g)
}

fn geometry_fits(g: &Geom) -> bool {
    g.groups == 1
        && g.k == [1, 3, 3]
        && g.s == [1; 3]
        && g.d[1] == 1
        && g.d[2] == 1
        && g.p[0] == 0
        && g.p[1] <= 2
        && g.p[2] <= 2
        && g.cin >= 8
        && g.cout >= 8
        && g.out[0] == g.inp[0]
        && g.out[1] > 0
        && g.out[2] > 0
}

/// `U[ξ][a][b] = (G g Gᵀ)[ξ]` for the 3x3 kernels `g` of `w [Cout, Cin, 3, 3]`.
/// Forward: `a = co`, `b = ci`. `transposed`: `a = ci`, `b = co` and the
/// kernel rotated by 180 degrees (the input gradient's convolution).
///
/// Per `a` (in parallel), the taps of the `nb` kernels are gathered
/// tap-major and both halves of the transform run along `b`, so every
/// output row `U[ξ][a][..]` is written contiguously by vector code.
fn weights(w: &[f32], cout: usize, cin: usize, transposed: bool) -> Vec<f32> {
    let (na, nb) = if transposed { (cin, cout) } else { (cout, cin) };
    let mut u = vec![0f32; 16 * na * nb];
    let up = SendPtr(u.as_mut_ptr());
    let row = |a: usize, (g, t): &mut (Vec<f32>, Vec<f32>)| {
        // g[tap][b]: tap r * 3 + c of kernel (a, b), rotated if transposed
        for b in 0..nb {
            let (co, ci) = if transposed { (b, a) } else { (a, b) };
            let k = &w[(co * cin + ci) * 9..][..9];
            for tap in 0..9 {
                g[tap * nb + b] = if transposed { k[8 - tap] } else { k[tap] };
            }
        }
        // t = G g: t[i][c][b] from the three rows r of column c
        for c in 0..3 {
            let g = |r: usize| &g[(3 * r + c) * nb..][..nb];
            let out: [&mut [f32]; 4] = {
                let mut rows = t.chunks_exact_mut(3 * nb).map(|ti| &mut ti[c * nb..][..nb]);
                std::array::from_fn(|_| rows.next().expect("4 rows"))
            };
            g_along_rows([g(0), g(1), g(2)], out);
        }
        // U = t Gᵀ: row i of t gives U[4i .. 4i + 4]
        for i in 0..4 {
            let r = |c: usize| &t[(i * 3 + c) * nb..][..nb];
            // SAFETY: rows (ξ, a) of u are disjoint for distinct (ξ, a) and
            // each is written by the one call for its a.
            let out = std::array::from_fn(|j| unsafe {
                std::slice::from_raw_parts_mut(up.get().add(((i * 4 + j) * na + a) * nb), nb)
            });
            g_along_rows([r(0), r(1), r(2)], out);
        }
    };
    let bufs = || (vec![0f32; 9 * nb], vec![0f32; 12 * nb]);
    if na * nb >= 4096 && rayon::current_num_threads() > 1 {
        (0..na)
            .into_par_iter()
            .for_each_init(bufs, |buf, a| row(a, buf));
    } else {
        let mut buf = bufs();
        (0..na).for_each(|a| row(a, &mut buf));
    }
    u
}

/// One application of `G` (4x3) along rows: `out = G [x0; x1; x2]`
/// element-wise, i.e. `x0`, `(x0 + x1 + x2) / 2`, `(x0 - x1 + x2) / 2`, `x2`.
fn g_along_rows([x0, x1, x2]: [&[f32]; 3], out: [&mut [f32]; 4]) {
    let [o0, o1, o2, o3] = out;
    for b in 0..o0.len() {
        let (a, m, c) = (x0[b], x1[b], x2[b]);
        o0[b] = a;
        o1[b] = 0.5 * (a + m + c);
        o2[b] = 0.5 * (a - m + c);
        o3[b] = c;
    }
}

/// `y = conv(x, w) + bias` for a geometry where [`applies`] holds.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let u = weights(w, g.cout, g.cin, false);
    let plane = Plane {
        n: g.n,
        cin: g.cin,
        cout: g.cout,
        depth: g.inp[0],
        inp: [g.inp[1], g.inp[2]],
        out: [g.out[1], g.out[2]],
        pad: [g.p[1], g.p[2]],
    };
    conv3x3(&plane, x, &u, bias)
}

/// `dx = conv^T(dy, w) + bias[Cin]` for a geometry where [`applies`] holds:
/// the convolution of `dy` with the rotated, transposed kernel and padding `2 - p`.
pub(crate) fn backward_data(g: &Geom, dy: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let u = weights(w, g.cout, g.cin, true);
    let plane = Plane {
        n: g.n,
        cin: g.cout,
        cout: g.cin,
        depth: g.inp[0],
        inp: [g.out[1], g.out[2]],
        out: [g.inp[1], g.inp[2]],
        pad: [2 - g.p[1], 2 - g.p[2]],
    };
    conv3x3(&plane, dy, &u, bias)
}

/// `dw = ∂L/∂w [Cout, Cin, 3, 3]` for a geometry where [`applies`] holds:
/// with `M = Σ_ci U ⊙ V` and `Y = Aᵀ M A` per tile, `∂L/∂M = A dY Aᵀ`,
/// `∂L/∂U[co, ci] = Σ_tiles ∂L/∂M[co] ⊙ V[ci]` (16 products over the
/// tiles) and `∂L/∂g = Gᵀ (∂L/∂U) G`.
pub(crate) fn backward_weight(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let p = Plane {
        n: g.n,
        cin: g.cin,
        cout: g.cout,
        depth: g.inp[0],
        inp: [g.inp[1], g.inp[2]],
        out: [g.out[1], g.out[2]],
        pad: [g.p[1], g.p[2]],
    };
    let (cin, cout) = (p.cin, p.cout);
    let [oh, ow] = p.out;
    let (th_n, tw_n) = p.tiles();
    let osp = oh * ow;
    let ulen = 16 * cin * cout;
    let rows = p.band_rows();
    let bands = th_n.div_ceil(rows);
    let items = p.n * p.depth * bands;
    // acc[ξ][ci][co] += Σ_tiles dM[ξ][co][tile] V[ξ][ci][tile]
    let run = |range: std::ops::Range<usize>, par: bool, acc: &mut [f32]| {
        for it in range {
            let (pl, band) = (it / bands, it % bands);
            let (ni, di) = (pl / p.depth, pl % p.depth);
            let (r0, r1) = (band * rows, ((band + 1) * rows).min(th_n));
            let tc = (r1 - r0) * tw_n;
            let (vlen, mlen, tlen) = (16 * cin * tc, 16 * cout * tc, 2 * tw_n * cout);
            with_scratch(vlen + mlen + p.input_work() + 2 * tlen, |buf| {
                let (v, rest) = buf.split_at_mut(vlen);
                let (dm, rest) = rest.split_at_mut(mlen);
                let (work, rest) = rest.split_at_mut(p.input_work());
                let (top, bot) = rest.split_at_mut(tlen);
                p.input_tiles(x, (ni, di), (r0, r1), v, work);
                // dm[ξ][tile][co] = (A dY Aᵀ)[ξ], from dY rows transposed to
                // [position][co] (zero beyond the output)
                let plane = |co: usize| ((ni * cout + co) * p.depth + di) * osp;
                for th in r0..r1 {
                    for (k, trow) in [&mut *top, &mut *bot].into_iter().enumerate() {
                        let oy = 2 * th + k;
                        trow.fill(0.0);
                        if oy < oh {
                            transpose_row(dy, plane(0) + oy * ow, p.depth * osp, ow, cout, trow);
                        }
                    }
                    let base = (th - r0) * tw_n;
                    let run = tw_n * cout;
                    let at = |xi: usize| (xi * tc + base) * cout;
                    assert!(at(15) + run <= dm.len());
                    let dp = dm.as_mut_ptr();
                    // SAFETY: sixteen disjoint runs (distinct ξ) inside dm (asserted).
                    let out: [&mut [f32]; 16] = std::array::from_fn(|xi| unsafe {
                        std::slice::from_raw_parts_mut(dp.add(at(xi)), run)
                    });
                    row_grad(top, bot, cout, out);
                }
                for xi in 0..16 {
                    // dst[co, ci] = acc[xi][ci][co] (column-major), lhs[co, t] =
                    // dm[xi][t][co], rhs[t, ci] = v[xi][ci][t]
                    // SAFETY: the extents lie inside acc, dm and v.
                    unsafe {
                        sgemm_strided(
                            cout,
                            cin,
                            tc,
                            (acc[xi * cin * cout..].as_mut_ptr(), 1, cout),
                            true,
                            (dm[xi * tc * cout..].as_ptr(), 1, cout),
                            (v[xi * cin * tc..].as_ptr(), 1, tc),
                            par,
                        );
                    }
                }
            });
        }
    };
    let acc = if outer_parallel(items) {
        let nt = rayon::current_num_threads();
        let chunk = items.div_ceil(nt);
        let parts: Vec<Vec<f32>> = (0..nt)
            .into_par_iter()
            .map(|c| {
                let mut acc = vec![0f32; ulen];
                run(c * chunk..((c + 1) * chunk).min(items), false, &mut acc);
                acc
            })
            .collect();
        let mut it = parts.into_iter();
        let mut acc = it.next().unwrap_or_else(|| vec![0f32; ulen]);
        for q in it {
            acc.iter_mut().zip(q.iter()).for_each(|(a, b)| *a += b);
        }
        acc
    } else {
        let mut acc = vec![0f32; ulen];
        run(0..items, rayon::current_num_threads() > 1, &mut acc);
        acc
    };
    // dw[co][ci] = Gᵀ dU G, per ci (in parallel) along co, where acc's
    // rows acc[ξ][ci][..] are contiguous
    let mut dw = vec![0f32; cout * cin * 9];
    let dwp = SendPtr(dw.as_mut_ptr());
    let column = |ci: usize, k: &mut Vec<f32>| {
        let rows: [&[f32]; 16] = std::array::from_fn(|xi| &acc[(xi * cin + ci) * cout..][..cout]);
        // kr[tap][co]
        let kr = &mut k[..9 * cout];
        for co in 0..cout {
            let du = |i: usize, j: usize| rows[i * 4 + j][co];
            let r: [[f32; 4]; 3] = [
                std::array::from_fn(|j| du(0, j) + 0.5 * (du(1, j) + du(2, j))),
                std::array::from_fn(|j| 0.5 * (du(1, j) - du(2, j))),
                std::array::from_fn(|j| 0.5 * (du(1, j) + du(2, j)) + du(3, j)),
            ];
            for (i, [a, b, c, d]) in r.into_iter().enumerate() {
                kr[(i * 3) * cout + co] = a + 0.5 * (b + c);
                kr[(i * 3 + 1) * cout + co] = 0.5 * (b - c);
                kr[(i * 3 + 2) * cout + co] = 0.5 * (b + c) + d;
            }
        }
        for co in 0..cout {
            // SAFETY: the nine taps of kernel (co, ci) are written by the one
            // call for this ci only, inside dw.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(dwp.get().add((co * cin + ci) * 9), 9) };
            for (tap, v) in dst.iter_mut().enumerate() {
                *v = kr[tap * cout + co];
            }
        }
    };
    if cin * cout >= 4096 && rayon::current_num_threads() > 1 {
        (0..cin)
            .into_par_iter()
            .for_each_init(|| vec![0f32; 9 * cout], |k, ci| column(ci, k));
    } else {
        let mut k = vec![0f32; 9 * cout];
        (0..cin).for_each(|ci| column(ci, &mut k));
    }
    dw
}

/// `dst[pos * c + ch] = src[start + ch * ch_stride + pos]` for `pos < len`,
/// `ch < c`: one row of `c` channel planes, transposed to position-major.
fn transpose_row(
    src: &[f32],
    start: usize,
    ch_stride: usize,
    len: usize,
    c: usize,
    dst: &mut [f32],
) {
    let (pf, cf) = (len / 8 * 8, c / 8 * 8);
    for p0 in (0..pf).step_by(8) {
        for c0 in (0..cf).step_by(8) {
            transpose8x8(
                &src[start + c0 * ch_stride + p0..],
                ch_stride,
                &mut dst[p0 * c + c0..],
                c,
            );
        }
    }
    for pos in 0..len {
        let c_start = if pos < pf { cf } else { 0 };
        for ch in c_start..c {
            dst[pos * c + ch] = src[start + ch * ch_stride + pos];
        }
    }
}

/// `A dY Aᵀ` for a row of tiles: `top` and `bot` are the two output rows as
/// `[position][channel]` (`c` channels), `out[ξ][tile * c + ch]`.
fn row_grad(top: &[f32], bot: &[f32], c: usize, out: [&mut [f32]; 16]) {
    let n = out[0].len();
    assert!(n % c.max(1) == 0 && top.len() >= 2 * n && bot.len() >= 2 * n);
    let [o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11, o12, o13, o14, o15] =
        out.map(|o| &mut o[..n]);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    if c % 8 == 0 {
        // SAFETY: AVX is enabled at compile time; every load reads
        // top/bot[.. 2n] and every store out[ξ][.. n] (asserted above).
        unsafe {
            use std::arch::x86_64::*;
            let outs = [
                o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11, o12, o13, o14, o15,
            ]
            .map(|o| o.as_mut_ptr());
            let zero = _mm256_setzero_ps();
            for t in 0..n / c {
                for k in (0..c).step_by(8) {
                    let ld =
                        |row: &[f32], pos: usize| _mm256_loadu_ps(row.as_ptr().add(pos * c + k));
                    let (p, q) = (ld(top, 2 * t), ld(top, 2 * t + 1));
                    let (r, s) = (ld(bot, 2 * t), ld(bot, 2 * t + 1));
                    let rows = [
                        (p, q),
                        (_mm256_add_ps(p, r), _mm256_add_ps(q, s)),
                        (_mm256_sub_ps(p, r), _mm256_sub_ps(q, s)),
                        (_mm256_sub_ps(zero, r), _mm256_sub_ps(zero, s)),
                    ];
                    let o = t * c + k;
                    for (i, (x, y)) in rows.into_iter().enumerate() {
                        _mm256_storeu_ps(outs[4 * i].add(o), x);
                        _mm256_storeu_ps(outs[4 * i + 1].add(o), _mm256_add_ps(x, y));
                        _mm256_storeu_ps(outs[4 * i + 2].add(o), _mm256_sub_ps(x, y));
                        _mm256_storeu_ps(outs[4 * i + 3].add(o), _mm256_sub_ps(zero, y));
                    }
                }
            }
        }
        return;
    }
    for t in 0..n / c.max(1) {
        let (p, q) = top[2 * t * c..(2 * t + 2) * c].split_at(c);
        let (r, s) = bot[2 * t * c..(2 * t + 2) * c].split_at(c);
        let o = t * c;
        let (o0, o1, o2, o3) = (
            &mut o0[o..o + c],
            &mut o1[o..o + c],
            &mut o2[o..o + c],
            &mut o3[o..o + c],
        );
        let (o4, o5, o6, o7) = (
            &mut o4[o..o + c],
            &mut o5[o..o + c],
            &mut o6[o..o + c],
            &mut o7[o..o + c],
        );
        let (o8, o9, o10, o11) = (
            &mut o8[o..o + c],
            &mut o9[o..o + c],
            &mut o10[o..o + c],
            &mut o11[o..o + c],
        );
        let (o12, o13, o14, o15) = (
            &mut o12[o..o + c],
            &mut o13[o..o + c],
            &mut o14[o..o + c],
            &mut o15[o..o + c],
        );
        for k in 0..c {
            // rows of A dY: [p, q], [p + r, q + s], [p - r, q - s], [-r, -s];
            // each row [x, y] times Aᵀ: [x, x + y, x - y, -y]
            let (x0, y0) = (p[k], q[k]);
            let (x1, y1) = (p[k] + r[k], q[k] + s[k]);
            let (x2, y2) = (p[k] - r[k], q[k] - s[k]);
            let (x3, y3) = (-r[k], -s[k]);
            o0[k] = x0;
            o1[k] = x0 + y0;
            o2[k] = x0 - y0;
            o3[k] = -y0;
            o4[k] = x1;
            o5[k] = x1 + y1;
            o6[k] = x1 - y1;
            o7[k] = -y1;
            o8[k] = x2;
            o9[k] = x2 + y2;
            o10[k] = x2 - y2;
            o11[k] = -y2;
            o12[k] = x3;
            o13[k] = x3 + y3;
            o14[k] = x3 - y3;
            o15[k] = -y3;
        }
    }
}

/// A 3x3, stride-1 convolution of `[N, Cin, D, H, W]` planes.
struct Plane {
    n: usize,
    cin: usize,
    cout: usize,
    depth: usize,
    inp: [usize; 2],
    out: [usize; 2],
    pad: [usize; 2],
}

/// Scratch floats per item (transformed inputs and products), ~512 KiB.
const BUDGET: usize = 128 * 1024;

impl Plane {
    /// Tile rows and columns of the output.
    fn tiles(&self) -> (usize, usize) {
        (self.out[0].div_ceil(2), self.out[1].div_ceil(2))
    }

    /// Tile rows per band: at least 64 tiles for the products, within
    /// BUDGET, and enough items for the threads when there are few planes.
    fn band_rows(&self) -> usize {
        let (th_n, tw_n) = self.tiles();
        let per_row = 16 * (self.cin + self.cout) * tw_n;
        let rows = (BUDGET / per_row)
            .max(64usize.div_ceil(tw_n))
            .clamp(1, th_n);
        let planes = self.n * self.depth;
        let want = 2 * rayon::current_num_threads();
        if planes * th_n.div_ceil(rows) < want {
            th_n.div_ceil(want.div_ceil(planes)).max(1)
        } else {
            rows
        }
    }

    /// Padded row length: holds every input column, `2 * tw + 2 >= iw + 2 * pad`.
    fn padded(&self) -> usize {
        2 * self.tiles().1 + 2
    }

    /// Scratch floats [`Plane::input_tiles`] needs besides `v`.
    fn input_work(&self) -> usize {
        self.inp[1] + 4 * self.padded()
    }

    /// `v[ξ][ci][tile] = (Bᵀ d B)[ξ]` for the tiles of tile rows `[r0, r1)`
    /// of plane `(ni, di)` of `x`; `tc = (r1 - r0) * tw` tiles.
    fn input_tiles(
        &self,
        x: &[f32],
        (ni, di): (usize, usize),
        (r0, r1): (usize, usize),
        v: &mut [f32],
        work: &mut [f32],
    ) {
        let [ih, iw] = self.inp;
        let tw_n = self.tiles().1;
        let tc = (r1 - r0) * tw_n;
        let pw = self.padded();
        let isp = ih * iw;
        let (zero, wv) = work.split_at_mut(iw);
        // rows above and below the input read as zeros; so do the padding
        // columns of the transformed rows, which nothing below writes
        zero.fill(0.0);
        wv.fill(0.0);
        let (w0, rest) = wv.split_at_mut(pw);
        let (w1, rest) = rest.split_at_mut(pw);
        let (w2, w3) = rest.split_at_mut(pw);
        for ci in 0..self.cin {
            let src = &x[((ni * self.cin + ci) * self.depth + di) * isp..][..isp];
            for th in r0..r1 {
                let row = |i: usize| {
                    let r = (2 * th + i) as isize - self.pad[0] as isize;
                    if r >= 0 && (r as usize) < ih {
                        &src[r as usize * iw..][..iw]
                    } else {
                        &zero[..iw]
                    }
                };
                // rows: Bᵀ d, straight from the input rows into the
                // inner columns of the padded rows
                let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
                let pc = self.pad[1];
                let (m0, m1) = (&mut w0[pc..pc + iw], &mut w1[pc..pc + iw]);
                let (m2, m3) = (&mut w2[pc..pc + iw], &mut w3[pc..pc + iw]);
                for c in 0..iw {
                    let (a, b, cc, dd) = (d0[c], d1[c], d2[c], d3[c]);
                    m0[c] = a - cc;
                    m1[c] = b + cc;
                    m2[c] = cc - b;
                    m3[c] = b - dd;
                }
                // columns: (Bᵀ d) B, tile t reads columns 2t .. 2t+3
                let base = (th - r0) * tw_n;
                for (i, wr) in [&*w0, &*w1, &*w2, &*w3].into_iter().enumerate() {
                    let at = |j: usize| ((i * 4 + j) * self.cin + ci) * tc + base;
                    assert!(at(3) + tw_n <= v.len());
                    // SAFETY: the four runs of tw_n floats are disjoint
                    // (distinct ξ) and inside v (asserted).
                    let vp = v.as_mut_ptr();
                    let out = unsafe {
                        [at(0), at(1), at(2), at(3)]
                            .map(|o| std::slice::from_raw_parts_mut(vp.add(o), tw_n))
                    };
                    columns_in(wr, out);
                }
            }
        }
    }
}

fn conv3x3(p: &Plane, x: &[f32], u: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let [oh, ow] = p.out;
    let (th_n, tw_n) = p.tiles();
    let osp = oh * ow;
    let len = p.n * p.cout * p.depth * osp;
    let mut y: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return y;
    }
    let rows = p.band_rows();
    let bands = th_n.div_ceil(rows);
    let yp = SendPtr(y.as_mut_ptr());
    run_items(p.n * p.depth * bands, |it, par| {
        let (pl, band) = (it / bands, it % bands);
        let (ni, di) = (pl / p.depth, pl % p.depth);
        let (r0, r1) = (band * rows, ((band + 1) * rows).min(th_n));
        let tc = (r1 - r0) * tw_n;
        let (vlen, mlen) = (16 * p.cin * tc, 16 * p.cout * tc);
        with_scratch(vlen + mlen + p.input_work() + 4 * tw_n, |buf| {
            let (v, rest) = buf.split_at_mut(vlen);
            let (m, rest) = rest.split_at_mut(mlen);
            let (work, out2) = rest.split_at_mut(p.input_work());
            p.input_tiles(x, (ni, di), (r0, r1), v, work);
            // M[ξ] = U[ξ] · V[ξ]
            for xi in 0..16 {
                // SAFETY: the three matrices lie inside u, v and m with the
                // extents given, and m is this item's scratch.
                unsafe {
                    sgemm(
                        p.cout,
                        tc,
                        p.cin,
                        m[xi * p.cout * tc..].as_mut_ptr(),
                        tc,
                        false,
                        u[xi * p.cout * p.cin..].as_ptr(),
                        p.cin,
                        1,
                        v[xi * p.cin * tc..].as_ptr(),
                        tc,
                        1,
                        par,
                    );
                }
            }
            // Y = Aᵀ M A, two output rows per tile row
            let (top, bot) = out2.split_at_mut(2 * tw_n);
            for co in 0..p.cout {
                let bv = bias.map_or(0.0, |b| b[co]);
                let ybase = ((ni * p.cout + co) * p.depth + di) * osp;
                for th in r0..r1 {
                    let base = co * tc + (th - r0) * tw_n;
                    let mm = |xi: usize| &m[xi * p.cout * tc + base..][..tw_n];
                    columns_out(std::array::from_fn(mm), bv, top, bot);
                    for (k, row) in [&*top, &*bot].into_iter().enumerate() {
                        let oy = 2 * th + k;
                        if oy < oh {
                            // SAFETY: output row oy of plane (ni, co, di) belongs to
                            // this item's band of tile rows only.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    row.as_ptr(),
                                    yp.get().add(ybase + oy * ow),
                                    ow,
                                );
                            }
                        }
                    }
                }
            }
        });
    });
    // SAFETY: the bands cover every output row of every plane and channel.
    unsafe { y.set_len(len) };
    y
}

/// The column half of the input transform for one row `wr` of `Bᵀ d`:
/// `out[j][t] = (wr[2t..2t+4] · B)[j]` for the `out[0].len()` tiles of the row.
fn columns_in(wr: &[f32], out: [&mut [f32]; 4]) {
    let [o0, o1, o2, o3] = out;
    let n = o0.len();
    assert!(wr.len() >= 2 * n + 2 && o1.len() == n && o2.len() == n && o3.len() == n);
    let mut t = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    // SAFETY: AVX2 is enabled at compile time; for t + 8 <= n the loads read
    // wr[2t .. 2t + 18] (within 2n + 2) and the stores o[t .. t + 8].
    unsafe {
        use std::arch::x86_64::*;
        // (evens, odds) of wr[at .. at + 16]
        let split = |at: usize| {
            let lo = _mm256_loadu_ps(wr.as_ptr().add(at));
            let hi = _mm256_loadu_ps(wr.as_ptr().add(at + 8));
            let fix =
                |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
            (
                fix(_mm256_shuffle_ps::<0x88>(lo, hi)),
                fix(_mm256_shuffle_ps::<0xDD>(lo, hi)),
            )
        };
        while t + 8 <= n && 2 * t + 18 <= wr.len() {
            // wr[2t + 2k], wr[2t + 2k + 1], wr[2t + 2k + 2], wr[2t + 2k + 3]
            let (a, b) = split(2 * t);
            let (c, d) = split(2 * t + 2);
            _mm256_storeu_ps(o0.as_mut_ptr().add(t), _mm256_sub_ps(a, c));
            _mm256_storeu_ps(o1.as_mut_ptr().add(t), _mm256_add_ps(b, c));
            _mm256_storeu_ps(o2.as_mut_ptr().add(t), _mm256_sub_ps(c, b));
            _mm256_storeu_ps(o3.as_mut_ptr().add(t), _mm256_sub_ps(b, d));
            t += 8;
        }
    }
    for t in t..n {
        let c = 2 * t;
        let (a, b, cc, dd) = (wr[c], wr[c + 1], wr[c + 2], wr[c + 3]);
        o0[t] = a - cc;
        o1[t] = b + cc;
        o2[t] = cc - b;
        o3[t] = b - dd;
    }
}

/// The output transform `Aᵀ m A + bias` of one row of tiles: `ms[ξ][t]` are
/// the products of tile `t`; outputs `(2t, 2t+1)` go to `top` and `bot`.
fn columns_out(ms: [&[f32]; 16], bias: f32, top: &mut [f32], bot: &mut [f32]) {
    let n = ms[0].len();
    assert!(ms.iter().all(|r| r.len() == n) && top.len() >= 2 * n && bot.len() >= 2 * n);
    let mut t = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    // SAFETY: AVX is enabled at compile time; for t + 8 <= n the loads read
    // ms[ξ][t .. t + 8] and the stores write top/bot[2t .. 2t + 16].
    unsafe {
        use std::arch::x86_64::*;
        let bv = _mm256_set1_ps(bias);
        // (a0, b0, a1, b1, ...) of two vectors, in order
        let store2 = |dst: *mut f32, a: __m256, b: __m256| {
            let lo = _mm256_unpacklo_ps(a, b);
            let hi = _mm256_unpackhi_ps(a, b);
            _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(lo, hi));
            _mm256_storeu_ps(dst.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
        };
        while t + 8 <= n {
            let e: [__m256; 16] = std::array::from_fn(|x| _mm256_loadu_ps(ms[x].as_ptr().add(t)));
            let a: [__m256; 4] =
                std::array::from_fn(|j| _mm256_add_ps(_mm256_add_ps(e[j], e[4 + j]), e[8 + j]));
            let b: [__m256; 4] = std::array::from_fn(|j| {
                _mm256_sub_ps(_mm256_sub_ps(e[4 + j], e[8 + j]), e[12 + j])
            });
            let y00 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), a[2]), bv);
            let y01 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(a[1], a[2]), a[3]), bv);
            let y10 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(b[0], b[1]), b[2]), bv);
            let y11 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(b[1], b[2]), b[3]), bv);
            store2(top.as_mut_ptr().add(2 * t), y00, y01);
            store2(bot.as_mut_ptr().add(2 * t), y10, y11);
            t += 8;
        }
    }
    for t in t..n {
        let e = |i: usize, j: usize| ms[i * 4 + j][t];
        let a: [f32; 4] = std::array::from_fn(|j| e(0, j) + e(1, j) + e(2, j));
        let b: [f32; 4] = std::array::from_fn(|j| e(1, j) - e(2, j) - e(3, j));
        top[2 * t] = a[0] + a[1] + a[2] + bias;
        top[2 * t + 1] = a[1] - a[2] - a[3] + bias;
        bot[2 * t] = b[0] + b[1] + b[2] + bias;
        bot[2 * t + 1] = b[1] - b[2] - b[3] + bias;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_kernels::{conv_bwd_data_im2col, conv_bwd_weight_im2col, conv_fwd_im2col};

    fn det(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn geom(n: usize, cin: usize, cout: usize, inp: [usize; 3], pad: usize) -> Geom {
        let out = [inp[0], inp[1] + 2 * pad - 2, inp[2] + 2 * pad - 2];
        Geom {
            n,
            cin,
            cout,
            groups: 1,
            inp,
            out,
            k: [1, 3, 3],
            s: [1; 3],
            p: [0, pad, pad],
            d: [1; 3],
            planar: inp[0] == 1,
        }
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 2e-6 * scale.max(1.0),
                "{what}: element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn forward_and_input_gradient_match_im2col() {
        // odd and even sizes (cropped last tile), padding 0, 1 and 2, a
        // depth axis, several bands per plane
        for (n, cin, cout, inp, pad) in [
            (2, 8, 12, [1, 9, 11], 1),
            (1, 16, 8, [1, 10, 10], 1),
            (1, 9, 10, [1, 7, 6], 0),
            (2, 8, 8, [1, 5, 9], 2),
            (1, 8, 16, [3, 6, 5], 1),
            (1, 24, 32, [1, 70, 66], 1),
            // exactly one and just under one vector of 8 tiles per row
            (1, 8, 8, [1, 6, 16], 1),
            (2, 8, 8, [1, 5, 17], 0),
        ] {
            let g = geom(n, cin, cout, inp, pad);
            assert!(geometry_fits(&g), "{g:?}");
            let x = det(n * cin * inp.iter().product::<usize>(), 1);
            let w = det(cout * cin * 9, 2);
            let b = det(cout.max(cin), 3);
            let what = format!("{n}x{cin}->{cout} {inp:?} pad {pad}");
            let want = conv_fwd_im2col(&g, &x, &w, Some(&b[..cout]));
            let got = forward(&g, &x, &w, Some(&b[..cout]));
            close(&got, &want, &format!("forward {what}"));
            let dy = det(n * cout * g.out.iter().product::<usize>(), 4);
            let want = conv_bwd_data_im2col(&g, &dy, &w, Some(&b[..cin]));
            let got = backward_data(&g, &dy, &w, Some(&b[..cin]));
            close(&got, &want, &format!("input gradient {what}"));
            let want = conv_bwd_weight_im2col(&g, &x, &dy);
            let got = backward_weight(&g, &x, &dy);
            close(&got, &want, &format!("weight gradient {what}"));
        }
    }

    #[test]
    fn only_3x3_stride_1_single_group_geometries_qualify() {
        let base = geom(1, 8, 8, [1, 8, 8], 1);
        assert!(geometry_fits(&base));
        let mut g = base;
        g.s = [1, 2, 2];
        assert!(!geometry_fits(&g));
        let mut g = base;
        g.groups = 2;
        assert!(!geometry_fits(&g));
        let mut g = base;
        g.cin = 4;
        assert!(!geometry_fits(&g));
        let mut g = base;
        g.d = [1, 2, 2];
        assert!(!geometry_fits(&g));
        let mut g = base;
        g.k = [3, 3, 3];
        assert!(!geometry_fits(&g));
    }
}
