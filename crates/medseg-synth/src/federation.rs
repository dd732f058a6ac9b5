//! A phantom federation: hospitals that each outlined different organs, on
//! scanners that each render intensities differently, plus an external,
//! fully labelled test site (SegViz's setting, on the abdomen phantom).
//!
//! Each site gets its own subjects (disjoint seeds), drawn from the same
//! anatomy; its images pass through the site's [`Appearance`] (intensity
//! scale about a soft-tissue level, offset, extra noise), so the sites are
//! not identically distributed. A site's labels keep its own organs only:
//! every other organ is background, and the manifests say which classes
//! are annotated (`annotated_classes`, background included) and which site
//! a case comes from (`site`).
//!
//! Layout under the root:
//! - `<site>/images`, `<site>/labels` (partial), `<site>/labels_full`;
//! - `<site>/train.csv`, `<site>/valid.csv` (partial labels, by subject),
//!   `<site>/train_full.csv` (the same cases with every organ);
//! - `external/test.csv` (full labels, the external site's appearance);
//! - `pooled_train.csv`, `pooled_valid.csv` (every site's partial cases),
//!   `pooled_train_full.csv` (every site's cases with every organ: the
//!   central upper bound).
//!
//! Every manifest's paths are relative to the root (use it as a learner
//! config's `dataset.root`).

use crate::partial::{keep_classes, Dropped};
use crate::phantom::{generate_subject, PhantomConfig};
use medseg_core::{Error, Image, LabelMap, Result};
use medseg_io::{DataType, Manifest, ManifestRow};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a site's scanner renders intensities: `v' = level + scale (v -
/// level) + offset + N(0, noise_sd)`, in the phantom's units (HU).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appearance {
    /// Contrast: scale about `level`.
    pub scale: f32,
    /// Intensity offset.
    pub offset: f32,
    /// Standard deviation of added Gaussian noise.
    pub noise_sd: f32,
}

impl Default for Appearance {
    fn default() -> Self {
        Appearance {
            scale: 1.0,
            offset: 0.0,
            noise_sd: 0.0,
        }
    }
}

/// The soft-tissue level the contrast scale pivots on (HU).
pub const LEVEL: f32 = 40.0;

/// One site of the federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Folder and `site` column value.
    pub name: String,
    /// The organs this site outlined (foreground class ids).
    pub classes: Vec<u16>,
    /// Number of subjects.
    pub subjects: usize,
    /// Its scanner.
    pub appearance: Appearance,
}

/// A federation to write.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationSpec {
    /// The phantom (kind, size, spacing, noise).
    pub phantom: PhantomConfig,
    /// One file per slice (2D) or per volume.
    pub two_d: bool,
    /// The labelling sites.
    pub sites: Vec<SiteSpec>,
    /// Subjects of the external test site.
    pub external_subjects: usize,
    /// Its scanner.
    pub external: Appearance,
    /// Fraction of each site's subjects kept for its validation.
    pub valid_fraction: f64,
    /// Seed of everything.
    pub seed: u64,
}

/// The federation of a data-set kind: `federation2d` is
/// [`FederationSpec::abdomen_four_sites`] (slices of the 2D abdomen
/// phantom), `federation3d` the same sites on volumes of the 3D abdomen
/// phantom; `None` for any other kind.
pub fn federation_spec(kind: &str, subjects: usize, seed: u64) -> Option<Result<FederationSpec>> {
    let mut spec = FederationSpec::abdomen_four_sites(subjects, seed);
    match kind {
        "federation2d" => {}
        "federation3d" => {
            spec.phantom = PhantomConfig::abdomen3d();
            spec.two_d = false;
        }
        _ => return None,
    }
    Some(spec.validate().map(|_| spec))
}

impl FederationSpec {
    /// SegViz's setting on the 2D abdomen phantom: four sites, each
    /// outlining one organ (liver, spleen, left kidney, right kidney) with
    /// its own scanner, `subjects` subjects each, and an external site of
    /// `subjects` subjects.
    pub fn abdomen_four_sites(subjects: usize, seed: u64) -> Self {
        let look = |scale, offset, noise_sd| Appearance {
            scale,
            offset,
            noise_sd,
        };
        let site = |name: &str, c: u16, a| SiteSpec {
            name: name.into(),
            classes: vec![c],
            subjects,
            appearance: a,
        };
        FederationSpec {
            phantom: PhantomConfig::abdomen2d(),
            two_d: true,
            sites: vec![
                site("liver_site", 1, look(1.0, 0.0, 0.0)),
                site("spleen_site", 2, look(0.75, 25.0, 12.0)),
                site("lkidney_site", 3, look(1.3, -20.0, 6.0)),
                site("rkidney_site", 4, look(0.9, 40.0, 18.0)),
            ],
            external_subjects: subjects,
            external: look(1.15, -10.0, 9.0),
            valid_fraction: 0.25,
            seed,
        }
    }

