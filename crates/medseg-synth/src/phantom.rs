//! Phantom configuration and the rendering pipeline shared by the cardiac and
//! abdominal families: tissue map → intensities with texture → blur → bias
//! field → noise.

use crate::grid::{blur_slices, smooth_field};
use crate::{abdomen, cardiac};
use medseg_core::{Error, Geometry, Image, LabelMap, Result};
use ndarray::{s, Array3, ArrayD, Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which phantom family to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhantomKind {
    /// Cardiac short-axis cine-MR-like slices with ACDC classes
    /// (see [`crate::cardiac_classes`]).
    Cardiac,
    /// Abdominal CT-like axial slices with four organs
    /// (see [`crate::abdomen_classes`]).
    Abdomen,
}

impl PhantomKind {
    /// Names of the classes, index = class value (0 is background).
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            PhantomKind::Cardiac => &["background", "RV", "myocardium", "LV"],
            PhantomKind::Abdomen => &[
                "background",
                "liver",
                "spleen",
                "left kidney",
                "right kidney",
            ],
        }
    }

    /// Number of classes, background included.
    pub fn num_classes(self) -> usize {
        self.class_names().len()
    }
}

/// Noise added to the rendered image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoiseModel {
    /// Additive Gaussian noise (CT-like).
    Gaussian,
    /// Rician noise, the magnitude of a complex signal with Gaussian noise in
    /// both channels (MR-like): `sqrt((s + n1)^2 + n2^2)`.
    Rician,
}

/// How to draw a phantom volume. All phantoms are drawn as `[1, D, H, W]`
/// volumes; 2D data sets take each of the `D` slices as one 2D image
/// ([`Phantom::slices_2d`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhantomConfig {
    /// The family.
    pub kind: PhantomKind,
    /// Number of slices `D` per subject (base to apex, or cranial to caudal).
    pub slices: usize,
    /// Rows `H`.
    pub height: usize,
    /// Columns `W`.
    pub width: usize,
    /// Voxel size in mm in array axis order `(D, H, W)`.
    pub spacing: [f64; 3],
    /// Noise model.
    pub noise: NoiseModel,
    /// Noise standard deviation range, as a fraction of the brightest tissue
    /// mean (cardiac) or in HU / 1000 (abdomen); drawn per subject.
    pub noise_level: (f64, f64),
    /// Gaussian blur standard deviation range in pixels, drawn per subject.
    pub blur_sigma: (f64, f64),
    /// Amplitude of the multiplicative bias field: `exp(strength * f)`, `f` a
    /// smooth field of unit standard deviation. 0 disables it.
    pub bias_strength: f64,
}

impl PhantomConfig {
    /// Cardiac slices for 2D training: 8 slices of 128 x 128 at
    /// 1.5 x 1.5 mm, 10 mm apart.
    pub fn cardiac2d() -> Self {
        PhantomConfig {
            kind: PhantomKind::Cardiac,
            slices: 8,
            height: 128,
            width: 128,
            spacing: [10.0, 1.5, 1.5],
            noise: NoiseModel::Rician,
            noise_level: (0.03, 0.07),
            blur_sigma: (0.5, 1.0),
            bias_strength: 0.25,
        }
    }

    /// Cardiac volumes: 10 slices of 128 x 128 at 1.5 x 1.5 mm, 8 mm apart.
    pub fn cardiac3d() -> Self {
        PhantomConfig {
            slices: 10,
            spacing: [8.0, 1.5, 1.5],
            ..PhantomConfig::cardiac2d()
        }
    }

    /// Abdominal slices for 2D training: 8 slices of 128 x 128 at
    /// 2.5 x 2.5 mm, 15 mm apart.
    pub fn abdomen2d() -> Self {
        PhantomConfig {
            kind: PhantomKind::Abdomen,
            slices: 8,
            height: 128,
            width: 128,
            spacing: [15.0, 2.5, 2.5],
            noise: NoiseModel::Gaussian,
            noise_level: (0.010, 0.025),
            blur_sigma: (0.5, 0.9),
            bias_strength: 0.0,
        }
    }

