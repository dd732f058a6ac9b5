//! NIfTI-1 and NIfTI-2 reading and writing (`.nii` and `.nii.gz`).
//!
//! # Conventions
//! - Voxel index `(i, j, k, t, ...)` of the file maps to array index
//!   `[c, k, j, i]`: the file's Fortran order is exactly the C order of a
//!   channel-first array, so no transposition happens.
//! - Every axis beyond the third (`t`, and vector dimensions `u`, `v`, `w`) is
//!   folded into channels: a 4D volume of 2 time points reads as `[2, D, H, W]`.
//! - A file whose third dimension is 1 (`nz == 1`, or `dim[0] < 3`) reads as a
//!   2D image `[C, H, W]`; its geometry keeps the full affine (the slice
//!   thickness is `spacing[0]`). Writing a 2D image writes `nz == 1`.
//! - The affine follows the NIfTI-1 rules: the sform when `sform_code > 0`,
//!   else the qform when `qform_code > 0`, else `diag(pixdim)` with a zero
//!   origin (the standard's "method 1"; nibabel's fallback instead flips x and
//!   centres the volume).
//! - `scl_slope`/`scl_inter` are applied when the slope is finite and non-zero.
//! - Header extensions are skipped: voxel data starts at `vox_offset`.
//! - Files are written little-endian, with `vox_offset` 352 (NIfTI-1) or 544
//!   (NIfTI-2) and no extension, to a temporary file that is then renamed.

use crate::dtype::DataType;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use medseg_core::write_atomic_with;
use medseg_core::{Error, Geometry, Image, LabelMap, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::io::{Read, Write};
use std::path::Path;

/// Bytes of a NIfTI-1 header.
const V1_SIZE: usize = 348;
/// Bytes of a NIfTI-2 header.
const V2_SIZE: usize = 540;
/// Voxels per parallel work item when converting values.
const CHUNK: usize = 1 << 16;

/// The fields of a NIfTI-1 or NIfTI-2 header, widened to the NIfTI-2 types.
///
/// `dim`, `pixdim` and the other per-axis fields are in file order
/// `(i, j, k, t, ...)`, i.e. the reverse of medseg's array axis order.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiHeader {
    /// 1 for NIfTI-1 (348-byte header), 2 for NIfTI-2 (540 bytes).
    pub version: u8,
    /// Byte order of the file.
    pub little_endian: bool,
    /// `dim[0]` is the number of dimensions, `dim[1..=dim[0]]` their sizes.
    pub dim: [i64; 8],
    /// The NIfTI `datatype` code (see [`DataType::nifti_code`]).
    pub datatype: i16,
    /// Bits per voxel.
    pub bitpix: i16,
    /// `pixdim[0]` is qfac (±1), `pixdim[1..=3]` the voxel size in `(i, j, k)`.
    pub pixdim: [f64; 8],
    /// Byte offset of the voxel data in the file.
    pub vox_offset: f64,
    /// Value scaling slope (0 means no scaling).
    pub scl_slope: f64,
    /// Value scaling intercept.
    pub scl_inter: f64,
    /// Display range maximum.
    pub cal_max: f64,
    /// Display range minimum.
    pub cal_min: f64,
    /// Intent parameters 1 to 3.
    pub intent_p: [f64; 3],
    /// Intent code (0: none).
    pub intent_code: i32,
    /// Intent name (up to 16 bytes).
    pub intent_name: String,
    /// Frequency/phase/slice encoding directions.
    pub dim_info: u8,
    /// First slice index.
    pub slice_start: i64,
    /// Last slice index.
    pub slice_end: i64,
    /// Slice timing order code.
    pub slice_code: i32,
    /// Time to acquire one slice.
    pub slice_duration: f64,
    /// Time axis shift.
    pub toffset: f64,
    /// Units of pixdim (bits 0-2 space, 3-5 time).
    pub xyzt_units: i32,
    /// Free-text description (up to 80 bytes).
    pub descrip: String,
    /// Auxiliary file name (up to 24 bytes).
    pub aux_file: String,
    /// Code of the qform (0: unset, 1: scanner, 2: aligned, 3: Talairach, 4: MNI, 5: template).
    pub qform_code: i32,
    /// Code of the sform (same meanings as `qform_code`).
    pub sform_code: i32,
    /// Quaternion parameters `b, c, d` of the qform rotation.
    pub quatern: [f64; 3],
    /// Offsets `x, y, z` of the qform.
    pub qoffset: [f64; 3],
    /// Rows `x, y, z` of the sform affine.
    pub srow: [[f64; 4]; 3],
}

impl Default for NiftiHeader {
    /// A little-endian NIfTI-1 header of a 1-voxel `uint8` volume with unit
    /// voxels and both forms unset.
    fn default() -> Self {
        NiftiHeader {
            version: 1,
            little_endian: true,
            dim: [3, 1, 1, 1, 1, 1, 1, 1],
            datatype: DataType::U8.nifti_code(),
            bitpix: 8,
            pixdim: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352.0,
            scl_slope: 1.0,
            scl_inter: 0.0,
            cal_max: 0.0,
            cal_min: 0.0,
            intent_p: [0.0; 3],
            intent_code: 0,
            intent_name: String::new(),
            dim_info: 0,
            slice_start: 0,
            slice_end: 0,
            slice_code: 0,
            slice_duration: 0.0,
            toffset: 0.0,
            xyzt_units: 2,
            descrip: String::new(),
            aux_file: String::new(),
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
            ],
        }
    }
}

type Mat3 = [[f64; 3]; 3];
type Affine = [[f64; 4]; 4];

fn det3(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse transpose of a 3x3 matrix, `None` when singular.
fn inv_transpose(m: &Mat3) -> Option<Mat3> {
    let d = det3(m);
    if d.abs() < 1e-300 || !d.is_finite() {
        return None;
    }
    // cofactor matrix divided by the determinant is the inverse transpose
    let mut c = [[0.0; 3]; 3];
    for (i, row) in c.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let (i1, i2) = ((i + 1) % 3, (i + 2) % 3);
            let (j1, j2) = ((j + 1) % 3, (j + 2) % 3);
            *v = (m[i1][j1] * m[i2][j2] - m[i1][j2] * m[i2][j1]) / d;
        }
    }
    Some(c)
}

/// The rotation closest to `m` (polar decomposition by Newton iteration).
fn nearest_rotation(m: &Mat3) -> Mat3 {
    let mut r = *m;
    for _ in 0..30 {
        let Some(it) = inv_transpose(&r) else {
            return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        };
        let mut next = [[0.0; 3]; 3];
        let mut change: f64 = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                next[i][j] = 0.5 * (r[i][j] + it[i][j]);
                change = change.max((next[i][j] - r[i][j]).abs());
            }
        }
        r = next;
        if change < 1e-15 {
            break;
        }
    }
    r
}

