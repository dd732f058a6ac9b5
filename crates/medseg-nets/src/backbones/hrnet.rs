//! The HRNet backbone (Wang et al., "Deep High-Resolution Representation
//! Learning for Visual Recognition", TPAMI 2020) in JMedSeg's layout
//! (github.com/THU-CVlab/JMedSeg, `model/hrnet.py`); see [`HRNetBackbone`].

use candle_core::{Result as CandleResult, Tensor};
use candle_nn::VarBuilder;

use crate::backbones::resnet::{bn, relu, BasicBlock};
use crate::layers::{resize_nearest, Conv, Ctx, Norm};
use crate::ParamInfo;

/// Shape of an [`HRNetBackbone`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HRNetSpec {
    /// Input channels of the stem.
    pub in_chns: usize,
    /// Channels of the two stem convolutions and the planes of the `layer1`
    /// bottlenecks, whose outputs have four times as many (JMedSeg: 64).
    pub stem_chns: usize,
    /// Width `c` of the highest-resolution branch; branch `i` has `c * 2^i`
    /// channels (JMedSeg's default: 16).
    pub width: usize,
    /// Outputs of the last stage module, 1 to 4 (JMedSeg's segmentation
    /// network: 1, the fused highest-resolution map).
    pub final_branches: usize,
}

