//! Input perturbations of the consistency methods: seeded, clipped Gaussian
//! noise and the eight flips/right-angle rotations of the image plane.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};

/// Seeded Gaussian noise, clipped: `clamp(N(0, std^2), -clip, clip)`, the
/// input perturbation of Mean Teacher and UA-MT.
pub struct NoiseSource {
    rng: rand_chacha::ChaCha8Rng,
}

impl NoiseSource {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Noise of the shape, device and type of `like`: each element
    /// `clamp(N(0, std^2), -clip, clip)`, drawn by Box-Muller.
    pub fn clipped_gaussian(
        &mut self,
        like: &Tensor,
        std: f64,
        clip: f64,
    ) -> candle_core::Result<Tensor> {
        let n = like.elem_count();
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            // Box-Muller, two samples per pair of uniforms
            let u1: f64 = self.rng.random::<f64>().max(1e-300);
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            for z in [r * a.cos(), r * a.sin()] {
                if v.len() < n {
                    v.push((z * std).clamp(-clip, clip) as f32);
                }
            }
        }
        Tensor::from_vec(v, like.dims(), like.device())?.to_dtype(like.dtype())
    }

    /// A uniformly drawn element of the dihedral group of the last two axes
    /// (the eight flips and right-angle rotations); transposes only when
    /// `square`.
    pub fn plane_transform(&mut self, square: bool) -> PlaneTransform {
        PlaneTransform {
            transpose: square && self.rng.random::<bool>(),
            flip_h: self.rng.random::<bool>(),
            flip_w: self.rng.random::<bool>(),
        }
    }
}

/// A flip and/or transposition of the last two axes of a batch tensor: an
/// element of the dihedral group of the square (rotations by multiples of
/// 90 degrees and reflections), applied to images and undone on the
/// network's output, so that predictions of transformed and original
/// images can be compared pixel by pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PlaneTransform {
    /// Swap the last two axes (first).
    pub transpose: bool,
    /// Reverse the second-to-last axis.
    pub flip_h: bool,
    /// Reverse the last axis.
    pub flip_w: bool,
}

impl PlaneTransform {
    fn flips(&self, rank: usize) -> Vec<usize> {
        let mut dims = Vec::new();
        if self.flip_h {
            dims.push(rank - 2);
        }
        if self.flip_w {
            dims.push(rank - 1);
        }
        dims
    }

    /// The transformed tensor.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let r = x.rank();
        if r < 2 {
            candle_core::bail!("a plane transform needs a tensor of rank >= 2, got {r}")
        }
        let t = if self.transpose {
            x.transpose(r - 2, r - 1)?.contiguous()?
        } else {
            x.clone()
        };
        let dims = self.flips(r);
        if dims.is_empty() {
            Ok(t)
        } else {
            t.flip(&dims)
        }
    }

    /// The inverse transform: `invert(apply(x)) == x`.
    pub fn invert(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        let r = y.rank();
        if r < 2 {
            candle_core::bail!("a plane transform needs a tensor of rank >= 2, got {r}")
        }
        let dims = self.flips(r);
        let t = if dims.is_empty() {
            y.clone()
        } else {
            y.flip(&dims)?
        };
        if self.transpose {
            t.transpose(r - 2, r - 1)?.contiguous()
        } else {
            Ok(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn plane_transforms_are_eight_distinct_invertible_maps() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 9.0, &dev)
            .unwrap()
            .reshape((1, 2, 3, 3))
            .unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut seen = Vec::new();
        for i in 0..8u8 {
            let t = PlaneTransform {
                transpose: i & 1 == 1,
                flip_h: i & 2 == 2,
                flip_w: i & 4 == 4,
            };
            let y = t.apply(&x).unwrap();
            assert_eq!(flat(&t.invert(&y).unwrap()), flat(&x), "{t:?}");
            seen.push(flat(&y));
        }
        // the identity leaves x alone, and the eight images differ
        assert_eq!(seen[0], flat(&x));
        for a in 0..8 {
            for b in a + 1..8 {
                assert_ne!(seen[a], seen[b], "{a} {b}");
            }
        }
        // a quarter turn: transpose then flip rows, element (0, 0) of
        // channel 0 comes from element (2, 0)
        let t = PlaneTransform {
            transpose: true,
            flip_h: true,
            flip_w: false,
        };
        let y = t.apply(&x).unwrap();
        let v = y.get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            v,
            vec![
                vec![2.0, 5.0, 8.0],
                vec![1.0, 4.0, 7.0],
                vec![0.0, 3.0, 6.0]
            ]
        );
        // non-square planes are never transposed
        let mut src = NoiseSource::new(3);
        assert!((0..50).all(|_| !src.plane_transform(false).transpose));
        assert!((0..50).any(|_| src.plane_transform(true).transpose));
    }
}