/// Quaternion `(b, c, d)` with non-negative `a` of a proper rotation matrix.
fn rotation_to_quaternion(r: &Mat3) -> [f64; 3] {
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r[2][1] - r[1][2]) / a;
        c = 0.25 * (r[0][2] - r[2][0]) / a;
        d = 0.25 * (r[1][0] - r[0][1]) / a;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r[0][1] + r[1][0]) / b;
            d = 0.25 * (r[0][2] + r[2][0]) / b;
            a = 0.25 * (r[2][1] - r[1][2]) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r[0][1] + r[1][0]) / c;
            d = 0.25 * (r[1][2] + r[2][1]) / c;
            a = 0.25 * (r[0][2] - r[2][0]) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r[0][2] + r[2][0]) / d;
            c = 0.25 * (r[1][2] + r[2][1]) / d;
            a = 0.25 * (r[1][0] - r[0][1]) / d;
        }
    }
    if a < 0.0 {
        [-b, -c, -d]
    } else {
        [b, c, d]
    }
}

impl NiftiHeader {
    /// The on-disk data type, `None` for a code medseg does not read.
    pub fn data_type(&self) -> Option<DataType> {
        DataType::from_nifti_code(self.datatype)
    }

    /// Number of dimensions (`dim[0]`, clamped to 1..=7).
    pub fn ndim(&self) -> usize {
        self.dim[0].clamp(1, 7) as usize
    }

    /// Sizes of the dimensions in file order `(i, j, k, t, ...)`.
    pub fn file_shape(&self) -> Vec<usize> {
        (1..=self.ndim())
            .map(|d| self.dim[d].max(0) as usize)
            .collect()
    }

    /// The channel-first array shape the file reads as: `[C, H, W]` when
    /// `nz == 1`, else `[C, D, H, W]`; axes beyond the third (and RGB24's three
    /// components) are folded into `C`.
    pub fn array_shape(&self) -> Vec<usize> {
        let s = self.file_shape();
        let get = |d: usize| s.get(d).copied().unwrap_or(1);
        let (nx, ny, nz) = (get(0), get(1), get(2));
        let mut c: usize = s.iter().skip(3).product();
        if self.data_type() == Some(DataType::Rgb24) {
            c *= 3;
        }
        if nz == 1 {
            vec![c, ny, nx]
        } else {
            vec![c, nz, ny, nx]
        }
    }

    /// The `(slope, intercept)` to apply, `None` when the slope is 0 or not
    /// finite (no scaling), or when it is the identity.
    pub fn scaling(&self) -> Option<(f64, f64)> {
        let slope = self.scl_slope;
        if slope == 0.0 || !slope.is_finite() {
            return None;
        }
        let inter = if self.scl_inter.is_finite() {
            self.scl_inter
        } else {
            0.0
        };
        if slope == 1.0 && inter == 0.0 {
            None
        } else {
            Some((slope, inter))
        }
    }