    /// Abdominal volumes: 20 slices of 96 x 96 at 3.3 x 3.3 mm, 6 mm apart.
    pub fn abdomen3d() -> Self {
        PhantomConfig {
            slices: 20,
            height: 96,
            width: 96,
            spacing: [6.0, 10.0 / 3.0, 10.0 / 3.0],
            ..PhantomConfig::abdomen2d()
        }
    }

    /// Checks sizes, spacing and ranges.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.slices == 0 || self.height < 16 || self.width < 16 {
            return Err(Error::invalid(
                "phantom size",
                format!(
                    "need at least 1 slice and 16 x 16 pixels, got {} x {} x {}",
                    self.slices, self.height, self.width
                ),
            ));
        }
        if self.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(
                "spacing",
                format!("must be positive, got {:?}", self.spacing),
            ));
        }
        for (name, (lo, hi)) in [
            ("noise_level", self.noise_level),
            ("blur_sigma", self.blur_sigma),
        ] {
            if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
                return Err(Error::invalid(
                    name,
                    format!("need 0 <= lo <= hi, got ({lo}, {hi})"),
                ));
            }
        }
        if !(self.bias_strength.is_finite() && self.bias_strength >= 0.0) {
            return Err(Error::invalid(
                "bias_strength",
                format!("must be >= 0, got {}", self.bias_strength),
            ));
        }
        Ok(())
    }
}

/// One subject: a `[1, D, H, W]` image and its label map.
#[derive(Debug, Clone, PartialEq)]
pub struct Phantom {
    /// Subject name, `subjectNNN`.
    pub subject: String,
    /// Intensities `[1, D, H, W]`, spacing `(D, H, W)` from the config.
    pub image: Image,
    /// Classes `[1, D, H, W]`.
    pub label: LabelMap,
}

/// One 2D slice of a phantom subject.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSlice {
    /// `subjectNNN_sliceYY`.
    pub name: String,
    /// The subject the slice belongs to (for splits by subject).
    pub subject: String,
    /// Slice index along `D`.
    pub slice: usize,
    /// `[1, H, W]`; the geometry keeps the volume's spacing, `spacing[0]` is
    /// the slice thickness, and its origin is moved to the slice.
    pub image: Image,
    /// `[1, H, W]`.
    pub label: LabelMap,
}

impl Phantom {
    /// Cuts the volume into its `D` slices, each a 2D `[1, H, W]` image.
    ///
    /// # Errors
    /// [`Error::Shape`] when the image is not a `[1, D, H, W]` volume.
    pub fn slices_2d(&self) -> Result<Vec<PhantomSlice>> {
        let sh = self.image.data.shape();
        if sh.len() != 4 {
            return Err(Error::Shape(format!(
                "phantom must be [1, D, H, W], got {sh:?}"
            )));
        }
        let mut out = Vec::with_capacity(sh[1]);
        for k in 0..sh[1] {
            let img = self.image.data.index_axis(Axis(1), k).to_owned();
            let lab = self.label.data.index_axis(Axis(1), k).to_owned();
            let mut g = self.image.geometry;
            g.origin = g.index_to_world([k as f64, 0.0, 0.0]);
            out.push(PhantomSlice {
                name: format!("{}_slice{:02}", self.subject, k),
                subject: self.subject.clone(),
                slice: k,
                image: Image::new(img, g)?,
                label: LabelMap::new(lab, g)?,
            });
        }
        Ok(out)
    }
}

/// Seed of subject `index` derived from the data set `seed` (SplitMix64), so
/// that each subject is the same whatever the number of subjects or threads.
pub fn subject_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed for the item called `name` (an image or subject name) derived from
/// the run's `seed` (FNV-1a of the name mixed with SplitMix64), so that an
/// item gets the same draw whichever manifest or order it comes in.
pub fn named_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    subject_seed(seed ^ h, 0)
}

/// What a family's scene drawer produces for one subject: a tissue index per
/// voxel, the class per voxel, and the mean intensity of every tissue index.
pub(crate) struct Scene {
    pub tissue: Array3<u8>,
    pub label: Array3<u16>,
    pub means: Vec<f32>,
    /// Relative texture amplitude per tissue.
    pub texture: Vec<f32>,
    /// Intensity scale used for the noise level (brightest tissue or 1000 HU).
    pub noise_scale: f32,
}

