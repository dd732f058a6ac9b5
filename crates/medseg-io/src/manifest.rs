//! CSV manifests compatible with PyMIC's.
//!
//! A manifest is a CSV file with a header row. Columns:
//! - image columns, one per modality: every column named `image` or starting
//!   with `image` (`image_t1`, `image2`...; but not `image_weight`). When no
//!   column is named so, the columns before the first reserved column below
//!   are image columns (PyMIC's positional layout), or just the first column
//!   when there is no reserved column;
//! - `label` (optional): the label map;
//! - `pixel_weight` (optional): a per-voxel weight map;
//! - `noisy_mask` (optional): a per-voxel map of suspected label errors
//!   (nonzero = suspect), as confident learning writes it;
//! - `image_weight` (optional): a number per image;
//! - `annotated_classes` (optional, for partial labels): `;`-separated class
//!   ids, e.g. `0;1;3`; an empty cell means all classes are annotated;
//! - any other column (subject, site...) is kept in [`ManifestRow::extra`].
//!
//! Paths are relative to the manifest's root folder, which defaults to the
//! folder holding the CSV file (absolute paths are used as they are).

use medseg_core::write_atomic;
use medseg_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const RESERVED: [&str; 5] = [
    "label",
    "pixel_weight",
    "noisy_mask",
    "image_weight",
    "annotated_classes",
];

/// One row of a manifest: one case. Paths are as written in the CSV
/// (relative to [`Manifest::root`]); use [`Manifest::resolve`] to open them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestRow {
    /// Image files, one per modality, in column order.
    pub images: Vec<PathBuf>,
    /// The label map file.
    pub label: Option<PathBuf>,
    /// The pixel-weight map file.
    pub pixel_weight: Option<PathBuf>,
    /// The map of suspected label errors.
    pub noisy_mask: Option<PathBuf>,
    /// The image weight (e.g. label quality).
    pub image_weight: Option<f32>,
    /// For partial labels: the classes annotated in this case (`None`: all).
    pub annotated_classes: Option<Vec<u16>>,
    /// Other columns by name (subject, site...).
    pub extra: BTreeMap<String, String>,
}

impl ManifestRow {
    /// A row with one image and nothing else.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        ManifestRow {
            images: vec![image.into()],
            ..ManifestRow::default()
        }
    }

    /// This row with a label file.
    pub fn with_label(mut self, label: impl Into<PathBuf>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// A list of cases read from (or to be written to) a CSV file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// The folder that relative paths are relative to.
    pub root: PathBuf,
    /// The cases, in file order.
    pub rows: Vec<ManifestRow>,
    /// Names of the image columns (one per modality); `["image"]` by default.
    pub image_columns: Vec<String>,
    /// The CSV file this manifest was read from, used in error messages.
    pub source: Option<PathBuf>,
}

fn parse_classes(cell: &str) -> std::result::Result<Option<Vec<u16>>, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for part in cell.split(';') {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        out.push(p.parse::<u16>().map_err(|_| {
            format!(
                "annotated_classes: {p:?} is not a class id (0..=65535); expected e.g. \"0;1;3\""
            )
        })?);
    }
    out.sort_unstable();
    if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "annotated_classes: class {} is named twice in {cell:?}; name each class once",
            w[0]
        ));
    }
    Ok(Some(out))
}

