//! PyMIC paths are relative to the folder PyMIC ran from; medseg reads
//! manifests relative to the data root. Lexical path arithmetic (no file
//! system access, no symlink resolution).

use std::path::{Component, Path, PathBuf};

/// `base/p` with `.` and `..` folded (lexically); `p` as it is when absolute.
pub(crate) fn normalise(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The path of `to` seen from the folder `from` (both absolute and
/// normalised): `../../b/c` style; `to` itself when they share no prefix.
pub(crate) fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return to.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_relative_to_the_data_root() {
        let cwd = Path::new("/x/PyMIC_examples/seg_full_sup/2d_JSRT");
        let root = normalise(cwd, Path::new("../../PyMIC_data/JSRT"));
        assert_eq!(root, Path::new("/x/PyMIC_examples/PyMIC_data/JSRT"));
        let csv = normalise(cwd, Path::new("./config/jsrt_train.csv"));
        assert_eq!(
            relative(&root, &csv),
            Path::new("../../seg_full_sup/2d_JSRT/config/jsrt_train.csv")
        );
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/b/c.csv")),
            Path::new("c.csv")
        );
        assert_eq!(normalise(cwd, Path::new("/abs/p")), Path::new("/abs/p"));
    }
}
