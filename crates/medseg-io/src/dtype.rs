//! On-disk voxel data types.

use medseg_core::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A voxel data type as stored in a file.
///
/// Images are always held in memory as `f32`; the data type only says how
/// values are stored on disk. Writing an integer type rounds to the nearest
/// integer and saturates at the type's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Unsigned 8-bit integer (NIfTI code 2).
    U8,
    /// Signed 8-bit integer (NIfTI code 256).
    I8,
    /// Unsigned 16-bit integer (NIfTI code 512).
    U16,
    /// Signed 16-bit integer (NIfTI code 4).
    I16,
    /// Unsigned 32-bit integer (NIfTI code 768).
    U32,
    /// Signed 32-bit integer (NIfTI code 8).
    I32,
    /// 32-bit float (NIfTI code 16).
    F32,
    /// 64-bit float (NIfTI code 64).
    F64,
    /// Three `u8` per voxel (NIfTI code 128), read as 3 channels; read-only.
    Rgb24,
}

impl DataType {
    /// All data types, in NIfTI code order of appearance in this enum.
    pub const ALL: [DataType; 9] = [
        DataType::U8,
        DataType::I8,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::F64,
        DataType::Rgb24,
    ];

    /// The NIfTI `datatype` code.
    pub fn nifti_code(self) -> i16 {
        match self {
            DataType::U8 => 2,
            DataType::I8 => 256,
            DataType::U16 => 512,
            DataType::I16 => 4,
            DataType::U32 => 768,
            DataType::I32 => 8,
            DataType::F32 => 16,
            DataType::F64 => 64,
            DataType::Rgb24 => 128,
        }
    }

    /// The data type of a NIfTI `datatype` code, `None` when unsupported.
    pub fn from_nifti_code(code: i16) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.nifti_code() == code)
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::F64 => 8,
            DataType::Rgb24 => 3,
        }
    }

    /// The numpy-style name (`"uint8"`, `"int16"`, `"float32"`, `"rgb24"`...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::U16 => "uint16",
            DataType::I16 => "int16",
            DataType::U32 => "uint32",
            DataType::I32 => "int32",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
            DataType::Rgb24 => "rgb24",
        }
    }

    /// True for the integer types.
    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::F32 | DataType::F64 | DataType::Rgb24)
    }

    /// Range of values the type holds, as `f64`.
    pub fn range(self) -> (f64, f64) {
        match self {
            DataType::U8 | DataType::Rgb24 => (0.0, u8::MAX as f64),
            DataType::I8 => (i8::MIN as f64, i8::MAX as f64),
            DataType::U16 => (0.0, u16::MAX as f64),
            DataType::I16 => (i16::MIN as f64, i16::MAX as f64),
            DataType::U32 => (0.0, u32::MAX as f64),
            DataType::I32 => (i32::MIN as f64, i32::MAX as f64),
            DataType::F32 => (f32::MIN as f64, f32::MAX as f64),
            DataType::F64 => (f64::MIN, f64::MAX),
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = Error;

    /// Parses numpy-style names (`uint8`, `int16`, `float32`...) and the short
    /// forms `u8`, `i16`, `f32`...
    fn from_str(s: &str) -> Result<Self> {
        let t = match s.to_ascii_lowercase().as_str() {
            "uint8" | "u8" => DataType::U8,
            "int8" | "i8" => DataType::I8,
            "uint16" | "u16" => DataType::U16,
            "int16" | "i16" => DataType::I16,
            "uint32" | "u32" => DataType::U32,
            "int32" | "i32" => DataType::I32,
            "float32" | "f32" | "float" => DataType::F32,
            "float64" | "f64" | "double" => DataType::F64,
            "rgb24" => DataType::Rgb24,
            _ => {
                return Err(Error::invalid(
                    "dtype",
                    format!("unknown data type {s:?}; expected one of uint8, int8, uint16, int16, uint32, int32, float32, float64"),
                ))
            }
        };
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_names_parse() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_nifti_code(d.nifti_code()), Some(d));
            assert_eq!(d.name().parse::<DataType>().unwrap(), d);
        }
        assert_eq!(DataType::from_nifti_code(1024), None);
        assert!("complex64".parse::<DataType>().is_err());
    }
}
