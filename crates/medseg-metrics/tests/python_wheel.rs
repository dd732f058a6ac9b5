//! The Python wheel's test suite (`bindings/python/tests`): builds the wheel
//! with the pinned maturin into `target/wheel-venv` (`tools/wheel/test.sh`,
//! which installs its pinned packages once and reuses them) and runs pytest.
//! The suite checks the wheel against MedPy live on seeded random masks with
//! anisotropic spacing, against MedPy and MONAI through the committed
//! fixtures, its errors on bad input, every dtype and memory layout, and the
//! release of the GIL. Needs `python3` with `venv`; the first run downloads
//! the pinned packages.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn python_wheel_suite_passes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let out = Command::new("bash")
        .arg(root.join("tools/wheel/test.sh"))
        .current_dir(&root)
        .output()
        .expect("running tools/wheel/test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the wheel's Python tests failed:\n{stdout}\n{stderr}"
    );
    // pytest's summary, e.g. "53 passed in 1.40s"
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or_else(|| panic!("no pytest summary:\n{stdout}\n{stderr}"));
    let passed: usize = summary
        .split_whitespace()
        .zip(summary.split_whitespace().skip(1))
        .find(|(_, w)| w.starts_with("passed"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 50 && !summary.contains("failed") && !summary.contains("error"),
        "{summary}"
    );
}
