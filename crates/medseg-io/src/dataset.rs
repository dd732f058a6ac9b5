//! Datasets over a [`Manifest`]: labelled, unlabelled, scribble and
//! partial-label.
//!
//! Every dataset reads row `i` of its manifest on [`Dataset::get`]: the image
//! files (one per modality, concatenated along channels, which must agree in
//! spatial shape), and depending on the kind the label, pixel weight, image
//! weight and annotated classes. Errors name the CSV file and row.

use crate::manifest::Manifest;
use crate::util::file_stem;
use crate::{read_image, read_label};
use medseg_core::{Error, Image, Result, Sample, DEFAULT_IGNORE_LABEL};
use ndarray::{ArrayD, Axis, Zip};

/// Something that yields samples by index. Implementations must be cheap to
/// share across loader threads.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Loads sample `index` (0-based).
    fn get(&self, index: usize) -> Result<Sample>;
    /// True when there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Labelled,
    Unlabelled,
    Scribble(u16),
    Partial,
}

/// Shared implementation of the four datasets.
#[derive(Debug, Clone)]
struct ManifestDataset {
    manifest: Manifest,
    kind: Kind,
}

impl ManifestDataset {
    fn new(manifest: Manifest, kind: Kind) -> Result<Self> {
        if manifest.is_empty() {
            return Err(Error::Manifest {
                path: manifest
                    .source
                    .clone()
                    .unwrap_or_else(|| "<manifest>".into()),
                row: 0,
                message: "the manifest has no rows".into(),
            });
        }
        if kind != Kind::Unlabelled {
            if let Some(r) = manifest.rows.iter().position(|r| r.label.is_none()) {
                return Err(manifest.row_error(r, "this dataset needs a label but the row has none (no `label` column or an empty cell)"));
            }
        }
        Ok(ManifestDataset { manifest, kind })
    }

    fn load(&self, index: usize) -> Result<Sample> {
        let m = &self.manifest;
        let row = m.rows.get(index).ok_or_else(|| {
            Error::invalid(
                "index",
                format!(
                    "{index} is out of range for a dataset of {} samples",
                    m.len()
                ),
            )
        })?;
        let wrap = |e: Error| m.row_error(index, e.to_string());
        let mut image: Option<Image> = None;
        for p in &row.images {
            let full = m.resolve(p);
            let im = read_image(&full).map_err(wrap)?;
            image = Some(match image {
                None => im,
                Some(mut acc) => {
                    if acc.spatial_shape() != im.spatial_shape() {
                        return Err(m.row_error(
                            index,
                            format!(
                                "modality {} has spatial shape {:?}, the first modality {:?}",
                                full.display(),
                                im.spatial_shape(),
                                acc.spatial_shape()
                            ),
                        ));
                    }
                    acc.data = ndarray::concatenate(Axis(0), &[acc.data.view(), im.data.view()])
                        .map_err(|e| m.row_error(index, e.to_string()))?;
                    acc
                }
            });
        }
        let image = image.ok_or_else(|| m.row_error(index, "the row names no image"))?;
        let name = row.images.first().map(|p| file_stem(p)).unwrap_or_default();
        let mut sample = Sample::new(name, image);
        sample.image_weight = row.image_weight;
        if self.kind != Kind::Unlabelled {
            if let Some(lp) = &row.label {
                let full = m.resolve(lp);
                let label = read_label(&full).map_err(wrap)?;
                if label.spatial_shape() != sample.image.spatial_shape() {
                    return Err(m.row_error(
                        index,
                        format!(
                            "label {} has shape {:?} but the image has {:?}",
                            full.display(),
                            label.spatial_shape(),
                            sample.image.spatial_shape()
                        ),
                    ));
                }
                sample.label = Some(label);
            }
            for (what, file, slot) in [
                ("pixel weight", &row.pixel_weight, &mut sample.pixel_weight),
                ("noisy mask", &row.noisy_mask, &mut sample.noisy_mask),
            ] {
                let Some(wp) = file else { continue };
                let full = m.resolve(wp);
                let w = read_image(&full).map_err(wrap)?;
                if w.channels() != 1 || w.spatial_shape() != sample.image.spatial_shape() {
                    return Err(m.row_error(
                        index,
                        format!(
                            "{what} {} has shape {:?}, expected [1, {:?}]",
                            full.display(),
                            w.data.shape(),
                            sample.image.spatial_shape()
                        ),
                    ));
                }
                *slot = Some(w.data);
            }
        }
        match self.kind {
            Kind::Scribble(ignore) => {
                let label = sample.label.as_ref().expect("checked above");
                let mut weight = sample
                    .pixel_weight
                    .take()
                    .unwrap_or_else(|| ArrayD::ones(label.data.raw_dim()));
                Zip::from(&mut weight).and(&label.data).for_each(|w, &l| {
                    if l == ignore {
                        *w = 0.0;
                    }
                });
                sample.pixel_weight = Some(weight);
            }
            // a labelled manifest may say which classes each case annotates
            // (partial labels); the losses that care read it
            Kind::Partial | Kind::Labelled => {
                sample.annotated_classes = row.annotated_classes.clone()
            }
            Kind::Unlabelled => {}
        }
        Ok(sample)
    }
}