impl Manifest {
    /// An empty manifest rooted at `root`, with one `image` column.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Manifest {
            root: root.into(),
            rows: Vec::new(),
            image_columns: vec!["image".into()],
            source: None,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The full path of a path named in the manifest (`root.join(path)`).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// An [`Error::Manifest`] for data row `row` (0-based index into `rows`;
    /// reported 1-based, as the header is row 0).
    pub fn row_error(&self, row: usize, message: impl Into<String>) -> Error {
        Error::Manifest {
            path: self
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from("<manifest>")),
            row: row + 1,
            message: message.into(),
        }
    }

    /// Reads a manifest and checks that every file it names exists.
    ///
    /// `root` defaults to the folder holding the CSV file.
    ///
    /// # Errors
    /// [`Error::Io`] when the CSV cannot be read; [`Error::Manifest`] naming
    /// the CSV (and row) for an empty file, a file without rows, a bad cell
    /// or a missing file.
    pub fn read(path: &Path, root: Option<&Path>) -> Result<Manifest> {
        let m = Manifest::read_unchecked(path, root)?;
        m.check_files()?;
        Ok(m)
    }

    /// Reads a manifest without checking that the files exist.
    pub fn read_unchecked(path: &Path, root: Option<&Path>) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let err = |row: usize, message: String| Error::Manifest {
            path: path.to_path_buf(),
            row,
            message,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| err(0, format!("cannot parse the header: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        if headers.iter().all(|h| h.is_empty()) {
            return Err(err(
                0,
                "empty manifest: no header row (expected e.g. \"image,label\")".into(),
            ));
        }
        for (i, h) in headers.iter().enumerate() {
            if headers[..i].contains(h) {
                return Err(err(0, format!("column {h:?} appears twice")));
            }
        }
        let is_image = |h: &str| h.starts_with("image") && h != "image_weight";
        let mut image_idx: Vec<usize> = (0..headers.len())
            .filter(|&i| is_image(&headers[i]))
            .collect();
        if image_idx.is_empty() {
            let first_reserved = headers
                .iter()
                .position(|h| RESERVED.contains(&h.as_str()))
                .unwrap_or(1);
            image_idx = (0..first_reserved.max(1)).collect();
        }
        if image_idx
            .iter()
            .any(|&i| RESERVED.contains(&headers[i].as_str()))
            || image_idx.is_empty()
        {
            return Err(err(0, format!("no image column in header {headers:?}")));
        }
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (label_i, pw_i, nm_i, iw_i, ac_i) = (
            col("label"),
            col("pixel_weight"),
            col("noisy_mask"),
            col("image_weight"),
            col("annotated_classes"),
        );
        let mut rows = Vec::new();
        for (r, rec) in rdr.records().enumerate() {
            let row = r + 1;
            let rec = rec.map_err(|e| err(row, format!("cannot parse row: {e}")))?;
            if rec.iter().all(|c| c.is_empty()) {
                continue;
            }
            let cell = |i: usize| rec.get(i).unwrap_or("");
            let mut mrow = ManifestRow::default();
            for &i in &image_idx {
                let c = cell(i);
                if c.is_empty() {
                    return Err(err(
                        row,
                        format!("empty image cell in column {:?}", headers[i]),
                    ));
                }
                mrow.images.push(PathBuf::from(c));
            }
            let opt_path =
                |i: Option<usize>| i.map(cell).filter(|c| !c.is_empty()).map(PathBuf::from);
            mrow.label = opt_path(label_i);
            mrow.pixel_weight = opt_path(pw_i);
            mrow.noisy_mask = opt_path(nm_i);
            if let Some(i) = iw_i {
                let c = cell(i);
                if !c.is_empty() {
                    let w: f32 = c
                        .parse()
                        .map_err(|_| err(row, format!("image_weight {c:?} is not a number")))?;
                    if !w.is_finite() {
                        return Err(err(row, format!("image_weight {c:?} is not finite")));
                    }
                    mrow.image_weight = Some(w);
                }
            }
            if let Some(i) = ac_i {
                mrow.annotated_classes = parse_classes(cell(i)).map_err(|m| err(row, m))?;
            }
            for (i, h) in headers.iter().enumerate() {
                if image_idx.contains(&i) || [label_i, pw_i, nm_i, iw_i, ac_i].contains(&Some(i)) {
                    continue;
                }
                mrow.extra.insert(h.clone(), cell(i).to_string());
            }
            rows.push(mrow);
        }
        if rows.is_empty() {
            return Err(err(0, "the manifest has a header but no rows".into()));
        }
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        Ok(Manifest {
            root,
            rows,
            image_columns: image_idx.iter().map(|&i| headers[i].clone()).collect(),
            source: Some(path.to_path_buf()),
        })
    }

    /// Checks that every file named in the manifest exists.
    ///
    /// # Errors
    /// [`Error::Manifest`] naming the row and the missing file.
    pub fn check_files(&self) -> Result<()> {
        for (r, row) in self.rows.iter().enumerate() {
            let named = row
                .images
                .iter()
                .map(|p| ("image", p))
                .chain(row.label.iter().map(|p| ("label", p)))
                .chain(row.pixel_weight.iter().map(|p| ("pixel_weight", p)))
                .chain(row.noisy_mask.iter().map(|p| ("noisy_mask", p)));
            for (what, p) in named {
                let full = self.resolve(p);
                if !full.is_file() {
                    return Err(
                        self.row_error(r, format!("{what} file {} not found", full.display()))
                    );
                }
            }
        }
        Ok(())
    }

    /// Path as written to the CSV: relative to `root` when it lies below it.
    fn cell_path(&self, p: &Path) -> String {
        let rel = if p.is_absolute() {
            p.strip_prefix(&self.root).unwrap_or(p)
        } else {
            p
        };
        rel.to_string_lossy().into_owned()
    }

    /// Writes the manifest as CSV (atomically: temp file + rename). Columns:
    /// the image columns, then `label`, `pixel_weight`, `noisy_mask`, `image_weight`,
    /// `annotated_classes` when any row has them, then the extra columns in
    /// name order.
    ///
    /// # Errors
    /// [`Error::Manifest`] when rows have different numbers of images;
    /// [`Error::Io`] when the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<()> {
        let n_img = self
            .rows
            .first()
            .map_or(self.image_columns.len().max(1), |r| r.images.len());
        for (r, row) in self.rows.iter().enumerate() {
            if row.images.len() != n_img || n_img == 0 {
                return Err(Error::Manifest {
                    path: path.to_path_buf(),
                    row: r + 1,
                    message: format!("row has {} images, the first row {n_img}", row.images.len()),
                });
            }
        }
        let image_cols: Vec<String> = if self.image_columns.len() == n_img {
            self.image_columns.clone()
        } else if n_img == 1 {
            vec!["image".into()]
        } else {
            (0..n_img).map(|i| format!("image{i}")).collect()
        };
        let has_label = self.rows.iter().any(|r| r.label.is_some());
        let has_pw = self.rows.iter().any(|r| r.pixel_weight.is_some());
        let has_nm = self.rows.iter().any(|r| r.noisy_mask.is_some());
        let has_iw = self.rows.iter().any(|r| r.image_weight.is_some());
        let has_ac = self.rows.iter().any(|r| r.annotated_classes.is_some());
        let mut extra: Vec<&String> = self.rows.iter().flat_map(|r| r.extra.keys()).collect();
        extra.sort();
        extra.dedup();
        let mut header = image_cols;
        for (flag, name) in [
            (has_label, "label"),
            (has_pw, "pixel_weight"),
            (has_nm, "noisy_mask"),
            (has_iw, "image_weight"),
            (has_ac, "annotated_classes"),
        ] {
            if flag {
                header.push(name.into());
            }
        }
        header.extend(extra.iter().map(|s| s.to_string()));
        let mut wtr = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| Error::io(path, std::io::Error::other(e));
        wtr.write_record(&header).map_err(csv_err)?;
        for row in &self.rows {
            let mut rec: Vec<String> = row.images.iter().map(|p| self.cell_path(p)).collect();
            let opt =
                |p: &Option<PathBuf>| p.as_ref().map(|p| self.cell_path(p)).unwrap_or_default();
            if has_label {
                rec.push(opt(&row.label));
            }
            if has_pw {
                rec.push(opt(&row.pixel_weight));
            }
            if has_nm {
                rec.push(opt(&row.noisy_mask));
            }
            if has_iw {
                rec.push(row.image_weight.map(|w| w.to_string()).unwrap_or_default());
            }
            if has_ac {
                rec.push(
                    row.annotated_classes
                        .as_ref()
                        .map(|c| c.iter().map(u16::to_string).collect::<Vec<_>>().join(";"))
                        .unwrap_or_default(),
                );
            }
            for k in &extra {
                rec.push(row.extra.get(*k).cloned().unwrap_or_default());
            }
            wtr.write_record(&rec).map_err(csv_err)?;
        }
        let bytes = wtr
            .into_inner()
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
        write_atomic(path, &bytes)
    }
}