/// Draws subject `index` of the data set with seed `seed`.
///
/// # Errors
/// [`Error::InvalidValue`] for an invalid config.
pub fn generate_subject(cfg: &PhantomConfig, seed: u64, index: usize) -> Result<Phantom> {
    cfg.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(subject_seed(seed, index));
    let scene = match cfg.kind {
        PhantomKind::Cardiac => cardiac::draw(cfg, &mut rng),
        PhantomKind::Abdomen => abdomen::draw(cfg, &mut rng),
    };
    let dim = scene.tissue.dim();
    // texture: fine random field, per-tissue amplitude
    let tex = smooth_field(&mut rng, dim, 5.0, 16);
    let mut vol = Array3::from_shape_fn(dim, |i| {
        let t = scene.tissue[i] as usize;
        scene.means[t] * (1.0 + scene.texture[t] * tex[i])
    });
    let sigma = rng.random_range(cfg.blur_sigma.0..=cfg.blur_sigma.1);
    blur_slices(&mut vol, sigma);
    if cfg.bias_strength > 0.0 {
        let wl = (cfg.height.max(cfg.width) as f64) * 1.2;
        let bias = smooth_field(&mut rng, dim, wl, 4);
        let strength = cfg.bias_strength as f32;
        vol.zip_mut_with(&bias, |v, b| *v *= (strength * b).exp());
    }
    let level = rng.random_range(cfg.noise_level.0..=cfg.noise_level.1) as f32 * scene.noise_scale;
    if level > 0.0 {
        let normal =
            Normal::new(0.0f32, level).map_err(|e| Error::invalid("noise_level", e.to_string()))?;
        match cfg.noise {
            NoiseModel::Gaussian => vol.mapv_inplace(|v| v + normal.sample(&mut rng)),
            NoiseModel::Rician => vol.mapv_inplace(|v| {
                let a = v + normal.sample(&mut rng);
                let b = normal.sample(&mut rng);
                (a * a + b * b).sqrt()
            }),
        }
    }
    let (d, h, w) = dim;
    let mut geometry = Geometry::with_spacing(cfg.spacing);
    // centre the field of view on the world origin in-plane
    geometry.origin = [
        -(w as f64 - 1.0) / 2.0 * cfg.spacing[2],
        -(h as f64 - 1.0) / 2.0 * cfg.spacing[1],
        0.0,
    ];
    let image = Image::new(
        ArrayD::from_shape_vec(IxDyn(&[1, d, h, w]), vol.into_raw_vec_and_offset().0)
            .map_err(|e| Error::Shape(e.to_string()))?,
        geometry,
    )?;
    let label = LabelMap::new(
        ArrayD::from_shape_vec(
            IxDyn(&[1, d, h, w]),
            scene.label.into_raw_vec_and_offset().0,
        )
        .map_err(|e| Error::Shape(e.to_string()))?,
        geometry,
    )?;
    Ok(Phantom {
        subject: format!("subject{index:03}"),
        image,
        label,
    })
}

/// Draws subjects `0..subjects` in parallel (rayon). Subject `i` depends only
/// on `(cfg, seed, i)`.
///
/// # Errors
/// [`Error::InvalidValue`] for an invalid config.
pub fn generate(cfg: &PhantomConfig, subjects: usize, seed: u64) -> Result<Vec<Phantom>> {
    cfg.validate()?;
    (0..subjects)
        .into_par_iter()
        .map(|i| generate_subject(cfg, seed, i))
        .collect()
}

/// Helpers for the scene drawers.
pub(crate) mod shape {
    /// A blob: an ellipse with a wavy boundary, `rho <= 1` inside.
    #[derive(Debug, Clone, Copy)]
    pub struct Blob {
        pub cx: f64,
        pub cy: f64,
        pub ax: f64,
        pub ay: f64,
        pub rot: f64,
        /// `(amplitude, phase)` of the boundary harmonics 2, 3, 4.
        pub harm: [(f64, f64); 3],
    }