impl HRNetSpec {
    /// JMedSeg's `HRNet(c = 16)` layout with `in_chns` inputs: 64 stem
    /// channels, one final output branch.
    pub fn jmedseg(in_chns: usize) -> Self {
        Self {
            in_chns,
            stem_chns: 64,
            width: 16,
            final_branches: 1,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.in_chns == 0 || self.stem_chns == 0 || self.width == 0 {
            return Err("channel counts must be positive".into());
        }
        if !(1..=4).contains(&self.final_branches) {
            return Err(format!(
                "final_branches must be 1 to 4, got {}",
                self.final_branches
            ));
        }
        Ok(())
    }
}

/// Convolution without bias, BatchNorm and optional ReLU (the
/// `Sequential(Conv, BatchNorm[, ReLU])` of the transitions and fuse
/// layers, parameters `<p>.0` and `<p>.1`).
struct ConvBn {
    conv: Conv,
    norm: Norm,
    relu: bool,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        relu: bool,
    ) -> CandleResult<Self> {
        Ok(Self {
            conv: Conv::new(&ctx.pp(0), 2, cin, cout, k, stride, k / 2, false)?,
            norm: bn(&ctx.pp(1), cout)?,
            relu,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let act = relu();
        let y = self.conv.forward(x)?;
        self.norm
            .forward_act(&y, train, if self.relu { Some(&act) } else { None })
    }
}

/// The bottleneck of `layer1` (`conv1` 1x1, `bn1`, `conv2` 3x3, `bn2`,
/// `conv3` 1x1 to `4 planes`, `bn3`, `downsample.0/1` on the first block).
struct Bottleneck {
    convs: [Conv; 3],
    norms: [Norm; 3],
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(ctx: &Ctx, cin: usize, planes: usize, project: bool) -> CandleResult<Self> {
        let c = |name: &str, a, b, k| Conv::new(&ctx.pp(name), 2, a, b, k, 1, k / 2, false);
        Ok(Self {
            convs: [
                c("conv1", cin, planes, 1)?,
                c("conv2", planes, planes, 3)?,
                c("conv3", planes, 4 * planes, 1)?,
            ],
            norms: [
                bn(&ctx.pp("bn1"), planes)?,
                bn(&ctx.pp("bn2"), planes)?,
                bn(&ctx.pp("bn3"), 4 * planes)?,
            ],
            downsample: if project {
                Some(ConvBn::new(
                    &ctx.pp("downsample"),
                    cin,
                    4 * planes,
                    1,
                    1,
                    false,
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let r = relu();
        let mut y = x.clone();
        for (i, (c, n)) in self.convs.iter().zip(&self.norms).enumerate() {
            let act = (i < 2).then_some(&r);
            y = n.forward_act(&c.forward(&y)?, train, act)?;
        }
        let id = match &self.downsample {
            Some(d) => d.forward(x, train)?,
            None => x.clone(),
        };
        (y + id)?.relu()
    }
}

/// How branch `j` reaches output `i` in a stage module.
enum Fuse {
    Identity,
    /// 1x1 convolution + BatchNorm, then nearest up-sampling by `2^(j-i)`.
    Up(ConvBn),
    /// `i - j` strided 3x3 convolutions + BatchNorm (ReLU between them).
    Down(Vec<ConvBn>),
}

/// JMedSeg's `StageModule`: four BasicBlocks per branch (`branches.b.k`),
/// then every output `i` the ReLU of the sum over branches `j` of
/// `fuse_layers.i.j` applied to branch `j`.
struct StageModule {
    branches: Vec<Vec<BasicBlock>>,
    fuse: Vec<Vec<Fuse>>,
}

impl StageModule {
    fn new(ctx: &Ctx, stage: usize, outputs: usize, c: usize) -> CandleResult<Self> {
        let w = |i: usize| c << i;
        let mut branches = Vec::with_capacity(stage);
        for b in 0..stage {
            let bc = ctx.pp("branches").pp(b);
            let blocks = (0..4)
                .map(|k| BasicBlock::new(&bc.pp(k), w(b), w(b), 1, 1, false))
                .collect::<CandleResult<Vec<_>>>()?;
            branches.push(blocks);
        }
        let mut fuse = Vec::with_capacity(outputs);
        for i in 0..outputs {
            let mut row = Vec::with_capacity(stage);
            for j in 0..stage {
                let fc = ctx.pp("fuse_layers").pp(i).pp(j);
                row.push(if i == j {
                    Fuse::Identity
                } else if i < j {
                    Fuse::Up(ConvBn::new(&fc, w(j), w(i), 1, 1, false)?)
                } else {
                    let mut ops = Vec::with_capacity(i - j);
                    for k in 0..i - j - 1 {
                        ops.push(ConvBn::new(&fc.pp(k), w(j), w(j), 3, 2, true)?);
                    }
                    ops.push(ConvBn::new(&fc.pp(i - j - 1), w(j), w(i), 3, 2, false)?);
                    Fuse::Down(ops)
                });
            }
            fuse.push(row);
        }
        Ok(Self { branches, fuse })
    }

    fn forward(&self, xs: &[Tensor], train: bool) -> CandleResult<Vec<Tensor>> {
        let mut ys = Vec::with_capacity(xs.len());
        for (blocks, x) in self.branches.iter().zip(xs) {
            let mut y = x.clone();
            for b in blocks {
                y = b.forward(&y, train)?;
            }
            ys.push(y);
        }
        let mut out = Vec::with_capacity(self.fuse.len());
        for (i, row) in self.fuse.iter().enumerate() {
            let (_, _, h, w) = ys[i].dims4()?;
            let mut acc: Option<Tensor> = None;
            for (f, y) in row.iter().zip(&ys) {
                let t = match f {
                    Fuse::Identity => y.clone(),
                    Fuse::Up(cb) => resize_nearest(&cb.forward(y, train)?, &[h, w])?,
                    Fuse::Down(ops) => {
                        let mut t = y.clone();
                        for op in ops {
                            t = op.forward(&t, train)?;
                        }
                        t
                    }
                };
                acc = Some(match acc {
                    None => t,
                    Some(a) => (a + t)?,
                });
            }
            let a = acc.ok_or_else(|| candle_core::Error::Msg("HRNet: empty stage".into()))?;
            out.push(a.relu()?);
        }
        Ok(out)
    }
}

/// The HRNet backbone of JMedSeg (github.com/THU-CVlab/JMedSeg,
/// `model/hrnet.py`, class `HRNet` without its `final_layer`), with its
/// module and parameter names, written once for any network that needs
/// parallel multi-resolution features:
///
/// * stem: `conv1`, `bn1`, `conv2`, `bn2` (3x3 convolutions of stride 1, no
///   bias, `stem_chns` channels, ReLU) — the input resolution is kept;
/// * `layer1`: four bottlenecks of `stem_chns` planes (`4 stem_chns`
///   outputs; `layer1.0.downsample`);
/// * `transition1` (3x3 convolution + BN + ReLU to `c` channels, and a
///   stride-2 one to `2c`), `stage2` (one two-branch `StageModule`),
///   `transition2.2` (a stride-2 convolution to `4c` from the last branch),
///   `stage3` (four three-branch modules), `transition3.3` (to `8c`),
///   `stage4` (two four-branch modules and one with `final_branches`
///   outputs);
/// * each `StageModule` runs four torchvision-style BasicBlocks per branch
///   (`branches.b.k.conv1/bn1/conv2/bn2`), then fuses: output `i` is the
///   ReLU of the sum over branches `j` of `fuse_layers.i.j` (identity for
///   `i = j`; 1x1 convolution, BN and nearest up-sampling by `2^(j-i)` for
///   `j > i`; `i - j` stride-2 3x3 convolutions with BN, ReLU between them,
///   for `j < i`).
///
/// BatchNorms use PyTorch's semantics (momentum 0.1, unbiased running
/// variance). Inputs must be multiples of 8 in height and width (three
/// stride-2 branches whose maps are up-sampled back). JMedSeg's default
/// (`c = 16`, 64 stem channels, 3 input channels) has 7,445,600 parameters
/// here (7,445,634 with the 2-class `final_layer`).
pub struct HRNetBackbone {
    spec: HRNetSpec,
    params: Vec<ParamInfo>,
    stem: [ConvBn; 2],
    layer1: Vec<Bottleneck>,
    transition1: [ConvBn; 2],
    stage2: Vec<StageModule>,
    transition2: ConvBn,
    stage3: Vec<StageModule>,
    transition3: ConvBn,
    stage4: Vec<StageModule>,
}

impl HRNetBackbone {
    /// Input height and width must be multiples of this.
    pub const SIZE_MULTIPLE: usize = 8;

    /// Builds the backbone at the root of `vb` (parameters initialised from
    /// `seed` where `vb` does not hold them).
    pub fn new(spec: HRNetSpec, vb: VarBuilder, seed: u64) -> crate::Result<Self> {
        spec.validate().map_err(crate::NetError::Config)?;
        let ctx = Ctx::new(vb, seed);
        let mut b = Self::build(&ctx, spec)?;
        b.params = ctx.params_snapshot();
        Ok(b)
    }

    /// Builds the backbone in `ctx` (the caller validated `spec`).
    pub(crate) fn build(ctx: &Ctx, spec: HRNetSpec) -> CandleResult<Self> {
        let (s, c) = (spec.stem_chns, spec.width);
        // the stem's layers are `conv1`/`bn1` and `conv2`/`bn2`, not a
        // Sequential: build them by hand
        let stem_layer = |conv: &str, norm: &str, cin: usize| -> CandleResult<ConvBn> {
            Ok(ConvBn {
                conv: Conv::new(&ctx.pp(conv), 2, cin, s, 3, 1, 1, false)?,
                norm: bn(&ctx.pp(norm), s)?,
                relu: true,
            })
        };
        let stem = [
            stem_layer("conv1", "bn1", spec.in_chns)?,
            stem_layer("conv2", "bn2", s)?,
        ];
        let l1 = ctx.pp("layer1");
        let mut layer1 = vec![Bottleneck::new(&l1.pp(0), s, s, true)?];
        for k in 1..4 {
            layer1.push(Bottleneck::new(&l1.pp(k), 4 * s, s, false)?);
        }
        let t1 = ctx.pp("transition1");
        let transition1 = [
            ConvBn::new(&t1.pp(0), 4 * s, c, 3, 1, true)?,
            ConvBn::new(&t1.pp(1).pp(0), 4 * s, 2 * c, 3, 2, true)?,
        ];
        let stage = |name: &str, n: usize, branches: usize, last_out: usize| {
            (0..n)
                .map(|k| {
                    let outs = if k + 1 == n { last_out } else { branches };
                    StageModule::new(&ctx.pp(name).pp(k), branches, outs, c)
                })
                .collect::<CandleResult<Vec<_>>>()
        };
        let stage2 = stage("stage2", 1, 2, 2)?;
        let transition2 =
            ConvBn::new(&ctx.pp("transition2").pp(2).pp(0), 2 * c, 4 * c, 3, 2, true)?;
        let stage3 = stage("stage3", 4, 3, 3)?;
        let transition3 =
            ConvBn::new(&ctx.pp("transition3").pp(3).pp(0), 4 * c, 8 * c, 3, 2, true)?;
        let stage4 = stage("stage4", 3, 4, spec.final_branches)?;
        Ok(Self {
            spec,
            params: Vec::new(),
            stem,
            layer1,
            transition1,
            stage2,
            transition2,
            stage3,
            transition3,
            stage4,
        })
    }

    /// The shape it was built with.
    pub fn spec(&self) -> &HRNetSpec {
        &self.spec
    }

    /// The tensors of a stand-alone backbone ([`HRNetBackbone::new`]);
    /// empty when built inside a network (the network lists them).
    pub fn parameters(&self) -> &[ParamInfo] {
        &self.params
    }

    /// Feature maps of `[N, C, H, W]` input (`H`, `W` multiples of 8): the
    /// `final_branches` outputs of the last stage module, highest
    /// resolution (full size, `c` channels) first, branch `i` at `1 / 2^i`
    /// with `c * 2^i` channels.
    pub fn features(&self, x: &Tensor, train: bool) -> CandleResult<Vec<Tensor>> {
        let (_, _, h, w) = x.dims4()?;
        let m = Self::SIZE_MULTIPLE;
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "HRNet needs height and width that are multiples of {m} (three stride-2 \
                 branches up-sampled back), got {h}x{w}; pad or crop the input"
            )
        }
        let mut y = x.clone();
        for l in &self.stem {
            y = l.forward(&y, train)?;
        }
        for b in &self.layer1 {
            y = b.forward(&y, train)?;
        }
        let mut xs = vec![
            self.transition1[0].forward(&y, train)?,
            self.transition1[1].forward(&y, train)?,
        ];
        for m in &self.stage2 {
            xs = m.forward(&xs, train)?;
        }
        let t = self.transition2.forward(&xs[xs.len() - 1], train)?;
        xs.push(t);
        for m in &self.stage3 {
            xs = m.forward(&xs, train)?;
        }
        let t = self.transition3.forward(&xs[xs.len() - 1], train)?;
        xs.push(t);
        for m in &self.stage4 {
            xs = m.forward(&xs, train)?;
        }
        Ok(xs)
    }
}