    /// Checks names, classes and counts.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the site and the key at fault.
    pub fn validate(&self) -> Result<()> {
        self.phantom.validate()?;
        let n = self.phantom.kind.num_classes() as u16;
        if self.sites.is_empty() {
            return Err(Error::invalid(
                "sites",
                "a federation needs at least one site",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sites {
            if !names.insert(s.name.as_str()) || s.name == "external" || s.name.is_empty() {
                return Err(Error::invalid(
                    format!("sites.{}.name", s.name),
                    "site names must be unique, non-empty and not `external`",
                ));
            }
            if s.subjects < 2 {
                return Err(Error::invalid(
                    format!("sites.{}.subjects", s.name),
                    format!("need at least 2 (train and validation), got {}", s.subjects),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for &c in &s.classes {
                if c == 0 || c >= n {
                    return Err(Error::invalid(
                        format!("sites.{}.classes", s.name),
                        format!("class {c} is not an organ of this phantom (1..{})", n - 1),
                    ));
                }
                if !seen.insert(c) {
                    return Err(Error::invalid(
                        format!("sites.{}.classes", s.name),
                        format!("class {c} is named twice"),
                    ));
                }
            }
            if s.classes.is_empty() {
                return Err(Error::invalid(
                    format!("sites.{}.classes", s.name),
                    "a site outlines at least one organ",
                ));
            }
        }
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return Err(Error::invalid(
                "valid_fraction",
                format!("must be in [0, 1), got {}", self.valid_fraction),
            ));
        }
        Ok(())
    }
}

/// What [`write_federation`] wrote: cases per site (train, valid) and of
/// the external site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationReport {
    /// `(site, training cases, validation cases)`.
    pub sites: Vec<(String, usize, usize)>,
    /// External test cases.
    pub external: usize,
}

fn apply_appearance(image: &mut Image, a: &Appearance, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0f32, a.noise_sd.max(0.0)).ok();
    image.data.mapv_inplace(|v| {
        let n = match (&noise, a.noise_sd > 0.0) {
            (Some(d), true) => d.sample(&mut rng),
            _ => 0.0,
        };
        LEVEL + a.scale * (v - LEVEL) + a.offset + n
    });
}

/// Writes the federation `spec` under `root` (layout in the module doc).
/// The same spec gives the same files.
///
/// # Errors
/// An invalid spec (naming the site and key), or a file that cannot be
/// written.
pub fn write_federation(spec: &FederationSpec, root: &Path) -> Result<FederationReport> {
    spec.validate()?;
    let all: Vec<u16> = (0..spec.phantom.kind.num_classes() as u16).collect();
    let mut pooled = [
        Manifest::new(root),
        Manifest::new(root),
        Manifest::new(root),
    ];
    let mut report = FederationReport {
        sites: Vec::new(),
        external: 0,
    };
    let mut first_subject = 0usize;
    let parts: Vec<(&str, usize, Appearance, Option<&SiteSpec>)> = spec
        .sites
        .iter()
        .map(|s| (s.name.as_str(), s.subjects, s.appearance, Some(s)))
        .chain(std::iter::once((
            "external",
            spec.external_subjects,
            spec.external,
            None,
        )))
        .collect();
    for (name, subjects, look, site) in parts {
        let dir = root.join(name);
        for d in ["images", "labels", "labels_full"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| Error::io(dir.join(d), e))?;
        }
        let n_valid = match site {
            Some(_) => {
                ((subjects as f64 * spec.valid_fraction).round() as usize).clamp(1, subjects - 1)
            }
            None => 0,
        };
        // every manifest's paths are relative to the federation's root (a
        // learner config's `dataset.root`), as the pooled ones are
        let mut train = Manifest::new(root);
        let mut valid = Manifest::new(root);
        let mut full = Manifest::new(root);
        for k in 0..subjects {
            let index = first_subject + k;
            let p = generate_subject(&spec.phantom, spec.seed, index)?;
            let cases: Vec<(String, Image, LabelMap)> = if spec.two_d {
                p.slices_2d()?
                    .into_iter()
                    .map(|s| (s.name, s.image, s.label))
                    .collect()
            } else {
                vec![(p.subject.clone(), p.image, p.label)]
            };
            for (case, mut image, label) in cases {
                let seed = crate::phantom::named_seed(spec.seed, &format!("{name}/{case}"));
                apply_appearance(&mut image, &look, seed);
                let ip = format!("images/{case}.nii.gz");
                let fp = format!("labels_full/{case}.nii.gz");
                medseg_io::write_image(&dir.join(&ip), &image, DataType::F32)?;
                medseg_io::write_label(&dir.join(&fp), &label)?;
                let mut row = ManifestRow::new(dir.join(&ip));
                row.extra.insert("subject".into(), p.subject.clone());
                row.extra.insert("site".into(), name.to_string());
                let Some(site) = site else {
                    row.label = Some(dir.join(&fp));
                    train.rows.push(row);
                    continue;
                };
                let lp = format!("labels/{case}.nii.gz");
                let partial = keep_classes(&label, &site.classes, Dropped::Background, None);
                medseg_io::write_label(&dir.join(&lp), &partial)?;
                let mut annotated = vec![0u16];
                annotated.extend(&site.classes);
                annotated.sort_unstable();
                let mut frow = row.clone();
                frow.label = Some(dir.join(&fp));
                frow.annotated_classes = Some(all.clone());
                row.label = Some(dir.join(&lp));
                row.annotated_classes = Some(annotated);
                if k < subjects - n_valid {
                    train.rows.push(row.clone());
                    full.rows.push(frow.clone());
                    pooled[0].rows.push(row);
                    pooled[2].rows.push(frow);
                } else {
                    valid.rows.push(row.clone());
                    pooled[1].rows.push(row);
                }
            }
        }
        first_subject += subjects;
        if site.is_some() {
            train.write(&dir.join("train.csv"))?;
            valid.write(&dir.join("valid.csv"))?;
            full.write(&dir.join("train_full.csv"))?;
            report
                .sites
                .push((name.to_string(), train.rows.len(), valid.rows.len()));
        } else {
            train.write(&dir.join("test.csv"))?;
            report.external = train.rows.len();
        }
    }
    for (m, file) in pooled.iter().zip([
        "pooled_train.csv",
        "pooled_valid.csv",
        "pooled_train_full.csv",
    ]) {
        m.write(&root.join(file))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> FederationSpec {
        let mut s = FederationSpec::abdomen_four_sites(2, 5);
        s.phantom.slices = 2;
        s.phantom.height = 32;
        s.phantom.width = 32;
        s.external_subjects = 1;
        s
    }

    #[test]
    fn sites_keep_their_organs_and_see_their_scanner() {
        let dir = tempfile::tempdir().unwrap();
        let spec = small();
        let r = write_federation(&spec, dir.path()).unwrap();
        assert_eq!(r.sites.len(), 4);
        assert!(r.sites.iter().all(|(_, t, v)| *t == 2 && *v == 2), "{r:?}");
        assert_eq!(r.external, 2);
        for (k, site) in spec.sites.iter().enumerate() {
            let m = Manifest::read(
                &dir.path().join(&site.name).join("train.csv"),
                Some(dir.path()),
            )
            .unwrap();
            for row in &m.rows {
                assert_eq!(
                    row.annotated_classes.as_deref(),
                    Some(&[0, k as u16 + 1][..])
                );
                assert_eq!(row.extra["site"], site.name);
                let l = medseg_io::read_label(&m.resolve(row.label.as_ref().unwrap())).unwrap();
                assert!(l.data.iter().all(|&v| v == 0 || v == k as u16 + 1));
            }
        }
        let full = Manifest::read(&dir.path().join("pooled_train_full.csv"), None).unwrap();
        let pooled = Manifest::read(&dir.path().join("pooled_train.csv"), None).unwrap();
        assert_eq!(full.rows.len(), 8);
        assert_eq!(pooled.rows.len(), 8);
        // the same subject index renders differently at two sites: sites
        // draw disjoint subjects, so compare intensity statistics instead
        let mean_sd = |site: &str| {
            let m =
                Manifest::read(&dir.path().join(site).join("train.csv"), Some(dir.path())).unwrap();
            let im = medseg_io::read_image(&m.resolve(&m.rows[0].images[0])).unwrap();
            let n = im.data.len() as f32;
            let mean = im.data.sum() / n;
            (
                mean,
                (im.data.mapv(|v| (v - mean).powi(2)).sum() / n).sqrt(),
            )
        };
        assert_ne!(mean_sd("liver_site"), mean_sd("spleen_site"));
    }

    #[test]
    fn bad_specs_name_the_site_and_key() {
        let mut s = small();
        s.sites[1].classes = vec![2, 2];
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("sites.spleen_site.classes") && e.contains("named twice"),
            "{e}"
        );
        let mut s = small();
        s.sites[2].classes = vec![9];
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("lkidney_site") && e.contains("class 9"), "{e}");
        let mut s = small();
        s.sites[3].name = "liver_site".into();
        assert!(s.validate().unwrap_err().to_string().contains("unique"));
    }
}
