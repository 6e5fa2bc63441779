//! Plane-to-plane homography from point correspondences by the normalised DLT (Hartley &
//! Zisserman, alg. 4.2): exact for four points, least squares for more.

// Small dense matrices read best with explicit indices.
#![allow(clippy::needless_range_loop)]

/// A 3 x 3 projective map, row-major, normalised so that `h[8]` is 1 where possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub [f64; 9]);

impl Homography {
    /// Estimates the map taking each `src[i]` to `dst[i]`. Fails on fewer than four pairs
    /// or degenerate (collinear) configurations.
    pub fn fit(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<Self, String> {
        if src.len() != dst.len() {
            return Err(format!(
                "{} image points but {} world points",
                src.len(),
                dst.len()
            ));
        }
        if src.len() < 4 {
            return Err(format!(
                "a homography needs at least 4 point pairs, got {}",
                src.len()
            ));
        }
        for (name, pts) in [("image", src), ("world", dst)] {
            if let Some((a, b, c)) = collinear_triple(pts) {
                return Err(format!(
                    "{name} points {}, {} and {} are (nearly) collinear; choose points spread over the road surface",
                    a + 1,
                    b + 1,
                    c + 1
                ));
            }
        }
        let (ts, ns) = normalise(src);
        let (td, nd) = normalise(dst);
        // A^T A of the DLT system, accumulated row by row.
        let mut ata = [[0.0f64; 9]; 9];
        for (p, q) in ns.iter().zip(&nd) {
            let (x, y, u, v) = (p[0], p[1], q[0], q[1]);
            let rows = [
                [-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u],
                [0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v],
            ];
            for r in rows {
                for i in 0..9 {
                    for j in 0..9 {
                        ata[i][j] += r[i] * r[j];
                    }
                }
            }
        }
        let (values, vectors) = jacobi_eigen(ata);
        let smallest = (0..9)
            .min_by(|&a, &b| values[a].total_cmp(&values[b]))
            .expect("9 values");
        let h: [f64; 9] = std::array::from_fn(|i| vectors[i][smallest]);
        // Denormalise: H = Td^-1 * Hn * Ts.
        let h = mul(&mul(&invert_similarity(&td), &h), &ts);
        let scale = if h[8].abs() > 1e-12 { h[8] } else { 1.0 };
        let h = Homography(h.map(|v| v / scale));
        if h.0.iter().any(|v| !v.is_finite()) {
            return Err("the points do not determine a homography".into());
        }
        Ok(h)
    }

    /// Maps a point; `None` where it lies on or beyond the horizon (`w <= 0`).
    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let h = &self.0;
        let w = h[6] * x + h[7] * y + h[8];
        if w <= 1e-12 {
            return None;
        }
        Some((
            (h[0] * x + h[1] * y + h[2]) / w,
            (h[3] * x + h[4] * y + h[5]) / w,
        ))
    }

    /// The third row's value at a point: positive in front of the horizon.
    pub fn w(&self, x: f64, y: f64) -> f64 {
        self.0[6] * x + self.0[7] * y + self.0[8]
    }

    /// The same map with `w` negated everywhere (both describe the same projective map).
    pub fn flipped(&self) -> Self {
        Homography(self.0.map(|v| -v))
    }
}

/// Indices of three points that are (nearly) collinear, relative to the spread of the points.
fn collinear_triple(pts: &[[f64; 2]]) -> Option<(usize, usize, usize)> {
    let spread = pts
        .iter()
        .flat_map(|p| pts.iter().map(move |q| (p[0] - q[0]).hypot(p[1] - q[1])))
        .fold(0.0f64, f64::max);
    let n = pts.len();
    for a in 0..n {
        for b in a + 1..n {
            for c in b + 1..n {
                let area = ((pts[b][0] - pts[a][0]) * (pts[c][1] - pts[a][1])
                    - (pts[c][0] - pts[a][0]) * (pts[b][1] - pts[a][1]))
                    .abs();
                if n == 4 && area <= 1e-3 * spread * spread {
                    return Some((a, b, c));
                }
            }
        }
    }
    if spread <= 0.0 { Some((0, 1, 2)) } else { None }
}

