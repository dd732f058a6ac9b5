//! The one atomic file writer of medseg.
//!
//! Every crate and app that writes a file people or later runs read
//! (images, manifests, checkpoints, CSV, JSON, pictures) goes through
//! [`write_atomic`] or [`write_atomic_with`]: the bytes go to a temporary
//! file in the destination's folder, which is then renamed over the target.
//! Readers therefore never see a half-written file, and a failed write
//! leaves the previous file (if any) in place and no temporary file behind.

use crate::error::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writes from one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: into a temporary file in the same
/// folder, then renamed over `path`.
///
/// # Errors
/// [`Error::Io`] naming `path` when the folder does not exist or the file
/// cannot be written or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes `path` atomically through `write`, which streams the content into
/// a buffered writer on a temporary file in the same folder; the file is
/// renamed over `path` once `write` returns `Ok` and the buffer is flushed.
/// When anything fails the temporary file is removed and `path` is left
/// as it was.
///
/// The file gets ordinary permissions (`0o666` less the umask on Unix).
///
/// # Errors
/// [`Error::Io`] naming `path` when the folder does not exist, `write`
/// fails, or the file cannot be flushed or renamed.
pub fn write_atomic_with<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// A temporary file name beside `path`: `.<name>.tmp-<pid>-<n>`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(".{name}.tmp-{}-{n}", std::process::id());
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(tmp_name),
        _ => PathBuf::from(tmp_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medseg_core_fs_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_target_and_leaves_no_temporary_file() {
        let d = temp_dir("replace");
        let p = d.join("a.txt");
        write_atomic(&p, b"first").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        write_atomic_with(&d.join("b.txt"), |w| {
            w.write_all(b"x")?;
            w.write_all(b"y")
        })
        .unwrap();
        assert_eq!(std::fs::read(d.join("b.txt")).unwrap(), b"xy");
        assert_eq!(entries(&d), ["a.txt", "b.txt"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary_one() {
        let d = temp_dir("fail");
        let p = d.join("a.txt");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a.txt"), "{err}");
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(&d), ["a.txt"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_path() {
        let d = temp_dir("missing");
        let p = d.join("no_such_folder").join("x.csv");
        let err = write_atomic(&p, b"1").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        assert!(entries(&d).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
