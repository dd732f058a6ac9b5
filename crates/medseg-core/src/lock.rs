//! One writer per output folder: a lock file that a second process finds
//! and refuses to start beside, so that two runs never mix their files in
//! one folder.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name inside the locked folder.
pub const LOCK_FILE: &str = ".medseg.lock";

/// An exclusive claim on a folder by this process, released when dropped.
///
/// The claim is the file `<dir>/.medseg.lock`, created with `O_EXCL`, that
/// records the holder's pid, what it does and when it started. A second
/// [`DirLock::acquire`] on the folder fails naming the holder while that
/// process lives; a lock left by a process that no longer exists (killed)
/// is taken over with a notice on standard error.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
}

impl DirLock {
    /// Claims `dir` (created if absent) for `what` (e.g. "training").
    ///
    /// # Errors
    /// [`Error::Format`] naming the folder and the holder's pid when
    /// another live process holds it; [`Error::Io`] when the folder or the
    /// lock file cannot be created.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let started = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    writeln!(f, "{} {what} {started}", std::process::id())
                        .map_err(|e| Error::io(&path, e))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut fields = text.split_whitespace();
                    let pid: Option<u32> = fields.next().and_then(|p| p.parse().ok());
                    let holder = fields.next().unwrap_or("a medseg run");
                    match pid {
                        Some(pid) if process_alive(pid) => {
                            return Err(Error::format(
                                dir,
                                format!(
                                    "another process (pid {pid}, {holder}) is writing into this \
                                     folder; wait for it to finish or choose another output \
                                     folder (if no such process runs, remove {})",
                                    path.display()
                                ),
                            ))
                        }
                        _ => {
                            eprintln!(
                                "note: taking over {}, left by a process that no longer runs",
                                path.display()
                            );
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::format(
            dir,
            "could not claim the folder: its lock file keeps reappearing",
        ))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether process `pid` exists (Linux: `/proc/<pid>`; elsewhere a lock
/// is assumed held).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    if proc_root.join("self").exists() {
        return proc_root.join(pid.to_string()).exists();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_fails_until_the_first_is_released() {
        let dir = tempfile_dir("lock1");
        let a = DirLock::acquire(&dir, "training").unwrap();
        let e = DirLock::acquire(&dir, "inference").unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("training"), "{e}");
        assert!(e.contains(&dir.display().to_string()), "{e}");
        drop(a);
        assert!(!dir.join(LOCK_FILE).exists());
        let _b = DirLock::acquire(&dir, "inference").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile_dir("lock2");
        // pid 0x7fff_fff0 does not exist on Linux (pids stay below 2^22)
        std::fs::write(dir.join(LOCK_FILE), "2147483632 training 0\n").unwrap();
        let l = DirLock::acquire(&dir, "training").unwrap();
        let text = std::fs::read_to_string(l.path()).unwrap();
        assert!(text.starts_with(&std::process::id().to_string()), "{text}");
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medseg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