macro_rules! dataset_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            inner: ManifestDataset,
        }

        impl $name {
            /// The manifest the dataset reads.
            pub fn manifest(&self) -> &Manifest {
                &self.inner.manifest
            }
        }

        impl Dataset for $name {
            fn len(&self) -> usize {
                self.inner.manifest.len()
            }
            fn get(&self, index: usize) -> Result<Sample> {
                self.inner.load(index)
            }
        }
    };
}

dataset_type!(
    /// Images with full labels (plus pixel and image weights when the
    /// manifest has them).
    LabelledDataset
);
dataset_type!(
    /// Images only; label and weight columns are ignored (the image weight is
    /// kept).
    UnlabelledDataset
);
dataset_type!(
    /// Images with scribble labels: voxels equal to the ignore value
    /// (default [`DEFAULT_IGNORE_LABEL`]) are unannotated. The sample's pixel
    /// weight is 0 there and 1 (or the manifest's pixel weight) elsewhere.
    ScribbleDataset
);
dataset_type!(
    /// Images with partial labels: each row lists its annotated classes
    /// (`annotated_classes` column), passed on as
    /// [`Sample::annotated_classes`] (`None` when the cell is empty: all).
    PartialLabelDataset
);

impl LabelledDataset {
    /// A labelled dataset; every row must have a label.
    ///
    /// # Errors
    /// [`Error::Manifest`] naming the first row without a label, or an empty manifest.
    pub fn new(manifest: Manifest) -> Result<Self> {
        Ok(LabelledDataset {
            inner: ManifestDataset::new(manifest, Kind::Labelled)?,
        })
    }
}

impl UnlabelledDataset {
    /// An image-only dataset.
    ///
    /// # Errors
    /// [`Error::Manifest`] for an empty manifest.
    pub fn new(manifest: Manifest) -> Result<Self> {
        Ok(UnlabelledDataset {
            inner: ManifestDataset::new(manifest, Kind::Unlabelled)?,
        })
    }
}

impl ScribbleDataset {
    /// A scribble dataset with the default ignore value
    /// ([`DEFAULT_IGNORE_LABEL`]).
    pub fn new(manifest: Manifest) -> Result<Self> {
        Self::with_ignore(manifest, DEFAULT_IGNORE_LABEL)
    }

    /// A scribble dataset whose unannotated voxels hold `ignore`.
    pub fn with_ignore(manifest: Manifest, ignore: u16) -> Result<Self> {
        Ok(ScribbleDataset {
            inner: ManifestDataset::new(manifest, Kind::Scribble(ignore))?,
        })
    }

    /// The value marking unannotated voxels.
    pub fn ignore_label(&self) -> u16 {
        match self.inner.kind {
            Kind::Scribble(v) => v,
            _ => DEFAULT_IGNORE_LABEL,
        }
    }
}

impl PartialLabelDataset {
    /// A partial-label dataset; every row must have a label.
    pub fn new(manifest: Manifest) -> Result<Self> {
        Ok(PartialLabelDataset {
            inner: ManifestDataset::new(manifest, Kind::Partial)?,
        })
    }
}
