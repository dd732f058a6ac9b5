//! The NumPy `.npy` format, in which Flower's arrays travel
//! (`stype = "numpy.ndarray"`: `numpy.save` of the array, without
//! pickles). Writing follows NumPy's own layout byte for byte (header
//! dictionary in sorted keys, room for the first axis to grow, padding to
//! 64 bytes), so an array written here has the object ID NumPy's would.

use ndarray::{ArrayD, IxDyn};

use super::FlowerError;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Space NumPy leaves after the header for the first axis to grow.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
const ALIGN: usize = 64;
/// Largest header accepted when reading (NumPy's own limit is 10 000).
const MAX_HEADER: usize = 10_000;

fn python_tuple(shape: &[usize]) -> String {
    match shape.len() {
        0 => "()".into(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `array` as the bytes `numpy.save` writes for a little-endian `float32`
/// array of the same shape (C order).
pub fn write_f32(array: &ArrayD<f32>) -> Vec<u8> {
    let shape = array.shape();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
        python_tuple(shape)
    );
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        header.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    let hlen = header.len() + 1;
    let padlen = ALIGN - ((MAGIC.len() + 2 + 2 + hlen) % ALIGN);
    let total_header = hlen + padlen;
    let mut out = Vec::with_capacity(10 + total_header + array.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    if total_header <= u16::MAX as usize {
        out.extend_from_slice(&(total_header as u16).to_le_bytes());
    } else {
        // never for medseg's arrays: the header only grows with the rank
        unreachable!("npy header of {total_header} bytes");
    }
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padlen));
    out.push(b'\n');
    for v in array.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The element types read (every one is converted to `f32`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Descr {
    F4,
    F8,
    F2,
    I4,
    I8,
    U1,
    B1,
}

impl Descr {
    fn parse(s: &str) -> Option<(Descr, bool)> {
        // (type, big endian)
        let (order, t) = s.split_at(1.min(s.len()));
        let big = match order {
            "<" | "|" | "=" => false,
            ">" => true,
            _ => return None,
        };
        let d = match t {
            "f4" => Descr::F4,
            "f8" => Descr::F8,
            "f2" => Descr::F2,
            "i4" => Descr::I4,
            "i8" => Descr::I8,
            "u1" => Descr::U1,
            "b1" => Descr::B1,
            _ => return None,
        };
        Some((d, big))
    }
    fn size(self) -> usize {
        match self {
            Descr::F4 | Descr::I4 => 4,
            Descr::F8 | Descr::I8 => 8,
            Descr::F2 => 2,
            Descr::U1 | Descr::B1 => 1,
        }
    }
}

fn bad(what: &str, msg: impl std::fmt::Display) -> FlowerError {
    FlowerError::Content(format!("{what}: not a readable .npy array: {msg}"))
}

/// Value of `'key': value` in NumPy's header dictionary.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.find('\'')? + 2
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Reads an `.npy` array of floats, integers or booleans (any byte order,
/// C order) as `f32`. `what` names the array in errors (e.g. its key).
///
/// # Errors
/// A missing magic string, a header that is not NumPy's dictionary, an
/// element type other than float16/32/64, int32/64, uint8 or bool,
/// Fortran order, or data shorter or longer than the shape says.
pub fn read_f32(bytes: &[u8], what: &str) -> Result<ArrayD<f32>, FlowerError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(what, "no NUMPY magic string"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad(what, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(what, format!("format version {v}"))),
    };
    if hlen > MAX_HEADER || start + hlen > bytes.len() {
        return Err(bad(what, format!("header of {hlen} bytes")));
    }
    let header = std::str::from_utf8(&bytes[start..start + hlen])
        .map_err(|_| bad(what, "header is not text"))?;
    let descr = header_value(header, "descr").ok_or_else(|| bad(what, "no 'descr'"))?;
    let descr = descr.trim_matches('\'');
    let (ty, big) =
        Descr::parse(descr).ok_or_else(|| bad(what, format!("element type '{descr}'")))?;
    let fortran = header_value(header, "fortran_order").ok_or_else(|| bad(what, "no order"))?;
    if fortran != "False" {
        return Err(bad(what, "Fortran order"));
    }
    let shape_s = header_value(header, "shape").ok_or_else(|| bad(what, "no 'shape'"))?;
    let inner = shape_s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(what, format!("shape {shape_s}")))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(what, format!("shape {shape_s}")))?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(what, format!("shape {shape_s} overflows")))?;
    let data = &bytes[start + hlen..];
    let expected = n
        .checked_mul(ty.size())
        .ok_or_else(|| bad(what, "size overflows"))?;
    if data.len() != expected {
        return Err(bad(
            what,
            format!(
                "shape {shape_s} of '{descr}' needs {expected} data bytes, found {}",
                data.len()
            ),
        ));
    }
    let word = |c: &[u8]| -> [u8; 8] {
        let mut w = [0u8; 8];
        if big {
            for (i, b) in c.iter().rev().enumerate() {
                w[i] = *b;
            }
        } else {
            w[..c.len()].copy_from_slice(c);
        }
        w
    };
    let values: Vec<f32> = data
        .chunks_exact(ty.size())
        .map(|c| {
            let w = word(c);
            match ty {
                Descr::F4 => f32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                Descr::F8 => f64::from_le_bytes(w) as f32,
                Descr::F2 => half::f16::from_le_bytes([w[0], w[1]]).to_f32(),
                Descr::I4 => i32::from_le_bytes([w[0], w[1], w[2], w[3]]) as f32,
                Descr::I8 => i64::from_le_bytes(w) as f32,
                Descr::U1 | Descr::B1 => w[0] as f32,
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| bad(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_and_shape() {
        let a =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.5, 3.0, 0.0, 1e-7, 7.0]).unwrap();
        let b = write_f32(&a);
        assert_eq!((b.len() - 24) % 64, 0, "header padded to 64 bytes");
        assert_eq!(read_f32(&b, "a").unwrap(), a);
        let s = ArrayD::from_shape_vec(IxDyn(&[]), vec![4.0]).unwrap();
        assert_eq!(read_f32(&write_f32(&s), "s").unwrap(), s);
    }

    #[test]
    fn short_data_and_fortran_order_are_errors() {
        let a = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0; 4]).unwrap();
        let mut b = write_f32(&a);
        b.pop();
        let e = read_f32(&b, "enc.w").unwrap_err().to_string();
        assert!(
            e.contains("enc.w") && e.contains("needs 16 data bytes"),
            "{e}"
        );
        let mut f = write_f32(&a);
        let at = f.windows(5).position(|w| w == b"False").unwrap();
        f[at..at + 5].copy_from_slice(b"True ");
        let e = read_f32(&f, "x").unwrap_err().to_string();
        assert!(e.contains("Fortran"), "{e}");
    }
}