    impl Blob {
        pub fn ellipse(cx: f64, cy: f64, ax: f64, ay: f64, rot: f64) -> Self {
            Blob {
                cx,
                cy,
                ax,
                ay,
                rot,
                harm: [(0.0, 0.0); 3],
            }
        }

        /// Normalised radius: < 1 inside, 1 on the boundary.
        pub fn rho(&self, x: f64, y: f64) -> f64 {
            if self.ax <= 0.0 || self.ay <= 0.0 {
                return f64::INFINITY;
            }
            let (s, c) = self.rot.sin_cos();
            let dx = x - self.cx;
            let dy = y - self.cy;
            let u = (dx * c + dy * s) / self.ax;
            let v = (-dx * s + dy * c) / self.ay;
            let r = (u * u + v * v).sqrt();
            let th = v.atan2(u);
            let mut m = 1.0;
            for (k, (a, p)) in self.harm.iter().enumerate() {
                m += a * ((k as f64 + 2.0) * th + p).cos();
            }
            r / m.max(0.2)
        }

        /// Whether `(x, y)` lies inside; skips the harmonics far from the
        /// boundary.
        pub fn inside(&self, x: f64, y: f64) -> bool {
            if self.ax <= 0.0 || self.ay <= 0.0 {
                return false;
            }
            let (s, c) = self.rot.sin_cos();
            let dx = x - self.cx;
            let dy = y - self.cy;
            let u = (dx * c + dy * s) / self.ax;
            let v = (-dx * s + dy * c) / self.ay;
            let r2 = u * u + v * v;
            let amp: f64 = self.harm.iter().map(|h| h.0.abs()).sum();
            let (lo, hi) = ((1.0 - amp).max(0.2), 1.0 + amp);
            if r2 > hi * hi {
                return false;
            }
            if r2 <= lo * lo {
                return true;
            }
            self.rho(x, y) <= 1.0
        }

        /// The same blob with both axes scaled by `f`.
        pub fn scaled(&self, f: f64) -> Self {
            Blob {
                ax: self.ax * f,
                ay: self.ay * f,
                ..*self
            }
        }

        /// The same blob with both axes grown by `mm`.
        pub fn grown(&self, mm: f64) -> Self {
            Blob {
                ax: self.ax + mm,
                ay: self.ay + mm,
                ..*self
            }
        }
    }

    /// Random boundary harmonics with amplitudes up to `amp`.
    pub fn harmonics<R: rand::Rng>(rng: &mut R, amp: f64) -> [(f64, f64); 3] {
        let mut h = [(0.0, 0.0); 3];
        for (k, e) in h.iter_mut().enumerate() {
            *e = (
                rng.random_range(0.0..=amp) / (k as f64 + 1.0),
                rng.random_range(0.0..std::f64::consts::TAU),
            );
        }
        h
    }
}

/// In-plane world position (mm, relative to the image centre) of pixel
/// `(y, x)`: `(x_mm, y_mm)`.
pub(crate) fn pixel_mm(cfg: &PhantomConfig, y: usize, x: usize) -> (f64, f64) {
    (
        (x as f64 - (cfg.width as f64 - 1.0) / 2.0) * cfg.spacing[2],
        (y as f64 - (cfg.height as f64 - 1.0) / 2.0) * cfg.spacing[1],
    )
}

/// Fills slice `k` of `tissue`/`label` by calling `f(x_mm, y_mm)` per pixel.
pub(crate) fn fill_slice<F>(
    cfg: &PhantomConfig,
    tissue: &mut Array3<u8>,
    label: &mut Array3<u16>,
    k: usize,
    f: F,
) where
    F: Fn(f64, f64) -> (u8, u16),
{
    let mut ts = tissue.slice_mut(s![k, .., ..]);
    let mut ls = label.slice_mut(s![k, .., ..]);
    for y in 0..cfg.height {
        for x in 0..cfg.width {
            let (xm, ym) = pixel_mm(cfg, y, x);
            let (t, l) = f(xm, ym);
            ts[[y, x]] = t;
            ls[[y, x]] = l;
        }
    }
}
