//! Endless batches from a loader, epoch after epoch, with the position
//! that a checkpoint records and a resumed run restores.

use crate::error::{LearnError, Result};
use medseg_core::Batch;
use medseg_io::{EpochIter, Loader};

/// Batches of a [`Loader`] without end: epoch after epoch.
pub(crate) struct BatchStream {
    loader: Loader,
    /// The epoch being read.
    pub(crate) epoch: u64,
    /// Batches consumed in `epoch`.
    pub(crate) consumed: usize,
    iter: Option<EpochIter>,
}

impl BatchStream {
    /// A stream at batch `skip` of `epoch` (the batches before are drawn
    /// and dropped, so that augmentation draws stay the same as in one run).
    pub(crate) fn new(loader: Loader, epoch: u64, skip: usize) -> Result<Self> {
        let mut s = BatchStream {
            loader,
            epoch,
            consumed: 0,
            iter: None,
        };
        for _ in 0..skip {
            s.next()?;
        }
        Ok(s)
    }

    /// The next batch, starting a new epoch when one ends.
    pub(crate) fn next(&mut self) -> Result<Batch> {
        for _ in 0..2 {
            if self.iter.is_none() {
                self.iter = Some(self.loader.epoch(self.epoch));
            }
            match self.iter.as_mut().expect("set above").next() {
                Some(b) => {
                    self.consumed += 1;
                    return Ok(b?);
                }
                None => {
                    self.iter = None;
                    self.epoch += 1;
                    self.consumed = 0;
                }
            }
        }
        Err(LearnError::Other("the training set yields no batch (is it empty, or smaller than the batch size with drop_last?)".into()))
    }
}