    /// The qform affine (from the quaternion, `pixdim` and `qoffset`),
    /// whatever `qform_code` says.
    pub fn qform_affine(&self) -> Affine {
        let [mut b, mut c, mut d] = self.quatern;
        let mut a = 1.0 - (b * b + c * c + d * d);
        if a < 1e-7 {
            let n = (b * b + c * c + d * d).sqrt();
            if n > 0.0 {
                b /= n;
                c /= n;
                d /= n;
            }
            a = 0.0;
        } else {
            a = a.sqrt();
        }
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let zooms = [self.pixdim[1], self.pixdim[2], self.pixdim[3] * qfac];
        let mut m = [[0.0; 4]; 4];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = r[i][j] * zooms[j];
            }
            m[i][3] = self.qoffset[i];
        }
        m[3][3] = 1.0;
        m
    }

    /// The sform affine (`srow_x`, `srow_y`, `srow_z`), whatever `sform_code` says.
    pub fn sform_affine(&self) -> Affine {
        let mut m = [[0.0; 4]; 4];
        m[..3].copy_from_slice(&self.srow);
        m[3][3] = 1.0;
        m
    }

    /// The affine of "method 1": `diag(pixdim[1..=3])` with a zero origin.
    pub fn pixdim_affine(&self) -> Affine {
        let mut m = [[0.0; 4]; 4];
        for (i, row) in m.iter_mut().enumerate().take(3) {
            let p = self.pixdim[i + 1];
            row[i] = if p > 0.0 && p.is_finite() { p } else { 1.0 };
        }
        m[3][3] = 1.0;
        m
    }

    /// The voxel-to-world (RAS+ mm) affine by the NIfTI rules: the sform when
    /// `sform_code > 0`, else the qform when `qform_code > 0`, else pixdim.
    pub fn affine(&self) -> Affine {
        if self.sform_code > 0 {
            self.sform_affine()
        } else if self.qform_code > 0 {
            self.qform_affine()
        } else {
            self.pixdim_affine()
        }
    }

    /// The geometry (array axis order `(D, H, W)`) of [`NiftiHeader::affine`].
    pub fn geometry(&self) -> Geometry {
        Geometry::from_affine(&self.affine())
    }

    /// Sets both the sform (exactly `affine`) and the qform (the nearest
    /// rotation with zooms and qfac; exact for non-sheared affines) and their
    /// codes, and `pixdim[0..=3]`.
    pub fn set_affine(&mut self, affine: &Affine, qform_code: i32, sform_code: i32) {
        self.srow.copy_from_slice(&affine[..3]);
        let mut m = [[0.0; 3]; 3];
        let mut zooms = [1.0; 3];
        for (j, z) in zooms.iter_mut().enumerate() {
            let n = (0..3)
                .map(|i| affine[i][j] * affine[i][j])
                .sum::<f64>()
                .sqrt();
            if n > 0.0 && n.is_finite() {
                *z = n;
                for i in 0..3 {
                    m[i][j] = affine[i][j] / n;
                }
            } else {
                m[j][j] = 1.0;
            }
        }
        let mut qfac = 1.0;
        if det3(&m) < 0.0 {
            qfac = -1.0;
            for row in m.iter_mut() {
                row[2] = -row[2];
            }
        }
        let r = nearest_rotation(&m);
        self.quatern = rotation_to_quaternion(&r);
        self.qoffset = [affine[0][3], affine[1][3], affine[2][3]];
        self.pixdim[0] = qfac;
        self.pixdim[1..4].copy_from_slice(&zooms);
        self.qform_code = qform_code;
        self.sform_code = sform_code;
    }

    /// Parses a header from the start of a file's (decompressed) bytes.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` for a short buffer, a `sizeof_hdr`
    /// other than 348/540, a wrong magic or bad dimensions.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<NiftiHeader> {
        if bytes.len() < 4 {
            return Err(Error::format(
                path,
                format!(
                    "truncated file: {} bytes, too short for a NIfTI header",
                    bytes.len()
                ),
            ));
        }
        let first = [bytes[0], bytes[1], bytes[2], bytes[3]];
        let (version, little_endian) = match (i32::from_le_bytes(first), i32::from_be_bytes(first))
        {
            (348, _) => (1u8, true),
            (_, 348) => (1, false),
            (540, _) => (2, true),
            (_, 540) => (2, false),
            (le, _) => {
                return Err(Error::format(
                    path,
                    format!(
                    "not a NIfTI file: sizeof_hdr is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
                ),
                ))
            }
        };
        let need = if version == 1 { V1_SIZE } else { V2_SIZE };
        if bytes.len() < need {
            return Err(Error::format(
                path,
                format!(
                    "truncated file: {} bytes, a NIfTI-{version} header needs {need}",
                    bytes.len()
                ),
            ));
        }
        let r = ByteReader {
            b: bytes,
            le: little_endian,
        };
        let mut h = NiftiHeader {
            version,
            little_endian,
            ..NiftiHeader::default()
        };
        if version == 1 {
            let magic = &bytes[344..348];
            if magic == b"ni1\0" {
                return Err(Error::format(
                    path,
                    "a NIfTI-1 pair header (magic \"ni1\"): .hdr/.img pairs are not supported, convert to .nii",
                ));
            }
            if magic != b"n+1\0" {
                return Err(Error::format(
                    path,
                    format!(
                        "wrong magic {:?}, expected \"n+1\\0\"",
                        String::from_utf8_lossy(magic)
                    ),
                ));
            }
            h.dim_info = bytes[39];
            for d in 0..8 {
                h.dim[d] = r.i16(40 + 2 * d) as i64;
            }
            for p in 0..3 {
                h.intent_p[p] = r.f32(56 + 4 * p) as f64;
            }
            h.intent_code = r.i16(68) as i32;
            h.datatype = r.i16(70);
            h.bitpix = r.i16(72);
            h.slice_start = r.i16(74) as i64;
            for d in 0..8 {
                h.pixdim[d] = r.f32(76 + 4 * d) as f64;
            }
            h.vox_offset = r.f32(108) as f64;
            h.scl_slope = r.f32(112) as f64;
            h.scl_inter = r.f32(116) as f64;
            h.slice_end = r.i16(120) as i64;
            h.slice_code = bytes[122] as i32;
            h.xyzt_units = bytes[123] as i32;
            h.cal_max = r.f32(124) as f64;
            h.cal_min = r.f32(128) as f64;
            h.slice_duration = r.f32(132) as f64;
            h.toffset = r.f32(136) as f64;
            h.descrip = c_string(&bytes[148..228]);
            h.aux_file = c_string(&bytes[228..252]);
            h.qform_code = r.i16(252) as i32;
            h.sform_code = r.i16(254) as i32;
            for q in 0..3 {
                h.quatern[q] = r.f32(256 + 4 * q) as f64;
                h.qoffset[q] = r.f32(268 + 4 * q) as f64;
            }
            for row in 0..3 {
                for c in 0..4 {
                    h.srow[row][c] = r.f32(280 + 16 * row + 4 * c) as f64;
                }
            }
            h.intent_name = c_string(&bytes[328..344]);
        } else {
            let magic = &bytes[4..8];
            if magic != b"n+2\0" {
                if magic == b"ni2\0" {
                    return Err(Error::format(
                        path,
                        "a NIfTI-2 pair header (magic \"ni2\"): .hdr/.img pairs are not supported, convert to .nii",
                    ));
                }
                return Err(Error::format(
                    path,
                    format!(
                        "wrong magic {:?}, expected \"n+2\\0\"",
                        String::from_utf8_lossy(magic)
                    ),
                ));
            }
            h.datatype = r.i16(12);
            h.bitpix = r.i16(14);
            for d in 0..8 {
                h.dim[d] = r.i64(16 + 8 * d);
            }
            for p in 0..3 {
                h.intent_p[p] = r.f64(80 + 8 * p);
            }
            for d in 0..8 {
                h.pixdim[d] = r.f64(104 + 8 * d);
            }
            h.vox_offset = r.i64(168) as f64;
            h.scl_slope = r.f64(176);
            h.scl_inter = r.f64(184);
            h.cal_max = r.f64(192);
            h.cal_min = r.f64(200);
            h.slice_duration = r.f64(208);
            h.toffset = r.f64(216);
            h.slice_start = r.i64(224);
            h.slice_end = r.i64(232);
            h.descrip = c_string(&bytes[240..320]);
            h.aux_file = c_string(&bytes[320..344]);
            h.qform_code = r.i32(344);
            h.sform_code = r.i32(348);
            for q in 0..3 {
                h.quatern[q] = r.f64(352 + 8 * q);
                h.qoffset[q] = r.f64(376 + 8 * q);
            }
            for row in 0..3 {
                for c in 0..4 {
                    h.srow[row][c] = r.f64(400 + 32 * row + 8 * c);
                }
            }
            h.slice_code = r.i32(496);
            h.xyzt_units = r.i32(500);
            h.intent_code = r.i32(504);
            h.intent_name = c_string(&bytes[508..524]);
            h.dim_info = bytes[524];
        }
        h.validate_dims(path)?;
        Ok(h)
    }

    fn validate_dims(&self, path: &Path) -> Result<()> {
        let n = self.dim[0];
        if !(1..=7).contains(&n) {
            return Err(Error::format(
                path,
                format!("bad dim[0] = {n}: the number of dimensions must be 1 to 7"),
            ));
        }
        for d in 1..=n as usize {
            if self.dim[d] < 1 {
                return Err(Error::format(
                    path,
                    format!(
                        "bad dim[{d}] = {}: sizes must be at least 1 (dim = {:?})",
                        self.dim[d],
                        &self.dim[..=n as usize]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where the voxel data starts: `vox_offset`, or just past the header and
    /// its 4-byte extension flag when `vox_offset` is smaller than that.
    pub fn data_offset(&self) -> usize {
        let min = if self.version == 1 {
            V1_SIZE + 4
        } else {
            V2_SIZE + 4
        };
        if self.vox_offset.is_finite() && self.vox_offset >= min as f64 {
            self.vox_offset as usize
        } else {
            min
        }
    }

    /// Total number of voxels (product of all dimensions), checked for overflow.
    fn voxel_count(&self, path: &Path) -> Result<usize> {
        self.file_shape()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                Error::format(path, format!("dimensions {:?} overflow", self.file_shape()))
            })
    }

    /// Serialises the header as a NIfTI-1 or NIfTI-2 (per `version`) little-
    /// endian header followed by a zero extension flag; sets `vox_offset` to
    /// the returned length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = ByteWriter::default();
        if self.version == 2 {
            w.i32(V2_SIZE as i32);
            w.bytes(b"n+2\0\r\n\x1a\n");
            w.i16(self.datatype);
            w.i16(self.bitpix);
            for d in self.dim {
                w.i64(d);
            }
            for p in self.intent_p {
                w.f64(p);
            }
            for p in self.pixdim {
                w.f64(p);
            }
            w.i64((V2_SIZE + 4) as i64);
            w.f64(self.scl_slope);
            w.f64(self.scl_inter);
            w.f64(self.cal_max);
            w.f64(self.cal_min);
            w.f64(self.slice_duration);
            w.f64(self.toffset);
            w.i64(self.slice_start);
            w.i64(self.slice_end);
            w.str(&self.descrip, 80);
            w.str(&self.aux_file, 24);
            w.i32(self.qform_code);
            w.i32(self.sform_code);
            for q in self.quatern {
                w.f64(q);
            }
            for q in self.qoffset {
                w.f64(q);
            }
            for row in self.srow {
                for v in row {
                    w.f64(v);
                }
            }
            w.i32(self.slice_code);
            w.i32(self.xyzt_units);
            w.i32(self.intent_code);
            w.str(&self.intent_name, 16);
            w.bytes(&[self.dim_info]);
            w.bytes(&[0u8; 15]);
            debug_assert_eq!(w.0.len(), V2_SIZE);
        } else {
            w.i32(V1_SIZE as i32);
            w.bytes(&[0u8; 10]); // data_type
            w.bytes(&[0u8; 18]); // db_name
            w.i32(0); // extents
            w.i16(0); // session_error
            w.bytes(b"r"); // regular
            w.bytes(&[self.dim_info]);
            for d in self.dim {
                w.i16(d.clamp(i16::MIN as i64, i16::MAX as i64) as i16);
            }
            for p in self.intent_p {
                w.f32(p as f32);
            }
            w.i16(self.intent_code as i16);
            w.i16(self.datatype);
            w.i16(self.bitpix);
            w.i16(self.slice_start as i16);
            for p in self.pixdim {
                w.f32(p as f32);
            }
            w.f32((V1_SIZE + 4) as f32);
            w.f32(self.scl_slope as f32);
            w.f32(self.scl_inter as f32);
            w.i16(self.slice_end as i16);
            w.bytes(&[self.slice_code as u8, self.xyzt_units as u8]);
            w.f32(self.cal_max as f32);
            w.f32(self.cal_min as f32);
            w.f32(self.slice_duration as f32);
            w.f32(self.toffset as f32);
            w.i32(0); // glmax
            w.i32(0); // glmin
            w.str(&self.descrip, 80);
            w.str(&self.aux_file, 24);
            w.i16(self.qform_code as i16);
            w.i16(self.sform_code as i16);
            for q in self.quatern {
                w.f32(q as f32);
            }
            for q in self.qoffset {
                w.f32(q as f32);
            }
            for row in self.srow {
                for v in row {
                    w.f32(v as f32);
                }
            }
            w.str(&self.intent_name, 16);
            w.bytes(b"n+1\0");
            debug_assert_eq!(w.0.len(), V1_SIZE);
        }
        w.bytes(&[0u8; 4]); // extension flag: none
        w.0
    }
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

struct ByteReader<'a> {
    b: &'a [u8],
    le: bool,
}

impl ByteReader<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[off..off + N]);
        a
    }
    fn i16(&self, off: usize) -> i16 {
        let a = self.arr::<2>(off);
        if self.le {
            i16::from_le_bytes(a)
        } else {
            i16::from_be_bytes(a)
        }
    }
    fn i32(&self, off: usize) -> i32 {
        let a = self.arr::<4>(off);
        if self.le {
            i32::from_le_bytes(a)
        } else {
            i32::from_be_bytes(a)
        }
    }
    fn i64(&self, off: usize) -> i64 {
        let a = self.arr::<8>(off);
        if self.le {
            i64::from_le_bytes(a)
        } else {
            i64::from_be_bytes(a)
        }
    }
    fn f32(&self, off: usize) -> f32 {
        f32::from_bits(self.i32(off) as u32)
    }
    fn f64(&self, off: usize) -> f64 {
        f64::from_bits(self.i64(off) as u64)
    }
}

