//! Checks of scribble annotations before training: every label file of the
//! training manifest holds only classes or the ignore value, and at least
//! one annotated pixel. Errors name the file.

use crate::error::{LearnError, Result};
use medseg_io::Manifest;

/// Reads every label of `m` and checks its values (`0..class_num` or
/// `ignore`) and that some pixel is annotated (not `ignore`).
pub fn check_scribbles(m: &Manifest, class_num: usize, ignore: u16) -> Result<()> {
    for (i, row) in m.rows.iter().enumerate() {
        let Some(lp) = &row.label else {
            return Err(m.row_error(i, "no scribble (label) file").into());
        };
        let path = m.resolve(lp);
        let label = medseg_io::read_label(&path)?;
        if let Some(bad) = label
            .data
            .iter()
            .copied()
            .find(|&v| v as usize >= class_num && v != ignore)
        {
            return Err(LearnError::Other(format!(
                "{}: scribble value {bad} is neither a class 0..{} nor the ignore value {ignore} \
                 (dataset.class_num, dataset.ignore_label)",
                path.display(),
                class_num - 1
            )));
        }
        if label.data.iter().all(|&v| v == ignore) {
            return Err(LearnError::Other(format!(
                "{}: the scribble map has no annotated pixel (every value is the ignore value {ignore})",
                path.display()
            )));
        }
    }
    Ok(())
}
