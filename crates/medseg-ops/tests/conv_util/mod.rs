//! Shared helpers for the convolution tests: seeded random data, naive f64
//! reference convolutions, finite differences and the PyTorch fixture reader.
#![allow(dead_code)]

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn randv(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

pub fn tensor(v: &[f32], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims.to_vec(), &Device::Cpu).unwrap()
}

pub fn var(v: &[f32], dims: &[usize]) -> Var {
    Var::from_tensor(&tensor(v, dims)).unwrap()
}

pub fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn f64v(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `a` (ours) matches `b` (reference) elementwise within `tol*(1+|b|)`.
pub fn assert_close(a: &[f32], b: &[f64], tol: f64, what: &str) {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: length {} vs {}",
        a.len(),
        b.len()
    );
    let mut worst = (0.0f64, 0usize);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let e = (x as f64 - y).abs() / (1.0 + y.abs());
        if e > worst.0 || e.is_nan() {
            worst = (e, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: max scaled error {} at {} (ours {}, reference {})",
        worst.0,
        worst.1,
        a[worst.1],
        b[worst.1]
    );
}

/// Geometry of a 3-D convolution for the reference implementation.
#[derive(Clone, Copy, Debug)]
pub struct G {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub inp: [usize; 3],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
    pub d: [usize; 3],
    pub op: [usize; 3],
}

impl G {
    /// Output size of the convolution.
    pub fn conv_out(&self) -> [usize; 3] {
        std::array::from_fn(|i| {
            (self.inp[i] + 2 * self.p[i] - self.d[i] * (self.k[i] - 1) - 1) / self.s[i] + 1
        })
    }
    /// Output size of the transposed convolution.
    pub fn tconv_out(&self) -> [usize; 3] {
        std::array::from_fn(|i| {
            (self.inp[i] - 1) * self.s[i] + self.d[i] * (self.k[i] - 1) + self.op[i] + 1
                - 2 * self.p[i]
        })
    }
    pub fn x_len(&self) -> usize {
        self.n * self.cin * self.inp.iter().product::<usize>()
    }
}

/// Direct f64 convolution: `x [n,cin,in]`, `w [cout,cin/g,k]`, result `[n,cout,out]`.
pub fn naive_conv(g: &G, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let o = g.conv_out();
    let (cin_g, cout_g) = (g.cin / g.groups, g.cout / g.groups);
    let isp: usize = g.inp.iter().product();
    let osp: usize = o.iter().product();
    let kvol: usize = g.k.iter().product();
    let mut y = vec![0f64; g.n * g.cout * osp];
    for n in 0..g.n {
        for co in 0..g.cout {
            let grp = co / cout_g;
            for od in 0..o[0] {
                for oh in 0..o[1] {
                    for ow in 0..o[2] {
                        let mut acc = b.map_or(0.0, |b| b[co]);
                        for cl in 0..cin_g {
                            let ci = grp * cin_g + cl;
                            for kd in 0..g.k[0] {
                                for kh in 0..g.k[1] {
                                    for kw in 0..g.k[2] {
                                        let id =
                                            (od * g.s[0] + kd * g.d[0]) as isize - g.p[0] as isize;
                                        let ih =
                                            (oh * g.s[1] + kh * g.d[1]) as isize - g.p[1] as isize;
                                        let iw =
                                            (ow * g.s[2] + kw * g.d[2]) as isize - g.p[2] as isize;
                                        if id < 0 || ih < 0 || iw < 0 {
                                            continue;
                                        }
                                        let (id, ih, iw) = (id as usize, ih as usize, iw as usize);
                                        if id >= g.inp[0] || ih >= g.inp[1] || iw >= g.inp[2] {
                                            continue;
                                        }
                                        let xv = x[(n * g.cin + ci) * isp
                                            + (id * g.inp[1] + ih) * g.inp[2]
                                            + iw];
                                        let wv = w[(co * cin_g + cl) * kvol
                                            + (kd * g.k[1] + kh) * g.k[2]
                                            + kw];
                                        acc += xv * wv;
                                    }
                                }
                            }
                        }
                        y[(n * g.cout + co) * osp + (od * o[1] + oh) * o[2] + ow] = acc;
                    }
                }
            }
        }
    }
    y
}

/// Direct f64 transposed convolution: `x [n,cin,in]`, `w [cin,cout/g,k]`, result `[n,cout,out]`.
pub fn naive_tconv(g: &G, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let o = g.tconv_out();
    let (cin_g, cout_g) = (g.cin / g.groups, g.cout / g.groups);
    let isp: usize = g.inp.iter().product();
    let osp: usize = o.iter().product();
    let kvol: usize = g.k.iter().product();
    let mut y = vec![0f64; g.n * g.cout * osp];
    for n in 0..g.n {
        for co in 0..g.cout {
            let v = b.map_or(0.0, |b| b[co]);
            y[(n * g.cout + co) * osp..(n * g.cout + co + 1) * osp].fill(v);
        }
        for ci in 0..g.cin {
            let grp = ci / cin_g;
            for id in 0..g.inp[0] {
                for ih in 0..g.inp[1] {
                    for iw in 0..g.inp[2] {
                        let xv = x[(n * g.cin + ci) * isp + (id * g.inp[1] + ih) * g.inp[2] + iw];
                        for cl in 0..cout_g {
                            let co = grp * cout_g + cl;
                            for kd in 0..g.k[0] {
                                for kh in 0..g.k[1] {
                                    for kw in 0..g.k[2] {
                                        let od =
                                            (id * g.s[0] + kd * g.d[0]) as isize - g.p[0] as isize;
                                        let oh =
                                            (ih * g.s[1] + kh * g.d[1]) as isize - g.p[1] as isize;
                                        let ow =
                                            (iw * g.s[2] + kw * g.d[2]) as isize - g.p[2] as isize;
                                        if od < 0 || oh < 0 || ow < 0 {
                                            continue;
                                        }
                                        let (od, oh, ow) = (od as usize, oh as usize, ow as usize);
                                        if od >= o[0] || oh >= o[1] || ow >= o[2] {
                                            continue;
                                        }
                                        let wv = w[(ci * cout_g + cl) * kvol
                                            + (kd * g.k[1] + kh) * g.k[2]
                                            + kw];
                                        y[(n * g.cout + co) * osp
                                            + (od * o[1] + oh) * o[2]
                                            + ow] += xv * wv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Central finite differences of `loss` with respect to every element of `args[which]`.
pub fn fd_grad(args: &[Vec<f64>], which: usize, loss: &dyn Fn(&[Vec<f64>]) -> f64) -> Vec<f64> {
    let h = 1e-3;
    let mut a = args.to_vec();
    (0..args[which].len())
        .map(|i| {
            let v = a[which][i];
            a[which][i] = v + h;
            let lp = loss(&a);
            a[which][i] = v - h;
            let lm = loss(&a);
            a[which][i] = v;
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One case of the PyTorch fixtures.
pub struct FixtureCase {
    pub name: String,
    pub kind: String,
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub dilation: [usize; 3],
    pub output_padding: [usize; 3],
    pub groups: usize,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn triple(s: &str) -> [usize; 3] {
    let v: Vec<usize> = s.split(',').map(|t| t.parse().unwrap()).collect();
    [v[0], v[1], v[2]]
}

/// Reads `tests/fixtures/conv_fixtures.{txt,bin}` written by tools/make_conv_fixtures.py.
pub fn load_fixtures() -> Vec<FixtureCase> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let manifest = std::fs::read_to_string(format!("{dir}conv_fixtures.txt")).unwrap();
    let bytes = std::fs::read(format!("{dir}conv_fixtures.bin")).unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut cases: Vec<FixtureCase> = Vec::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "case" => cases.push(FixtureCase {
                name: f[1].to_string(),
                kind: f[2].to_string(),
                stride: triple(f[4]),
                padding: triple(f[6]),
                dilation: triple(f[8]),
                output_padding: triple(f[10]),
                groups: f[12].parse().unwrap(),
                tensors: HashMap::new(),
            }),
            "tensor" => {
                let case = cases.iter_mut().find(|c| c.name == f[1]).unwrap();
                let off: usize = f[3].parse().unwrap();
                let dims: Vec<usize> = f[4].split(',').map(|t| t.parse().unwrap()).collect();
                let len: usize = dims.iter().product();
                case.tensors
                    .insert(f[2].to_string(), (dims, floats[off..off + len].to_vec()));
            }
            other => panic!("bad fixture line kind {other}"),
        }
    }
    assert!(!cases.is_empty());
    cases
}
