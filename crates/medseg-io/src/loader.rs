//! A loader that reads, transforms and batches samples on worker threads.
//!
//! Determinism: for a given `seed` and epoch the order of samples is a fixed
//! permutation (or the identity without shuffling), and sample `i` of the
//! dataset is transformed with its own random stream
//! [`sample_rng`]`(seed, epoch, i)`, so results do not depend on the number of
//! workers or on thread timing. Batches come out in order.
//!
//! Memory: at most `max(prefetch, 1)` batches are loaded ahead of the one the
//! consumer has taken last; workers wait when that window is full.

use crate::dataset::Dataset;
use medseg_core::{Batch, Error, Result, Sample};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A per-sample transform: takes a sample and its random stream.
pub type TransformFn = Arc<dyn Fn(Sample, &mut ChaCha8Rng) -> Result<Sample> + Send + Sync>;

/// The identity transform.
pub fn identity_transform() -> TransformFn {
    Arc::new(|s, _| Ok(s))
}

/// How a [`Loader`] batches and orders samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (at least 1).
    pub batch_size: usize,
    /// Shuffle the order every epoch.
    pub shuffle: bool,
    /// Seed of the order and of the per-sample random streams.
    pub seed: u64,
    /// Worker threads; 0 loads on the consumer's thread.
    pub workers: usize,
    /// Batches loaded ahead of the consumer (at least 1 is used).
    pub prefetch: usize,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 1,
            shuffle: false,
            seed: 0,
            workers: 2,
            prefetch: 2,
            drop_last: false,
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The random stream of dataset sample `index` in `epoch` under `seed`.
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    let s = splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index as u64);
    ChaCha8Rng::seed_from_u64(s)
}

/// Reads, transforms and batches the samples of a dataset.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
    transform: TransformFn,
}

impl Loader {
    /// A loader over `dataset`, applying `transform` to each sample.
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig, transform: TransformFn) -> Self {
        Loader {
            dataset,
            config,
            transform,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size.max(1));
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// True when an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dataset indices in the order epoch `epoch` visits them.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            let mut rng =
                ChaCha8Rng::seed_from_u64(splitmix64(self.config.seed ^ 0x5EED_0000) ^ epoch);
            idx.shuffle(&mut rng);
        }
        idx
    }

    /// The batches of dataset indices of epoch `epoch`.
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let b = self.config.batch_size.max(1);
        let mut out: Vec<Vec<usize>> = self.order(epoch).chunks(b).map(<[usize]>::to_vec).collect();
        if self.config.drop_last && out.last().is_some_and(|l| l.len() < b) {
            out.pop();
        }
        out
    }

    /// Iterates over the batches of one epoch. A batch whose loading or
    /// transform failed yields its error; later batches still come.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let plan = Arc::new(self.batches(epoch));
        let job = Arc::new(Job {
            dataset: Arc::clone(&self.dataset),
            transform: Arc::clone(&self.transform),
            seed: self.config.seed,
            epoch,
            plan: Arc::clone(&plan),
        });
        let bad_size = self.config.batch_size == 0;
        let total = if bad_size { 1 } else { plan.len() };
        let mut it = EpochIter {
            job,
            total,
            next: 0,
            bad_size,
            threads: Vec::new(),
            shared: Arc::new((Mutex::new(Window::default()), Condvar::new())),
            rx: None,
            ready: BTreeMap::new(),
        };
        if !bad_size && self.config.workers > 0 && total > 0 {
            let (tx, rx) = mpsc::channel();
            let window = self.config.prefetch.max(1);
            for _ in 0..self.config.workers.min(total) {
                let tx = tx.clone();
                let job = Arc::clone(&it.job);
                let shared = Arc::clone(&it.shared);
                it.threads.push(std::thread::spawn(move || {
                    worker(job, shared, tx, total, window)
                }));
            }
            it.rx = Some(rx);
        }
        it
    }
}

struct Job {
    dataset: Arc<dyn Dataset>,
    transform: TransformFn,
    seed: u64,
    epoch: u64,
    plan: Arc<Vec<Vec<usize>>>,
}

impl Job {
    fn load(&self, b: usize) -> Result<Batch> {
        let mut samples = Vec::with_capacity(self.plan[b].len());
        for &i in &self.plan[b] {
            let s = self.dataset.get(i)?;
            let mut rng = sample_rng(self.seed, self.epoch, i);
            samples.push((self.transform)(s, &mut rng)?);
        }
        Ok(Batch { samples })
    }
}

#[derive(Default)]
struct Window {
    /// Next batch index a worker may claim.
    next_claim: usize,
    /// Batches handed to the consumer so far.
    consumed: usize,
    /// Set when the iterator is dropped.
    cancelled: bool,
}

fn worker(
    job: Arc<Job>,
    shared: Arc<(Mutex<Window>, Condvar)>,
    tx: mpsc::Sender<(usize, Result<Batch>)>,
    total: usize,
    window: usize,
) {
    let (lock, cv) = &*shared;
    loop {
        let b = {
            let Ok(mut w) = lock.lock() else { return };
            loop {
                if w.cancelled || w.next_claim >= total {
                    return;
                }
                if w.next_claim < w.consumed + window {
                    break;
                }
                w = match cv.wait(w) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
            w.next_claim += 1;
            w.next_claim - 1
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.load(b)))
            .unwrap_or_else(|_| Err(Error::Other(format!("loading batch {b} panicked"))));
        if tx.send((b, result)).is_err() {
            return;
        }
    }
}

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct EpochIter {
    job: Arc<Job>,
    total: usize,
    next: usize,
    bad_size: bool,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<(Mutex<Window>, Condvar)>,
    rx: Option<mpsc::Receiver<(usize, Result<Batch>)>>,
    ready: BTreeMap<usize, Result<Batch>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.total {
            return None;
        }
        let b = self.next;
        self.next += 1;
        if self.bad_size {
            return Some(Err(Error::invalid("batch_size", "must be at least 1")));
        }
        let Some(rx) = &self.rx else {
            return Some(self.job.load(b));
        };
        let result = loop {
            if let Some(r) = self.ready.remove(&b) {
                break r;
            }
            match rx.recv() {
                Ok((i, r)) => {
                    self.ready.insert(i, r);
                }
                Err(_) => {
                    break Err(Error::Other(format!(
                        "loader workers stopped before batch {b}"
                    )))
                }
            }
        };
        let (lock, cv) = &*self.shared;
        if let Ok(mut w) = lock.lock() {
            w.consumed = self.next;
        }
        cv.notify_all();
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.total - self.next;
        (n, Some(n))
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        if let Ok(mut w) = lock.lock() {
            w.cancelled = true;
        }
        cv.notify_all();
        self.rx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
