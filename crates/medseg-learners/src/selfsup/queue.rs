//! MoCo's memory bank: a first-in first-out queue of the last `K` key
//! embeddings, the negatives of InfoNCE.

use candle_core::{Device, Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A ring buffer of `capacity` L2-normalised keys of `dim` features. Until
/// `capacity` keys have been pushed, the free slots hold random unit
/// vectors (as MoCo initialises its queue), so that the negatives always
/// number `capacity`.
#[derive(Debug, Clone)]
pub struct KeyQueue {
    capacity: usize,
    dim: usize,
    /// Row-major `[capacity, dim]`.
    buf: Vec<f32>,
    /// Slot the next key is written to.
    ptr: usize,
    /// Keys pushed so far (all time).
    pushed: u64,
}

impl KeyQueue {
    /// A queue of `capacity` slots of `dim` features, filled with random
    /// unit vectors drawn from `seed`.
    pub fn new(capacity: usize, dim: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut buf: Vec<f32> = (0..capacity * dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        for row in buf.chunks_mut(dim.max(1)) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= n);
        }
        KeyQueue {
            capacity,
            dim,
            buf,
            ptr: 0,
            pushed: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Appends the rows of `keys` (`[N, dim]`, first row oldest),
    /// overwriting the oldest slots. Rows are stored as given (MoCo pushes
    /// normalised keys).
    pub fn push(&mut self, keys: &Tensor) -> Result<()> {
        let (n, d) = keys.dims2()?;
        if d != self.dim {
            candle_core::bail!("key queue: keys have {d} features, the queue {}", self.dim)
        }
        let rows: Vec<Vec<f32>> = keys.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        // only the last `capacity` rows can survive
        let skip = n.saturating_sub(self.capacity);
        for row in rows.into_iter().skip(skip) {
            let at = self.ptr * self.dim;
            self.buf[at..at + self.dim].copy_from_slice(&row);
            self.ptr = (self.ptr + 1) % self.capacity;
        }
        self.pushed += n as u64;
        Ok(())
    }

    /// Every slot as a `[capacity, dim]` tensor (slot order, not age order):
    /// the negatives. Order does not matter to InfoNCE.
    pub fn negatives(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.buf.clone(), (self.capacity, self.dim), device)
    }

    /// The keys pushed and still held, oldest first (at most `capacity`).
    pub fn last_keys(&self) -> Vec<Vec<f32>> {
        let held = (self.pushed.min(self.capacity as u64)) as usize;
        let start = (self.ptr + self.capacity - held) % self.capacity.max(1);
        (0..held)
            .map(|i| {
                let s = (start + i) % self.capacity;
                self.buf[s * self.dim..(s + 1) * self.dim].to_vec()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_last_k_keys_in_order() {
        let dev = Device::Cpu;
        let mut q = KeyQueue::new(5, 2, 1);
        // the initial slots are unit vectors
        let init: Vec<Vec<f32>> = q.negatives(&dev).unwrap().to_vec2().unwrap();
        for r in &init {
            assert!(((r[0] * r[0] + r[1] * r[1]).sqrt() - 1.0).abs() < 1e-6);
        }
        assert!(q.last_keys().is_empty());
        let key = |i: usize| vec![i as f32, -(i as f32)];
        let mut all = Vec::new();
        for batch in [
            vec![1, 2],
            vec![3, 4, 5],
            vec![6],
            vec![7, 8, 9, 10, 11, 12, 13],
        ] {
            let rows: Vec<f32> = batch.iter().flat_map(|&i| key(i)).collect();
            q.push(&Tensor::from_vec(rows, (batch.len(), 2), &dev).unwrap())
                .unwrap();
            all.extend(batch.iter().map(|&i| key(i)));
            let want: Vec<Vec<f32>> = all[all.len().saturating_sub(5)..].to_vec();
            assert_eq!(q.last_keys(), want);
            // the negatives are exactly the held keys (plus initial slots)
            let mut neg: Vec<Vec<f32>> = q.negatives(&dev).unwrap().to_vec2().unwrap();
            for k in &want {
                let pos = neg.iter().position(|r| r == k).expect("key in negatives");
                neg.remove(pos);
            }
            assert_eq!(neg.len(), 5 - want.len());
        }
        assert_eq!(q.pushed(), 13);
        assert!(q
            .push(&Tensor::zeros((1, 3), candle_core::DType::F32, &dev).unwrap())
            .is_err());
    }
}