/// Similarity transform moving the centroid to the origin and the mean distance to sqrt(2).
fn normalise(pts: &[[f64; 2]]) -> ([f64; 9], Vec<[f64; 2]>) {
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p[0]).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p[1]).sum::<f64>() / n;
    let mean = pts
        .iter()
        .map(|p| (p[0] - cx).hypot(p[1] - cy))
        .sum::<f64>()
        / n;
    let s = std::f64::consts::SQRT_2 / mean.max(1e-12);
    let t = [s, 0.0, -s * cx, 0.0, s, -s * cy, 0.0, 0.0, 1.0];
    (
        t,
        pts.iter()
            .map(|p| [s * (p[0] - cx), s * (p[1] - cy)])
            .collect(),
    )
}

fn invert_similarity(t: &[f64; 9]) -> [f64; 9] {
    let s = t[0];
    [
        1.0 / s,
        0.0,
        -t[2] / s,
        0.0,
        1.0 / s,
        -t[5] / s,
        0.0,
        0.0,
        1.0,
    ]
}

fn mul(a: &[f64; 9], b: &[f64; 9]) -> [f64; 9] {
    std::array::from_fn(|k| {
        let (i, j) = (k / 3, k % 3);
        (0..3).map(|m| a[i * 3 + m] * b[m * 3 + j]).sum()
    })
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: `(values, vectors)`
/// with eigenvectors in the columns.
fn jacobi_eigen(mut a: [[f64; 9]; 9]) -> ([f64; 9], [[f64; 9]; 9]) {
    let mut v = [[0.0f64; 9]; 9];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..9)
            .flat_map(|i| (0..9).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..9 {
            for q in p + 1..9 {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..9 {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..9 {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    (std::array::from_fn(|i| a[i][i]), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_points_map_exactly_and_round_trip() {
        let img = [
            [415.55, 267.22],
            [864.45, 267.22],
            [720.63, 67.78],
            [559.37, 67.78],
        ];
        let world = [[-7.0, 20.0], [7.0, 20.0], [7.0, 80.0], [-7.0, 80.0]];
        let h = Homography::fit(&img, &world).unwrap();
        for (p, q) in img.iter().zip(&world) {
            let (x, y) = h.apply(p[0], p[1]).unwrap();
            assert!(
                (x - q[0]).abs() < 1e-6 && (y - q[1]).abs() < 1e-6,
                "{p:?} -> ({x}, {y})"
            );
        }
        let back = Homography::fit(&world, &img).unwrap();
        let (x, y) = h.apply(640.0, 200.0).unwrap();
        let (u, v) = back.apply(x, y).unwrap();
        assert!((u - 640.0).abs() < 1e-6 && (v - 200.0).abs() < 1e-6);
    }

    #[test]
    fn least_squares_with_more_points_recovers_a_known_map() {
        let truth = Homography([2.0, 0.1, 5.0, -0.2, 1.5, 3.0, 0.001, 0.002, 1.0]);
        let src: Vec<[f64; 2]> = [
            [0.0, 0.0],
            [100.0, 0.0],
            [100.0, 80.0],
            [0.0, 80.0],
            [50.0, 40.0],
            [20.0, 70.0],
        ]
        .to_vec();
        let dst: Vec<[f64; 2]> = src
            .iter()
            .map(|p| {
                let (x, y) = truth.apply(p[0], p[1]).unwrap();
                [x, y]
            })
            .collect();
        let h = Homography::fit(&src, &dst).unwrap();
        for (a, b) in h.0.iter().zip(&truth.0) {
            assert!((a - b).abs() < 1e-6, "{:?}", h.0);
        }
    }

    #[test]
    fn degenerate_inputs_are_refused() {
        let line = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [5.0, 0.0]];
        let world = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!(
            Homography::fit(&line, &world)
                .unwrap_err()
                .contains("collinear")
        );
        assert!(
            Homography::fit(&world[..3], &world[..3])
                .unwrap_err()
                .contains("at least 4")
        );
        assert!(Homography::fit(&world, &world[..3]).is_err());
    }
}
