//! Undoing the grid operations recorded in a sample's history, so that a
//! prediction made on the transformed grid is mapped back to the original.

use crate::grid::{apply_op, from4, sshape, to4, GridOp, Sampling, Voxel};
use medseg_core::{Error, Result, TransformRecord};
use ndarray::ArrayD;

/// Reads the grid operation of a record: `Ok(None)` for records that leave
/// the grid as it is (intensity and label transforms, random transforms
/// that were not applied).
fn recorded_op(rec: &TransformRecord) -> Result<Option<(GridOp, [usize; 3])>> {
    let p = &rec.params;
    if p.get("invertible") == Some(&serde_json::Value::Bool(false)) {
        return Err(Error::Other(format!(
            "{} cannot be inverted; run it at training time only",
            rec.name
        )));
    }
    let Some(op) = p.get("op") else {
        return Ok(None);
    };
    let op: GridOp = serde_json::from_value(op.clone())
        .map_err(|e| Error::invalid(format!("{}.op", rec.name), e.to_string()))?;
    let in_shape: [usize; 3] = p
        .get("in_shape")
        .cloned()
        .ok_or_else(|| Error::invalid(format!("{}.in_shape", rec.name), "missing"))
        .and_then(|v| {
            serde_json::from_value(v)
                .map_err(|e| Error::invalid(format!("{}.in_shape", rec.name), e.to_string()))
        })?;
    Ok(Some((op, in_shape)))
}

fn invert<T: Voxel>(
    history: &[TransformRecord],
    pred: ArrayD<T>,
    sampling: Sampling<T>,
) -> Result<ArrayD<T>> {
    let ndim = pred.ndim().saturating_sub(1);
    let mut a = to4(pred)?;
    for rec in history.iter().rev() {
        let Some((op, in_shape)) = recorded_op(rec)? else {
            continue;
        };
        let expect = op.out_shape(in_shape);
        if sshape(&a) != expect {
            return Err(Error::Shape(format!(
                "inverting {}: prediction has spatial shape {:?}, the transform produced {:?}",
                rec.name,
                &sshape(&a)[3 - ndim..],
                &expect[3 - ndim..]
            )));
        }
        a = apply_op(&op.inverse(in_shape)?, &a, sampling);
    }
    Ok(from4(a, ndim))
}

/// Maps a prediction `[C, ...spatial]` (probabilities, logits or any `f32`
/// map) made on a transformed grid back to the grid before the transforms in
/// `history` (oldest first, as in [`medseg_core::Sample::history`]). Crops,
/// pads, flips, rot90, transposes, rotations, affine maps and resampling are
/// undone (resampling linearly); regions that were cropped away get 0.
///
/// # Errors
/// [`Error::Shape`] when the prediction's shape is not the one the last
/// transform produced; [`Error::Other`] for a record that cannot be
/// inverted (elastic deformation).
pub fn invert_prediction(history: &[TransformRecord], pred: ArrayD<f32>) -> Result<ArrayD<f32>> {
    invert(history, pred, Sampling::Linear(0.0))
}

/// As [`invert_prediction`] for a label map `[1, ...spatial]`, by nearest
/// neighbour; regions that were cropped away get `fill`.
///
/// # Errors
/// As [`invert_prediction`].
pub fn invert_label(
    history: &[TransformRecord],
    label: ArrayD<u16>,
    fill: u16,
) -> Result<ArrayD<u16>> {
    invert(history, label, Sampling::Nearest(fill))
}
