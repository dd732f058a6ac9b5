//! Whole-file inference: read, transform, predict, undo the transforms,
//! post-process, and write the prediction with the input's geometry.

use crate::{argmax, keep_largest_component, InferError, LargestComponentMode, Predictor, Result};
use medseg_core::{Image, LabelMap, Sample};
use medseg_io::nifti::NiftiHeader;
use medseg_io::{DataType, FileFormat};
use medseg_transforms::{invert_prediction, Mode, Pipeline};
use ndarray::{ArrayD, Axis};
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Files written for one case.
#[derive(Debug, Clone, Default)]
pub struct CaseOutput {
    /// The label map.
    pub label: PathBuf,
    /// Class probabilities, when requested.
    pub probabilities: Option<PathBuf>,
    /// Overlay picture, when requested.
    pub overlay: Option<PathBuf>,
}

/// Settings of an inference run over files.
pub struct InferenceJob<'a> {
    /// The network(s), window and TTA.
    pub predictor: Predictor<'a>,
    /// Test-time transforms (normalisation...), undone on the prediction.
    pub pipeline: &'a Pipeline,
    /// Keep-largest-component post-processing.
    pub largest_component: Option<LargestComponentMode>,
    /// Save class probabilities as a float image beside the label map.
    pub save_probabilities: bool,
    /// Save an overlay PNG of the prediction on the image (middle slice in 3D).
    pub overlays: bool,
    /// Output folder.
    pub out_dir: PathBuf,
}

/// Reads one case from its modality files, keeping the first file's NIfTI
/// header (if it is NIfTI) so that outputs carry the same qform and sform.
pub fn read_case(files: &[PathBuf]) -> Result<(Image, Option<NiftiHeader>)> {
    let first = files.first().ok_or_else(|| InferError::Invalid {
        key: "input".into(),
        message: "no image file given".into(),
    })?;
    let (mut image, header) = match FileFormat::of(first)? {
        FileFormat::Nifti => {
            let (im, h) = medseg_io::nifti::read_nifti(first)?;
            (im, Some(h))
        }
        _ => (medseg_io::read_image(first)?, None),
    };
    for f in &files[1..] {
        let other = medseg_io::read_image(f)?;
        if other.spatial_shape() != image.spatial_shape() {
            return Err(InferError::Shape(format!(
                "{}: shape {:?} differs from {} ({:?})",
                f.display(),
                other.spatial_shape(),
                first.display(),
                image.spatial_shape()
            )));
        }
        image.data = ndarray::concatenate(Axis(0), &[image.data.view(), other.data.view()])
            .map_err(|e| InferError::Shape(e.to_string()))?;
    }
    check_finite(&image, files)?;
    Ok((image, header))
}

/// NaN or infinite voxels would make the normalisation, and with it the
/// whole prediction, meaningless without a word: they are an error that
/// names the file and counts them.
fn check_finite(image: &Image, files: &[PathBuf]) -> Result<()> {
    let bad = image.data.iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(());
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(InferError::BadImage {
        file: names.join(", "),
        message: format!(
            "{bad} of {} voxels are not finite (NaN or infinite); replace them (with the \
             background intensity, say) before inference",
            image.data.len()
        ),
    })
}

/// The output file name for a case: its name plus the input's extension
/// (`.nii.gz` for NIfTI inputs, `.png` otherwise).
fn output_name(name: &str, input: &Path, suffix: &str) -> String {
    match FileFormat::of(input) {
        Ok(FileFormat::Nifti) => format!("{name}{suffix}.nii.gz"),
        _ => format!("{name}{suffix}.png"),
    }
}

impl InferenceJob<'_> {
    /// Predicts the label map `[...spatial]` of `image` on its own grid.
    pub fn predict_labels(&self, image: &Image, name: &str) -> Result<(ArrayD<u16>, ArrayD<f32>)> {
        let sample = Sample::new(name, image.clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let t = self.pipeline.apply_in(sample, &mut rng, Mode::Inference)?;
        let probs = self.predictor.predict(t.image.data.view())?;
        let probs = invert_prediction(&t.history, probs)?;
        if probs.shape()[1..] != *image.spatial_shape() {
            return Err(InferError::Shape(format!(
                "{name}: prediction shape {:?} after undoing the transforms differs from the image's {:?}",
                &probs.shape()[1..],
                image.spatial_shape()
            )));
        }
        let mut labels = argmax(probs.view());
        if let Some(mode) = self.largest_component {
            labels = keep_largest_component(&labels, mode);
        }
        Ok((labels, probs))
    }

    /// Runs one case (its modality files) and writes its outputs.
    pub fn run_case(&self, files: &[PathBuf], name: &str) -> Result<CaseOutput> {
        self.run_case_with(files, name, &[])
    }

    /// [`InferenceJob::run_case`], writing each predicted class `c` of
    /// `label_map`'s `(c, value)` pairs as `value` (other classes as they
    /// are), as PyMIC's `label_source`/`label_target` do.
    pub fn run_case_with(
        &self,
        files: &[PathBuf],
        name: &str,
        label_map: &[(u16, u16)],
    ) -> Result<CaseOutput> {
        let (image, header) = read_case(files)?;
        let (labels, probs) = self.predict_labels(&image, name)?;
        // the written values; overlays keep the class indices
        let written = labels.mapv(|c| {
            label_map
                .iter()
                .find(|(from, _)| *from == c)
                .map_or(c, |(_, to)| *to)
        });
        std::fs::create_dir_all(&self.out_dir)
            .map_err(|e| medseg_core::Error::io(&self.out_dir, e))?;
        let label = LabelMap::new(written.insert_axis(Axis(0)), image.geometry)?;
        let mut out = CaseOutput {
            label: self.out_dir.join(output_name(name, &files[0], "")),
            ..Default::default()
        };
        match header.as_ref() {
            Some(h) => medseg_io::nifti::write_nifti_label(&out.label, &label, Some(h))?,
            None => medseg_io::write_label(&out.label, &label)?,
        }
        if self.save_probabilities {
            let p = self.out_dir.join(format!("{name}_prob.nii.gz"));
            let img = Image::new(probs, image.geometry)?;
            medseg_io::nifti::write_nifti(&p, &img, DataType::F32, header.as_ref())?;
            out.probabilities = Some(p);
        }
        if self.overlays {
            let p = self.out_dir.join(format!("{name}_overlay.png"));
            let ch0 = image.data.index_axis(Axis(0), 0);
            let (img2, lab2) = if ch0.ndim() == 3 {
                let mid = ch0.shape()[0] / 2;
                (
                    ch0.index_axis(Axis(0), mid).to_owned(),
                    labels.index_axis(Axis(0), mid).to_owned(),
                )
            } else {
                (ch0.to_owned(), labels.clone())
            };
            let img2 = img2
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| InferError::Shape(e.to_string()))?;
            let lab2 = lab2
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| InferError::Shape(e.to_string()))?;
            let rgb = medseg_viz::overlay_labels(img2.view(), lab2.view(), 0.45, None);
            let up = if rgb.width < 256 { rgb.upscale(2) } else { rgb };
            medseg_viz::save_png(&p, &up)?;
            out.overlay = Some(p);
        }
        Ok(out)
    }
}
