//! Physical geometry of an image grid: spacing, origin and direction.

use serde::{Deserialize, Serialize};

/// Where an array's voxels lie in the world (NIfTI RAS+ millimetres).
///
/// All per-axis fields are in **array axis order** `(D, H, W)`: `spacing[0]` is
/// the distance between slices along the array's depth axis, `spacing[2]` the
/// distance between neighbouring columns. `direction[r][a]` is world component
/// `r` (x, y, z) of the unit vector along array axis `a`. `origin` is the world
/// position of voxel `[0, 0, 0]`.
///
/// For 2D arrays `[C, H, W]` the depth axis is a singleton: only `spacing[1..]`
/// matter, and `spacing[0]` is the slice thickness (1 by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Voxel size in mm along `(D, H, W)`.
    pub spacing: [f64; 3],
    /// World position (x, y, z) of the first voxel, in mm.
    pub origin: [f64; 3],
    /// Columns are the world unit vectors of the array axes `(D, H, W)`.
    pub direction: [[f64; 3]; 3],
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry::identity()
    }
}

impl Geometry {
    /// Unit spacing, zero origin, and the direction that a NIfTI file with an
    /// identity affine has: array `W` runs along x, `H` along y, `D` along z.
    pub fn identity() -> Self {
        Geometry {
            spacing: [1.0; 3],
            origin: [0.0; 3],
            direction: [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
        }
    }

    /// Same as [`Geometry::identity`] with the given spacing `(D, H, W)`.
    pub fn with_spacing(spacing: [f64; 3]) -> Self {
        Geometry {
            spacing,
            ..Geometry::identity()
        }
    }

    /// The 4x4 NIfTI affine (voxel index `(i, j, k)` to RAS+ mm), where
    /// `i` is the array's `W` axis, `j` its `H` axis and `k` its `D` axis.
    pub fn to_affine(&self) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        // NIfTI column c (i, j, k) corresponds to array axis 2 - c.
        for c in 0..3 {
            let axis = 2 - c;
            for (r, row) in a.iter_mut().enumerate().take(3) {
                row[c] = self.direction[r][axis] * self.spacing[axis];
            }
        }
        for (r, row) in a.iter_mut().enumerate().take(3) {
            row[3] = self.origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    /// Builds a geometry from a NIfTI affine (voxel index `(i, j, k)` to RAS+ mm).
    ///
    /// Spacing is the length of each affine column; direction is the column
    /// divided by it. A zero column gets spacing 1 and the identity direction
    /// for that axis, so that a degenerate header never yields NaN.
    #[allow(clippy::needless_range_loop)]
    pub fn from_affine(affine: &[[f64; 4]; 4]) -> Self {
        let mut g = Geometry::identity();
        for c in 0..3 {
            let axis = 2 - c;
            let col = [affine[0][c], affine[1][c], affine[2][c]];
            let norm = (col[0] * col[0] + col[1] * col[1] + col[2] * col[2]).sqrt();
            if norm > 0.0 && norm.is_finite() {
                g.spacing[axis] = norm;
                for (r, v) in col.iter().enumerate() {
                    g.direction[r][axis] = v / norm;
                }
            }
        }
        for r in 0..3 {
            g.origin[r] = affine[r][3];
        }
        g
    }

    /// World position (mm) of a continuous array index `(d, h, w)`.
    #[allow(clippy::needless_range_loop)]
    pub fn index_to_world(&self, index: [f64; 3]) -> [f64; 3] {
        let mut p = self.origin;
        for (r, pr) in p.iter_mut().enumerate() {
            for a in 0..3 {
                *pr += self.direction[r][a] * self.spacing[a] * index[a];
            }
        }
        p
    }

    /// Spacing of the last `ndim` spatial axes (2 for 2D images, 3 for 3D).
    pub fn spatial_spacing(&self, ndim: usize) -> &[f64] {
        &self.spacing[3 - ndim.min(3)..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn affine_round_trip_oblique() {
        let t: f64 = 0.3;
        let affine = [
            [0.9 * t.cos(), -1.1 * t.sin(), 0.0, 10.0],
            [0.9 * t.sin(), 1.1 * t.cos(), 0.0, -20.0],
            [0.0, 0.0, -2.5, 5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::from_affine(&affine);
        assert_abs_diff_eq!(g.spacing[0], 2.5, epsilon = 1e-12);
        assert_abs_diff_eq!(g.spacing[1], 1.1, epsilon = 1e-12);
        assert_abs_diff_eq!(g.spacing[2], 0.9, epsilon = 1e-12);
        let back = g.to_affine();
        for r in 0..4 {
            for c in 0..4 {
                assert_abs_diff_eq!(back[r][c], affine[r][c], epsilon = 1e-12);
            }
        }
        // voxel (i=1, j=0, k=0) is array index (0, 0, 1)
        let p = g.index_to_world([0.0, 0.0, 1.0]);
        assert_abs_diff_eq!(p[0], 10.0 + 0.9 * t.cos(), epsilon = 1e-12);
        assert_abs_diff_eq!(p[1], -20.0 + 0.9 * t.sin(), epsilon = 1e-12);
    }

    #[test]
    fn identity_matches_identity_affine() {
        let a = Geometry::identity().to_affine();
        for (r, row) in a.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert_eq!(*v, if r == c { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn zero_column_gives_unit_spacing() {
        let mut a = Geometry::identity().to_affine();
        a[0][0] = 0.0;
        let g = Geometry::from_affine(&a);
        assert_eq!(g.spacing, [1.0, 1.0, 1.0]);
        assert!(g.direction.iter().flatten().all(|v| v.is_finite()));
    }
}