#[derive(Default)]
struct ByteWriter(Vec<u8>);

impl ByteWriter {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn i16(&mut self, v: i16) {
        self.bytes(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.bytes(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.bytes(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str, len: usize) {
        let b = s.as_bytes();
        let n = b.len().min(len);
        self.bytes(&b[..n]);
        self.bytes(&vec![0u8; len - n]);
    }
}

/// True when the path names a gzip-compressed file (`.gz`).
fn is_gz(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The environment variable that raises (or lowers) the reading limit
/// ([`ReadLimits::from_env`]): a number of bytes. (Not `MEDSEG_...`: that
/// prefix sets configuration keys.)
pub const LIMIT_ENV: &str = "MEDSEGIO_MAX_BYTES";

/// What reading a NIfTI file may allocate: the decoded array (`f32` images,
/// `u16` label maps) must fit in `max_bytes`, checked from the header
/// before anything is allocated or decompressed, so that a small file
/// declaring a huge volume (or a gzip bomb) fails at once with a clear
/// error instead of exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest decoded array, in bytes.
    pub max_bytes: u64,
}

impl ReadLimits {
    /// The default limit: 8 GiB of decoded voxels (a 1024 x 1024 x 2048
    /// `f32` volume; a 512 x 512 x 1000 CT decodes to 1 GiB).
    pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

    /// The default, or [`LIMIT_ENV`] when it is set to a number.
    pub fn from_env() -> Self {
        let max_bytes = std::env::var(LIMIT_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(Self::DEFAULT_MAX_BYTES);
        ReadLimits { max_bytes }
    }

    /// Checks that `voxels` decoded values of `bytes_per_value` bytes fit.
    fn check(
        &self,
        path: &Path,
        h: &NiftiHeader,
        dt: DataType,
        voxels: usize,
        bytes_per_value: usize,
    ) -> Result<()> {
        let decoded = (voxels as u128) * (bytes_per_value as u128);
        if decoded > self.max_bytes as u128 {
            return Err(Error::format(
                path,
                format!(
                    "the header declares dimensions {:?} of {} ({} voxels, {decoded} bytes once \
                     decoded), more than the reading limit of {} bytes; if the file is genuine, \
                     raise the limit with {LIMIT_ENV}=<bytes>",
                    h.file_shape(),
                    dt.name(),
                    voxels,
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self::from_env()
    }
}

/// Opens `path` for reading its (decompressed) bytes as a stream: gzip
/// data (detected by its magic) through a decoder, other files as they are.
fn open_stream(path: &Path) -> Result<Box<dyn Read>> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let head = r.fill_buf().map_err(|e| Error::io(path, e))?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(Box::new(MultiGzDecoder::new(r)))
    } else if is_gz(path) {
        Err(Error::format(
            path,
            "the name ends in .gz but the file is not gzip-compressed",
        ))
    } else {
        Ok(Box::new(r))
    }
}

/// Reads into `buf` until it is full or the stream ends; the count read.
fn fill(r: &mut dyn Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
                return Err(match e.kind() {
                    // what the gzip decoder reports
                    InvalidData | InvalidInput | UnexpectedEof => {
                        Error::format(path, format!("corrupt or truncated gzip data: {e}"))
                    }
                    _ => Error::io(path, e),
                });
            }
        }
    }
    Ok(n)
}

/// How to decode voxel values: data type, little-endian, scaling.
type Decoding = (DataType, bool, Option<(f64, f64)>);

/// Bytes of voxel data handed to the decoder at a time.
const STREAM_CHUNK: usize = 1 << 20;

/// What [`stream_voxels`] hands its callback: the header first (with the
/// data type and the voxel count), then the data in chunks of whole values
/// with the index of each chunk's first value.
enum Voxels<'a> {
    Header(&'a NiftiHeader, DataType, usize),
    Data(&'a [u8], usize),
}

/// Reads the header from `r` and then streams the voxel data to `on`
/// (see [`Voxels`]); the header comes first, to check limits and allocate. Nothing
/// but one chunk of raw bytes is held at a time, so memory stays at the
/// decoded array whatever the file claims.
fn stream_voxels(
    mut r: Box<dyn Read + '_>,
    path: &Path,
    file_len: Option<u64>,
    on: &mut dyn FnMut(Voxels<'_>) -> Result<()>,
) -> Result<NiftiHeader> {
    let mut head = vec![0u8; V2_SIZE];
    let got = fill(&mut *r, &mut head, path)?;
    head.truncate(got);
    let h = NiftiHeader::parse(&head, path)?;
    let dt = h.data_type().ok_or_else(|| {
        Error::format(
            path,
            format!(
                "unknown or unsupported NIfTI datatype code {}; supported: uint8 (2), int8 (256), uint16 (512), int16 (4), uint32 (768), int32 (8), float32 (16), float64 (64), rgb24 (128)",
                h.datatype
            ),
        )
    })?;
    let n = h.voxel_count(path)?;
    let need = n
        .checked_mul(dt.size())
        .ok_or_else(|| Error::format(path, "voxel data size overflows"))?;
    let off = h.data_offset();
    let truncated = |have: u64| {
        Error::format(
            path,
            format!(
                "size does not match the dimensions: {have} bytes of voxel data after offset {off}, but dimensions {:?} of {} need {need} (truncated file or wrong header)",
                h.file_shape(),
                dt.name()
            ),
        )
    };
    // an uncompressed file's size tells at once
    if let Some(len) = file_len {
        let have = len.saturating_sub(off as u64);
        if have < need as u64 {
            return Err(truncated(have));
        }
    }
    on(Voxels::Header(&h, dt, n))?;
    // skip the extensions (the header read may have gone past the offset)
    let mut carry: Vec<u8> = Vec::new();
    if off <= head.len() {
        carry.extend_from_slice(&head[off..]);
    } else {
        let skip = (off - head.len()) as u64;
        let skipped = std::io::copy(&mut (&mut *r).take(skip), &mut std::io::sink())
            .map_err(|e| Error::format(path, format!("corrupt or truncated data: {e}")))?;
        if skipped < skip {
            return Err(truncated(0));
        }
    }
    let size = dt.size();
    let chunk = (STREAM_CHUNK / size).max(1) * size;
    let mut buf = vec![0u8; chunk.min(need.max(1))];
    let mut done = 0usize;
    let mut reader = std::io::Cursor::new(carry).chain(r);
    while done < need {
        let want = (need - done).min(buf.len());
        let got = fill(&mut reader, &mut buf[..want], path)?;
        if got < want {
            return Err(truncated((done + got) as u64));
        }
        on(Voxels::Data(&buf[..want], done / size))?;
        done += want;
    }
    Ok(h)
}

/// Streams a NIfTI file's voxel data: see [`stream_voxels`].
fn stream_file(path: &Path, on: &mut dyn FnMut(Voxels<'_>) -> Result<()>) -> Result<NiftiHeader> {
    let r = open_stream(path)?;
    let len = std::fs::metadata(path).map(|m| m.len()).ok();
    let gz = is_gzip_file(path)?;
    stream_voxels(r, path, len.filter(|_| !gz), on)
}

/// Summary statistics of a NIfTI file's scaled values (NaN skipped),
/// computed while streaming: memory stays at one chunk whatever the
/// volume's size. Returns the header, minimum, maximum, mean and the
/// number of non-NaN values (RGB24: over all three channels).
///
/// # Errors
/// As [`read_nifti`], without the size limit (nothing is kept).
pub fn nifti_statistics(path: &Path) -> Result<(NiftiHeader, f64, f64, f64, usize)> {
    let (mut min, mut max, mut sum, mut count) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0usize);
    let mut meta: Option<Decoding> = None;
    let mut tmp: Vec<f32> = Vec::new();
    let h = stream_file(path, &mut |ev| {
        let raw = match ev {
            Voxels::Header(h, dt, _) => {
                meta = Some((dt, h.little_endian, h.scaling()));
                return Ok(());
            }
            Voxels::Data(raw, _) => raw,
        };
        let (dt, le, scale) = meta.expect("set before the data");
        if dt == DataType::Rgb24 {
            for &b in raw {
                let v = b as f64;
                min = min.min(v);
                max = max.max(v);
                sum += v;
                count += 1;
            }
            return Ok(());
        }
        tmp.resize(raw.len() / dt.size(), 0.0);
        decode_f32(raw, dt, le, scale, &mut tmp);
        for &v in &tmp {
            if v.is_nan() {
                continue;
            }
            let v = v as f64;
            min = min.min(v);
            max = max.max(v);
            sum += v;
            count += 1;
        }
        Ok(())
    })?;
    let mean = if count > 0 {
        sum / count as f64
    } else {
        f64::NAN
    };
    Ok((h, min, max, mean, count))
}

/// Reads only the header of a `.nii` or `.nii.gz` file.
pub fn read_nifti_header(path: &Path) -> Result<NiftiHeader> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut start = Vec::with_capacity(V2_SIZE);
    (&mut f)
        .take(V2_SIZE as u64)
        .read_to_end(&mut start)
        .map_err(|e| Error::io(path, e))?;
    if start.len() >= 2 && start[0] == 0x1f && start[1] == 0x8b {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut dec =
            flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f)).take(V2_SIZE as u64);
        start.clear();
        dec.read_to_end(&mut start)
            .map_err(|e| Error::format(path, format!("corrupt or truncated gzip data: {e}")))?;
    }
    NiftiHeader::parse(&start, path)
}

macro_rules! convert_chunks {
    ($src:expr, $dst:expr, $t:ty, $le:expr, $f:expr) => {{
        const S: usize = std::mem::size_of::<$t>();
        let f = $f;
        $dst.par_chunks_mut(CHUNK)
            .zip($src.par_chunks(CHUNK * S))
            .for_each(|(d, s)| {
                if $le {
                    for (o, b) in d.iter_mut().zip(s.chunks_exact(S)) {
                        *o = f(<$t>::from_le_bytes(b.try_into().unwrap()));
                    }
                } else {
                    for (o, b) in d.iter_mut().zip(s.chunks_exact(S)) {
                        *o = f(<$t>::from_be_bytes(b.try_into().unwrap()));
                    }
                }
            });
    }};
}

/// Converts voxel bytes to `f32` with scaling applied (not for RGB24).
fn decode_f32(src: &[u8], dt: DataType, le: bool, scale: Option<(f64, f64)>, dst: &mut [f32]) {
    match scale {
        None => match dt {
            DataType::U8 => convert_chunks!(src, dst, u8, le, |v: u8| v as f32),
            DataType::I8 => convert_chunks!(src, dst, i8, le, |v: i8| v as f32),
            DataType::U16 => convert_chunks!(src, dst, u16, le, |v: u16| v as f32),
            DataType::I16 => convert_chunks!(src, dst, i16, le, |v: i16| v as f32),
            DataType::U32 => convert_chunks!(src, dst, u32, le, |v: u32| v as f32),
            DataType::I32 => convert_chunks!(src, dst, i32, le, |v: i32| v as f32),
            DataType::F32 => convert_chunks!(src, dst, f32, le, |v: f32| v),
            DataType::F64 => convert_chunks!(src, dst, f64, le, |v: f64| v as f32),
            DataType::Rgb24 => unreachable!("RGB24 is decoded separately"),
        },
        Some((s, i)) => match dt {
            DataType::U8 => convert_chunks!(src, dst, u8, le, |v: u8| (v as f64 * s + i) as f32),
            DataType::I8 => convert_chunks!(src, dst, i8, le, |v: i8| (v as f64 * s + i) as f32),
            DataType::U16 => convert_chunks!(src, dst, u16, le, |v: u16| (v as f64 * s + i) as f32),
            DataType::I16 => convert_chunks!(src, dst, i16, le, |v: i16| (v as f64 * s + i) as f32),
            DataType::U32 => convert_chunks!(src, dst, u32, le, |v: u32| (v as f64 * s + i) as f32),
            DataType::I32 => convert_chunks!(src, dst, i32, le, |v: i32| (v as f64 * s + i) as f32),
            DataType::F32 => convert_chunks!(src, dst, f32, le, |v: f32| (v as f64 * s + i) as f32),
            DataType::F64 => convert_chunks!(src, dst, f64, le, |v: f64| (v * s + i) as f32),
            DataType::Rgb24 => unreachable!("RGB24 is decoded separately"),
        },
    }
}

/// Decodes into an image from a stream of NIfTI bytes.
fn decode_stream(
    r: Box<dyn Read + '_>,
    path: &Path,
    file_len: Option<u64>,
    limits: &ReadLimits,
) -> Result<(Image, NiftiHeader)> {
    let mut out: Vec<f32> = Vec::new();
    let mut info: Option<(Decoding, usize)> = None;
    let h = stream_voxels(r, path, file_len, &mut |ev| {
        let (raw, first) = match ev {
            Voxels::Header(h, dt, n) => {
                let values = if dt == DataType::Rgb24 { 3 * n } else { n };
                limits.check(path, h, dt, values, 4)?;
                out = vec![0f32; values];
                info = Some(((dt, h.little_endian, h.scaling()), n));
                return Ok(());
            }
            Voxels::Data(raw, first) => (raw, first),
        };
        let ((dt, le, scale), n) = info.expect("set before the data");
        if dt == DataType::Rgb24 {
            for (k, px) in raw.chunks_exact(3).enumerate() {
                let v = first + k;
                out[v] = px[0] as f32;
                out[n + v] = px[1] as f32;
                out[2 * n + v] = px[2] as f32;
            }
        } else {
            let len = raw.len() / dt.size();
            decode_f32(raw, dt, le, scale, &mut out[first..first + len]);
        }
        Ok(())
    })?;
    let shape = h.array_shape();
    let arr = ArrayD::from_shape_vec(IxDyn(&shape), out)
        .map_err(|e| Error::format(path, e.to_string()))?;
    let image = Image::new(arr, h.geometry()).map_err(|e| Error::format(path, e.to_string()))?;
    Ok((image, h))
}

/// Decodes a NIfTI file's bytes (already decompressed) into an image, with
/// the default [`ReadLimits`].
///
/// `path` is only used in error messages.
pub fn decode_nifti(bytes: &[u8], path: &Path) -> Result<(Image, NiftiHeader)> {
    decode_stream(
        Box::new(bytes),
        path,
        Some(bytes.len() as u64),
        &ReadLimits::from_env(),
    )
}

/// Reads a `.nii` or `.nii.gz` file (NIfTI-1 or NIfTI-2, either byte order)
/// as an `f32` image with scaling applied, and returns its header too.
///
/// The voxel data are decoded once, straight from the file (or the gzip
/// decoder) into the image, chunk by chunk, under the default
/// [`ReadLimits`] ([`read_nifti_with`] takes others).
///
/// See the module docs for the shape and geometry conventions.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the
/// file for a truncated or corrupt file, a wrong magic, an unsupported data
/// type, dimensions that do not match the data size, or a declared volume
/// over the reading limit.
pub fn read_nifti(path: &Path) -> Result<(Image, NiftiHeader)> {
    read_nifti_with(path, &ReadLimits::from_env())
}

/// [`read_nifti`] under explicit limits.
///
/// # Errors
/// As [`read_nifti`].
pub fn read_nifti_with(path: &Path, limits: &ReadLimits) -> Result<(Image, NiftiHeader)> {
    let r = open_stream(path)?;
    let gz = is_gzip_file(path)?;
    let len = std::fs::metadata(path).map(|m| m.len()).ok();
    decode_stream(r, path, if gz { None } else { len }, limits)
}

/// Whether the file starts with the gzip magic.
fn is_gzip_file(path: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut m = [0u8; 2];
    let n = fill(&mut f, &mut m, path)?;
    Ok(n == 2 && m == [0x1f, 0x8b])
}

/// Reads a NIfTI file as a label map.
///
/// Values (scaled when the header says so) must be integers in `0..=65535`
/// and the file must hold one channel.
///
/// # Errors
/// As [`read_nifti`], plus [`Error::Format`] for a non-integer, negative or
/// too large value (naming the first one found and its voxel index) or more
/// than one channel.
pub fn read_nifti_label(path: &Path) -> Result<(LabelMap, NiftiHeader)> {
    read_nifti_label_with(path, &ReadLimits::from_env())
}

/// [`read_nifti_label`] under explicit limits.
///
/// # Errors
/// As [`read_nifti_label`].
pub fn read_nifti_label_with(path: &Path, limits: &ReadLimits) -> Result<(LabelMap, NiftiHeader)> {
    let mut out: Vec<u16> = Vec::new();
    let mut info: Option<(Decoding, Vec<usize>)> = None;
    let mut vals: Vec<f64> = Vec::new();
    let mut bad: Option<(usize, f64)> = None;
    let h = stream_file(path, &mut |ev| {
        let (raw, first) = match ev {
            Voxels::Header(h, dt, n) => {
                let shape = h.array_shape();
                if shape[0] != 1 {
                    return Err(Error::format(
                        path,
                        format!(
                        "a label map must have one channel, but the file has {} ({} of shape {:?})",
                        shape[0],
                        dt.name(),
                        h.file_shape()
                    ),
                    ));
                }
                limits.check(path, h, dt, n, 2)?;
                out = vec![0u16; n];
                info = Some(((dt, h.little_endian, h.scaling()), h.file_shape()));
                return Ok(());
            }
            Voxels::Data(raw, first) => (raw, first),
        };
        if bad.is_some() {
            return Ok(());
        }
        let ((dt, le, scale), _) = info.as_ref().expect("set before the data");
        let len = raw.len() / dt.size();
        let dst = &mut out[first..first + len];
        match (dt, scale) {
            (DataType::U8, None) => {
                for (o, &b) in dst.iter_mut().zip(raw) {
                    *o = b as u16;
                }
            }
            (DataType::U16, None) => {
                for (o, b) in dst.iter_mut().zip(raw.chunks_exact(2)) {
                    let a = [b[0], b[1]];
                    *o = if *le {
                        u16::from_le_bytes(a)
                    } else {
                        u16::from_be_bytes(a)
                    };
                }
            }
            _ => {
                vals.resize(len, 0.0);
                decode_f64(raw, *dt, *le, &mut vals);
                for (k, (o, &v)) in dst.iter_mut().zip(&vals).enumerate() {
                    let v = match scale {
                        Some((s, i)) => v * s + i,
                        None => v,
                    };
                    if v.fract() != 0.0 || !(0.0..=65535.0).contains(&v) {
                        bad = Some((first + k, v));
                        break;
                    }
                    *o = v as u16;
                }
            }
        }
        Ok(())
    })?;
    let ((dt, _, _), fs) = info.expect("set before the data");
    if let Some((idx, v)) = bad {
        let (nx, ny) = (fs[0], fs.get(1).copied().unwrap_or(1));
        let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
        return Err(Error::format(
            path,
            format!("label values must be integers in 0..=65535, found {v} at voxel (i, j, k) = ({i}, {j}, {k}) of a {} file", dt.name()),
        ));
    }
    let shape = h.array_shape();
    let arr = ArrayD::from_shape_vec(IxDyn(&shape), out)
        .map_err(|e| Error::format(path, e.to_string()))?;
    let label = LabelMap::new(arr, h.geometry()).map_err(|e| Error::format(path, e.to_string()))?;
    Ok((label, h))
}

/// Converts voxel bytes to unscaled `f64`.
fn decode_f64(src: &[u8], dt: DataType, le: bool, dst: &mut [f64]) {
    match dt {
        DataType::U8 | DataType::Rgb24 => convert_chunks!(src, dst, u8, le, |v: u8| v as f64),
        DataType::I8 => convert_chunks!(src, dst, i8, le, |v: i8| v as f64),
        DataType::U16 => convert_chunks!(src, dst, u16, le, |v: u16| v as f64),
        DataType::I16 => convert_chunks!(src, dst, i16, le, |v: i16| v as f64),
        DataType::U32 => convert_chunks!(src, dst, u32, le, |v: u32| v as f64),
        DataType::I32 => convert_chunks!(src, dst, i32, le, |v: i32| v as f64),
        DataType::F32 => convert_chunks!(src, dst, f32, le, |v: f32| v as f64),
        DataType::F64 => convert_chunks!(src, dst, f64, le, |v: f64| v),
    }
}

/// True when two affines agree to within a small tolerance (relative to the
/// entries' size), i.e. describe the same grid up to float storage rounding.
fn affines_close(a: &Affine, b: &Affine) -> bool {
    (0..3).all(|r| {
        (0..4).all(|c| (a[r][c] - b[r][c]).abs() <= 1e-4 * (1.0 + a[r][c].abs().max(b[r][c].abs())))
    })
}

/// Builds the header medseg writes for an array of channel-first `shape`
/// with `geometry`, stored as `dtype`.
///
/// With a `reference` header (usually the one the input image was read
/// with) whose affine matches `geometry`, its qform and sform (codes,
/// quaternion, offsets, rows, pixdim) are kept verbatim so that the output
/// overlays exactly on the reference in nibabel, ITK-SNAP or 3D Slicer; its
/// units, description and NIfTI version are kept as well. When the geometry
/// differs (the image was resampled), both forms are recomputed from the
/// geometry with the reference's codes. Without a reference both codes are 1
/// (scanner).
pub fn header_for(
    shape: &[usize],
    geometry: &Geometry,
    dtype: DataType,
    reference: Option<&NiftiHeader>,
) -> Result<NiftiHeader> {
    if shape.len() != 3 && shape.len() != 4 {
        return Err(Error::Shape(format!(
            "NIfTI write needs [C, H, W] or [C, D, H, W], got {shape:?}"
        )));
    }
    if dtype == DataType::Rgb24 {
        return Err(Error::invalid(
            "dtype",
            "rgb24 is read-only; write 3 channels as uint8 instead",
        ));
    }
    let c = shape[0];
    let (nz, ny, nx) = if shape.len() == 4 {
        (shape[1], shape[2], shape[3])
    } else {
        (1, shape[1], shape[2])
    };
    let mut h = NiftiHeader::default();
    let affine = geometry.to_affine();
    match reference {
        Some(r) => {
            h.version = r.version;
            h.xyzt_units = r.xyzt_units;
            h.descrip = r.descrip.clone();
            h.aux_file = r.aux_file.clone();
            h.dim_info = r.dim_info;
            h.toffset = r.toffset;
            h.pixdim[4..].copy_from_slice(&r.pixdim[4..]);
            if affines_close(&affine, &r.affine()) {
                h.qform_code = r.qform_code;
                h.sform_code = r.sform_code;
                h.quatern = r.quatern;
                h.qoffset = r.qoffset;
                h.srow = r.srow;
                h.pixdim[..4].copy_from_slice(&r.pixdim[..4]);
            } else {
                let (q, s) = if r.qform_code > 0 || r.sform_code > 0 {
                    (r.qform_code, r.sform_code)
                } else {
                    (1, 1)
                };
                h.set_affine(&affine, q, s);
            }
        }
        None => {
            h.descrip = "medseg".into();
            h.set_affine(&affine, 1, 1);
        }
    }
    let big = [nx, ny, nz, c].iter().any(|&d| d > i16::MAX as usize);
    if big {
        h.version = 2;
    }
    h.dim = [0, nx as i64, ny as i64, nz as i64, c as i64, 1, 1, 1];
    h.dim[0] = if c > 1 {
        4
    } else if nz > 1 {
        3
    } else {
        2
    };
    if c == 1 && reference.is_none() {
        h.pixdim[4] = 1.0;
    }
    h.datatype = dtype.nifti_code();
    h.bitpix = (dtype.size() * 8) as i16;
    h.scl_slope = 1.0;
    h.scl_inter = 0.0;
    h.cal_min = 0.0;
    h.cal_max = 0.0;
    h.intent_code = 0;
    h.intent_p = [0.0; 3];
    h.intent_name.clear();
    h.little_endian = true;
    h.vox_offset = if h.version == 2 {
        (V2_SIZE + 4) as f64
    } else {
        (V1_SIZE + 4) as f64
    };
    Ok(h)
}

macro_rules! encode_chunks {
    ($src:expr, $dst:expr, $t:ty, $f:expr) => {{
        const S: usize = std::mem::size_of::<$t>();
        let f = $f;
        $dst.par_chunks_mut(CHUNK * S)
            .zip($src.par_chunks(CHUNK))
            .for_each(|(d, s)| {
                for (o, &v) in d.chunks_exact_mut(S).zip(s) {
                    let x: $t = f(v);
                    o.copy_from_slice(&x.to_le_bytes());
                }
            });
    }};
}

fn encode_f32(src: &[f32], dt: DataType, dst: &mut [u8]) {
    macro_rules! int {
        ($t:ty) => {
            |v: f32| -> $t {
                if v.is_nan() {
                    0
                } else {
                    // `as` saturates at the type's range
                    v.round() as $t
                }
            }
        };
    }
    match dt {
        DataType::U8 | DataType::Rgb24 => encode_chunks!(src, dst, u8, int!(u8)),
        DataType::I8 => encode_chunks!(src, dst, i8, int!(i8)),
        DataType::U16 => encode_chunks!(src, dst, u16, int!(u16)),
        DataType::I16 => encode_chunks!(src, dst, i16, int!(i16)),
        DataType::U32 => encode_chunks!(src, dst, u32, int!(u32)),
        DataType::I32 => encode_chunks!(src, dst, i32, int!(i32)),
        DataType::F32 => encode_chunks!(src, dst, f32, |v: f32| v),
        DataType::F64 => encode_chunks!(src, dst, f64, |v: f32| v as f64),
    }
}

/// Writes header + voxel bytes to `path` (gzip when it ends in `.gz`) via a
/// temporary file in the same folder that is then renamed.
fn write_file(path: &Path, header: &NiftiHeader, data: &[u8]) -> Result<()> {
    let head = header.to_bytes();
    write_atomic_with(path, |w| {
        if is_gz(path) {
            let mut enc = GzEncoder::new(w, Compression::new(1));
            enc.write_all(&head)?;
            enc.write_all(data)?;
            enc.finish()?;
        } else {
            w.write_all(&head)?;
            w.write_all(data)?;
        }
        Ok(())
    })
}

/// Writes an image as `.nii` or `.nii.gz` (by the name) with the chosen
/// on-disk data type. Integer types round to nearest and saturate; NaN
/// becomes 0. Channels become the 4th dimension.
///
/// See [`header_for`] for how `reference` keeps the input's qform and sform.
///
/// # Errors
/// [`Error::InvalidValue`] for `DataType::Rgb24`; [`Error::Io`] when the file
/// cannot be written.
pub fn write_nifti(
    path: &Path,
    image: &Image,
    dtype: DataType,
    reference: Option<&NiftiHeader>,
) -> Result<()> {
    let h = header_for(image.data.shape(), &image.geometry, dtype, reference)?;
    let std_layout = image.data.as_standard_layout();
    let src = std_layout
        .as_slice()
        .expect("standard layout is contiguous");
    let mut data = vec![0u8; src.len() * dtype.size()];
    encode_f32(src, dtype, &mut data);
    write_file(path, &h, &data)
}

/// The smallest label data type holding `max`: `uint8` below 256, else `uint16`.
pub fn label_dtype(label: &LabelMap) -> DataType {
    if label.data.iter().any(|&v| v > 255) {
        DataType::U16
    } else {
        DataType::U8
    }
}

/// Writes a label map as `.nii`/`.nii.gz`, as `uint8` when every value is
/// below 256 and `uint16` otherwise, keeping the reference's qform and sform
/// as [`write_nifti`] does.
pub fn write_nifti_label(
    path: &Path,
    label: &LabelMap,
    reference: Option<&NiftiHeader>,
) -> Result<()> {
    let dtype = label_dtype(label);
    let h = header_for(label.data.shape(), &label.geometry, dtype, reference)?;
    let data: Vec<u8> = if dtype == DataType::U8 {
        label.data.iter().map(|&v| v as u8).collect()
    } else {
        label.data.iter().flat_map(|&v| v.to_le_bytes()).collect()
    };
    write_file(path, &h, &data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn quaternion_round_trip_of_rotations() {
        // rotations about several axes, including angles near pi (trace <= 0.5)
        for &(t, axis) in &[(0.3f64, 0usize), (2.9, 1), (3.1, 2), (1.0, 0), (0.0, 1)] {
            let (s, c) = t.sin_cos();
            let mut r = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
            let (a, b) = match axis {
                0 => (1, 2),
                1 => (2, 0),
                _ => (0, 1),
            };
            r[a][a] = c;
            r[a][b] = -s;
            r[b][a] = s;
            r[b][b] = c;
            let mut h = NiftiHeader::default();
            let mut aff = [[0.0; 4]; 4];
            for i in 0..3 {
                for j in 0..3 {
                    aff[i][j] = r[i][j] * [0.5, 2.0, 3.0][j];
                }
            }
            aff[0][3] = 7.0;
            aff[3][3] = 1.0;
            h.set_affine(&aff, 1, 0);
            let q = h.qform_affine();
            for i in 0..3 {
                for j in 0..4 {
                    assert_abs_diff_eq!(q[i][j], aff[i][j], epsilon = 1e-9);
                }
            }
        }
    }

    #[test]
    fn left_handed_affine_uses_qfac() {
        let aff = [
            [-1.0, 0.0, 0.0, 3.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 3.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mut h = NiftiHeader::default();
        h.set_affine(&aff, 1, 0);
        let q = h.qform_affine();
        for i in 0..3 {
            for j in 0..4 {
                assert_abs_diff_eq!(q[i][j], aff[i][j], epsilon = 1e-9);
            }
        }
    }

    #[test]
    fn header_bytes_round_trip_both_versions() {
        for version in [1u8, 2] {
            let mut h = NiftiHeader {
                version,
                datatype: DataType::I16.nifti_code(),
                bitpix: 16,
                dim: [4, 5, 6, 7, 2, 1, 1, 1],
                descrip: "hello".into(),
                scl_slope: 2.0,
                scl_inter: -1.0,
                ..NiftiHeader::default()
            };
            h.set_affine(
                &[
                    [0.0, 0.0, 2.0, 1.0],
                    [1.5, 0.0, 0.0, 2.0],
                    [0.0, 1.0, 0.0, 3.0],
                    [0.0, 0.0, 0.0, 1.0],
                ],
                1,
                2,
            );
            let b = h.to_bytes();
            let mut back = NiftiHeader::parse(&b, Path::new("x.nii")).unwrap();
            assert_eq!(back.vox_offset as usize, b.len());
            back.vox_offset = h.vox_offset;
            if version == 1 {
                // f32 storage
                for r in 0..3 {
                    for c in 0..4 {
                        assert_abs_diff_eq!(back.srow[r][c], h.srow[r][c], epsilon = 1e-6);
                    }
                }
                back.srow = h.srow;
                back.quatern = h.quatern.map(|v| v as f32 as f64);
                h.quatern = back.quatern;
            }
            assert_eq!(back, h);
        }
    }
}
