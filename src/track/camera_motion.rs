//! Camera motion between analysed frames, for trackers on moving cameras (BoT-SORT's global
//! motion compensation, without OpenCV): the frame is reduced to a small grey image, patches
//! on a grid away from the detected objects are matched in the next frame by block matching
//! (sum of absolute differences, refined to a tenth of a pixel), coarse to fine (on the image
//! at half size, then around that motion), and a similarity transform (shift, rotation,
//! zoom) is fitted to the patches' motions with RANSAC. The tracker moves its predicted boxes
//! by it before matching them to the new detections.

use image::RgbImage;

use crate::geometry::BBox;

/// The grey image is at most this wide (the frame is averaged over square blocks).
const WORK_WIDTH: u32 = 320;
/// Grid of patches over the grey image.
const GRID: (usize, usize) = (8, 6);
/// Half the side of a patch, grey pixels.
const PATCH_RADIUS: i64 = 6;
/// How far a patch is searched for, grey pixels either way: on the half-size grey image
/// without a guess (so up to twice this on the grey image), then around that guess.
const SEARCH_RADIUS: i64 = 10;
/// How far around that guess, grey pixels either way.
const REFINE_RADIUS: i64 = 3;
/// Patches flatter than this (mean absolute deviation of their pixels) match anywhere.
const MIN_TEXTURE: f64 = 4.0;
/// A patch agrees with a transform when it moves within this many grey pixels of it.
const INLIER_DISTANCE: f64 = 0.75;
/// Hypotheses per patch in the robust fit.
const PARTNERS: usize = 8;
/// Fewer agreeing patches than this leave the motion unknown.
const MIN_INLIERS: usize = 8;

/// A patch's centre in the previous frame and where it is in the current one.
type PatchMotion = ((f64, f64), (f64, f64));

/// `p' = [[a, -b], [b, a]] p + (tx, ty)` in frame pixels: where a point of the previous
/// frame is in the current one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    pub const IDENTITY: Similarity = Similarity {
        a: 1.0,
        b: 0.0,
        tx: 0.0,
        ty: 0.0,
    };

    /// Where the point `(x, y)` moves.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        (
            self.a * x - self.b * y + self.tx,
            self.b * x + self.a * y + self.ty,
        )
    }

    /// How a direction (a velocity) turns and stretches: the transform without its shift.
    pub fn rotate(&self, x: f64, y: f64) -> (f64, f64) {
        (self.a * x - self.b * y, self.b * x + self.a * y)
    }

    /// The zoom factor.
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }

    /// The least-squares similarity taking each `from` point to its `to` point.
    fn fit(pairs: &[PatchMotion]) -> Option<Similarity> {
        let n = pairs.len() as f64;
        if pairs.len() < 2 {
            return None;
        }
        let mean = |f: &dyn Fn(&PatchMotion) -> f64| pairs.iter().map(f).sum::<f64>() / n;
        let (fx, fy) = (mean(&|p| p.0.0), mean(&|p| p.0.1));
        let (gx, gy) = (mean(&|p| p.1.0), mean(&|p| p.1.1));
        // Centred, the shift drops out: a = Σ(x x' + y y') / Σ|p|², b = Σ(x y' - y x') / Σ|p|².
        let (mut aa, mut bb, mut norm) = (0.0, 0.0, 0.0);
        for &((x, y), (u, v)) in pairs {
            let (x, y, u, v) = (x - fx, y - fy, u - gx, v - gy);
            aa += x * u + y * v;
            bb += x * v - y * u;
            norm += x * x + y * y;
        }
        if norm < 1e-9 {
            return None;
        }
        let (a, b) = (aa / norm, bb / norm);
        Some(Similarity {
            a,
            b,
            tx: gx - (a * fx - b * fy),
            ty: gy - (b * fx + a * fy),
        })
    }
}

/// A frame reduced to grey at [`WORK_WIDTH`] or less.
struct Grey {
    width: i64,
    height: i64,
    pixels: Vec<u8>,
    /// Frame pixels per grey pixel.
    factor: u32,
}

impl Grey {
    /// Each grey pixel is the mean luma of its block of the frame, sampled every
    /// `factor / 2` pixels each way (every pixel for small blocks).
    fn from_frame(image: &RgbImage) -> Grey {
        let factor = image.width().div_ceil(WORK_WIDTH).max(1);
        let (width, height) = (image.width() / factor, image.height() / factor);
        let step = (factor / 2).max(1) as usize;
        let (factor_us, stride) = (factor as usize, 3 * image.width() as usize);
        let raw = image.as_raw();
        let mut sums = vec![0u32; width as usize];
        let mut pixels = Vec::with_capacity((width * height) as usize);
        for gy in 0..height as usize {
            sums.fill(0);
            for y in (gy * factor_us..(gy + 1) * factor_us).step_by(step) {
                let row = &raw[y * stride..(y + 1) * stride];
                for (gx, sum) in sums.iter_mut().enumerate() {
                    for x in (gx * factor_us..(gx + 1) * factor_us).step_by(step) {
                        let [r, g, b] = [row[3 * x], row[3 * x + 1], row[3 * x + 2]];
                        *sum += 77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b);
                    }
                }
            }
            let samples = (factor_us.div_ceil(step) * factor_us.div_ceil(step)) as u32;
            pixels.extend(sums.iter().map(|&sum| (sum / (256 * samples)) as u8));
        }
        Grey {
            width: width.into(),
            height: height.into(),
            pixels,
            factor,
        }
    }

    /// The `2 * PATCH_RADIUS + 1` pixels of row `y` centred on column `x`.
    fn patch_row(&self, x: i64, y: i64) -> &[u8] {
        let start = (y * self.width + x - PATCH_RADIUS) as usize;
        &self.pixels[start..start + (2 * PATCH_RADIUS + 1) as usize]
    }

    fn at(&self, x: i64, y: i64) -> i32 {
        i32::from(self.pixels[(y * self.width + x) as usize])
    }

    /// Mean absolute deviation of the patch around `(cx, cy)`.
    fn texture(&self, cx: i64, cy: i64) -> f64 {
        let values: Vec<i32> = patch_offsets()
            .map(|(dx, dy)| self.at(cx + dx, cy + dy))
            .collect();
        let mean = values.iter().sum::<i32>() as f64 / values.len() as f64;
        values.iter().map(|&v| (v as f64 - mean).abs()).sum::<f64>() / values.len() as f64
    }

    /// Sum of absolute differences between this image's patch at `(cx, cy)` and `other`'s at
    /// `(cx + dx, cy + dy)`.
    fn sad(&self, other: &Grey, (cx, cy): (i64, i64), (dx, dy): (i64, i64)) -> i64 {
        (-PATCH_RADIUS..=PATCH_RADIUS)
            .map(|oy| {
                let (here, there) = (
                    self.patch_row(cx, cy + oy),
                    other.patch_row(cx + dx, cy + dy + oy),
                );
                here.iter()
                    .zip(there)
                    .map(|(&p, &q)| u32::from(p.abs_diff(q)))
                    .sum::<u32>()
            })
            .map(i64::from)
            .sum()
    }

    /// Where the patch at `centre` went in `next`, as a shift to a fraction of a pixel,
    /// searched within `radius` of the shift `around`: if the best match lies inside that
    /// area (on its edge the true one may lie beyond) and the whole search stays in both
    /// images.
    fn track_patch(
        &self,
        next: &Grey,
        centre: (i64, i64),
        around: (i64, i64),
        radius: i64,
    ) -> Option<(f64, f64)> {
        let reach = PATCH_RADIUS + radius;
        let inside = |image: &Grey, (x, y): (i64, i64), r: i64| {
            x - r >= 0 && y - r >= 0 && x + r < image.width && y + r < image.height
        };
        let moved = (centre.0 + around.0, centre.1 + around.1);
        if !inside(self, centre, PATCH_RADIUS) || !inside(next, moved, reach) {
            return None;
        }
        let side = 2 * radius + 1;
        let costs: Vec<i64> = (0..side * side)
            .map(|i| (around.0 + i % side - radius, around.1 + i / side - radius))
            .map(|d| self.sad(next, centre, d))
            .collect();
        let best = (0..costs.len()).min_by_key(|&i| costs[i])?;
        let (bx, by) = (best as i64 % side, best as i64 / side);
        if bx == 0 || by == 0 || bx == side - 1 || by == side - 1 {
            return None;
        }
        let cost = |x: i64, y: i64| costs[(y * side + x) as usize] as f64;
        let refine = |before: f64, at: f64, after: f64| {
            let curvature = before - 2.0 * at + after;
            if curvature > 0.0 {
                0.5 * (before - after) / curvature
            } else {
                0.0
            }
        };
        let fx = refine(cost(bx - 1, by), cost(bx, by), cost(bx + 1, by));
        let fy = refine(cost(bx, by - 1), cost(bx, by), cost(bx, by + 1));
        Some((
            (around.0 + bx - radius) as f64 + fx,
            (around.1 + by - radius) as f64 + fy,
        ))
    }

    /// The image at half the size (each pixel the mean of a 2x2 block).
    fn half(&self) -> Grey {
        let (width, height) = (self.width / 2, self.height / 2);
        let mut pixels = Vec::with_capacity((width * height) as usize);
        for y in 0..height {
            for x in 0..width {
                let sum = self.at(2 * x, 2 * y)
                    + self.at(2 * x + 1, 2 * y)
                    + self.at(2 * x, 2 * y + 1)
                    + self.at(2 * x + 1, 2 * y + 1);
                pixels.push(((sum + 2) / 4) as u8);
            }
        }
        Grey {
            width,
            height,
            pixels,
            factor: 2 * self.factor,
        }
    }

    /// The similarity the background patches' motions to `next` agree on, each patch
    /// searched around where `guess` (in this image's pixels) puts it.
    fn motion_to(
        &self,
        next: &Grey,
        objects: &[BBox],
        guess: Option<Similarity>,
        radius: i64,
    ) -> Option<Similarity> {
        let margin = PATCH_RADIUS + radius;
        let (usable_w, usable_h) = (self.width - 2 * margin, self.height - 2 * margin);
        if usable_w <= 0 || usable_h <= 0 {
            return None;
        }
        let factor = f64::from(self.factor);
        let on_object = |x: i64, y: i64| {
            let (fx, fy) = ((x as f64 + 0.5) * factor, (y as f64 + 0.5) * factor);
            let reach = (PATCH_RADIUS as f64) * factor;
            objects.iter().any(|b| {
                fx + reach > f64::from(b.x1)
                    && fx - reach < f64::from(b.x2)
                    && fy + reach > f64::from(b.y1)
                    && fy - reach < f64::from(b.y2)
            })
        };
        let mut pairs = Vec::new();
        for row in 0..GRID.1 {
            for column in 0..GRID.0 {
                let x = margin + (usable_w * (2 * column as i64 + 1)) / (2 * GRID.0 as i64);
                let y = margin + (usable_h * (2 * row as i64 + 1)) / (2 * GRID.1 as i64);
                if on_object(x, y) || self.texture(x, y) < MIN_TEXTURE {
                    continue;
                }
                let (px, py) = (x as f64, y as f64);
                let around = guess.map_or((0, 0), |g| {
                    let (gx, gy) = g.apply(px, py);
                    ((gx - px).round() as i64, (gy - py).round() as i64)
                });
                if let Some((dx, dy)) = self.track_patch(next, (x, y), around, radius) {
                    pairs.push(((px, py), (px + dx, py + dy)));
                }
            }
        }
        robust_fit(&pairs)
    }
}

/// Where a patch's pixels are, relative to its centre.
fn patch_offsets() -> impl Iterator<Item = (i64, i64)> {
    (-PATCH_RADIUS..=PATCH_RADIUS).flat_map(|y| (-PATCH_RADIUS..=PATCH_RADIUS).map(move |x| (x, y)))
}

/// A frame's grey image and the same at half size.
struct Pyramid {
    grey: Grey,
    half: Grey,
}

/// Estimates the camera's motion from one analysed frame to the next.
#[derive(Default)]
pub struct CameraMotion {
    previous: Option<Pyramid>,
}

impl CameraMotion {
    pub fn new() -> Self {
        Self::default()
    }

    /// The motion from the previous frame given to `image`, measured on the background
    /// (patches clear of the `objects`' boxes in the previous frame); `None` for the first
    /// frame, a frame of another size, or when too few patches agree on one motion.
    pub fn estimate(&mut self, image: &RgbImage, objects: &[BBox]) -> Option<Similarity> {
        let grey = Grey::from_frame(image);
        let half = grey.half();
        let Pyramid {
            grey: previous,
            half: previous_half,
        } = self.previous.replace(Pyramid { grey, half })?;
        let Pyramid {
            grey: current,
            half: current_half,
        } = self.previous.as_ref().expect("just stored");
        if (previous.width, previous.height, previous.factor)
            != (current.width, current.height, current.factor)
        {
            return None;
        }
        // Coarse to fine: the motion on the half-size images (up to twice the search
        // radius on the grey image), then refined around it on the grey images.
        let coarse = previous_half.motion_to(current_half, objects, None, SEARCH_RADIUS);
        let fine = match coarse {
            Some(coarse) => {
                previous.motion_to(current, objects, Some(rescale(coarse, 2.0)), REFINE_RADIUS)
            }
            None => previous.motion_to(current, objects, None, SEARCH_RADIUS),
        };
        Some(rescale(fine?, f64::from(previous.factor)))
    }
}

/// A transform in the pixels of an image `factor` times smaller, in the larger image's
/// pixels (pixel centres at `(p + 0.5) * factor`).
fn rescale(grey: Similarity, factor: f64) -> Similarity {
    // A large-image point p is small-image point p / factor - 0.5; it moves to q there and
    // back to (q + 0.5) * factor: the linear part stays, the shift is rescaled and corrected
    // for the half-pixel offset. (Between two grey images, whose coordinates are pixel
    // indices rather than positions, this is off by half a small pixel: close enough for the
    // coarse level's guess.)
    let (sx, sy) = grey.rotate(-0.5, -0.5);
    Similarity {
        tx: (grey.tx + sx + 0.5) * factor,
        ty: (grey.ty + sy + 0.5) * factor,
        ..grey
    }
}

/// The similarity most patch motions agree with (RANSAC over pairs: each patch with about
/// [`PARTNERS`] others spread over the grid), refitted to those that agree; `None` when fewer
/// than [`MIN_INLIERS`] do.
fn robust_fit(pairs: &[PatchMotion]) -> Option<Similarity> {
    let agreeing = |model: &Similarity| -> Vec<PatchMotion> {
        pairs
            .iter()
            .filter(|((x, y), (u, v))| {
                let (px, py) = model.apply(*x, *y);
                (px - u).powi(2) + (py - v).powi(2) <= INLIER_DISTANCE * INLIER_DISTANCE
            })
            .copied()
            .collect()
    };
    let mut best: Vec<PatchMotion> = Vec::new();
    let stride = (pairs.len() / PARTNERS).max(1);
    for i in 0..pairs.len() {
        for j in (i + 1..pairs.len()).step_by(stride) {
            let Some(model) = Similarity::fit(&[pairs[i], pairs[j]]) else {
                continue;
            };
            let inliers = agreeing(&model);
            if inliers.len() > best.len() {
                best = inliers;
            }
        }
    }
    if best.len() < MIN_INLIERS {
        return None;
    }
    let refined = Similarity::fit(&best)?;
    Similarity::fit(&agreeing(&refined)).or(Some(refined))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured scene: two octaves of value noise (pseudo-random levels on lattices of 7
    /// and 19 pixels, interpolated bilinearly), defined at every real point.
    fn scene(x: f64, y: f64) -> f64 {
        let level = |i: i64, j: i64, seed: u64| {
            let mut h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
                ^ seed;
            h ^= h >> 29;
            h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 32;
            (h % 256) as f64
        };
        let octave = |cell: f64, seed: u64| {
            let (u, v) = (x / cell, y / cell);
            let (i, j) = (u.floor() as i64, v.floor() as i64);
            let (fu, fv) = (u - u.floor(), v - v.floor());
            let top = level(i, j, seed) * (1.0 - fu) + level(i + 1, j, seed) * fu;
            let bottom = level(i, j + 1, seed) * (1.0 - fu) + level(i + 1, j + 1, seed) * fu;
            top * (1.0 - fv) + bottom * fv
        };
        0.6 * octave(7.0, 1) + 0.4 * octave(19.0, 2)
    }

    /// A 640x360 frame whose pixel `p` shows the scene at `look(p)`.
    fn frame(look: impl Fn(f64, f64) -> (f64, f64)) -> RgbImage {
        RgbImage::from_fn(640, 360, |x, y| {
            let (sx, sy) = look(f64::from(x) + 0.5, f64::from(y) + 0.5);
            let v = scene(sx, sy).round() as u8;
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn a_pan_is_measured_to_a_fraction_of_a_pixel() {
        let mut camera = CameraMotion::new();
        assert_eq!(camera.estimate(&frame(|x, y| (x, y)), &[]), None);
        // The camera turns: what was at p is now at p + (7.3, -4.6).
        let motion = camera
            .estimate(&frame(|x, y| (x - 7.3, y + 4.6)), &[])
            .expect("a textured pan is measured");
        assert!(
            (motion.tx - 7.3).abs() < 0.3 && (motion.ty + 4.6).abs() < 0.3,
            "{motion:?}"
        );
        assert!(
            (motion.a - 1.0).abs() < 2e-3 && motion.b.abs() < 2e-3,
            "{motion:?}"
        );
    }

    /// A fast pan (34 px at 640 wide: 17 grey pixels, beyond the search radius on the grey
    /// image) is found on the half-size image first and refined there.
    #[test]
    fn a_fast_pan_is_found_coarse_to_fine() {
        let mut camera = CameraMotion::new();
        camera.estimate(&frame(|x, y| (x, y)), &[]);
        let motion = camera
            .estimate(&frame(|x, y| (x - 34.0, y - 14.0)), &[])
            .expect("a fast pan is measured");
        assert!(
            (motion.tx - 34.0).abs() < 0.3 && (motion.ty - 14.0).abs() < 0.3,
            "{motion:?}"
        );
    }

    #[test]
    fn a_zoom_and_a_roll_are_measured() {
        // 3 % zoom and a 1 degree roll about the image centre, plus a shift.
        let (zoom, angle) = (1.03, 1f64.to_radians());
        let truth = Similarity {
            a: zoom * angle.cos(),
            b: zoom * angle.sin(),
            tx: 0.0,
            ty: 0.0,
        };
        let (cx, cy) = truth.apply(320.0, 180.0);
        let truth = Similarity {
            tx: 320.0 - cx + 4.0,
            ty: 180.0 - cy - 2.0,
            ..truth
        };
        // The pixel at p shows what was at truth⁻¹(p).
        let inverse = |x: f64, y: f64| {
            let (u, v) = (x - truth.tx, y - truth.ty);
            let norm = truth.a * truth.a + truth.b * truth.b;
            (
                (truth.a * u + truth.b * v) / norm,
                (truth.a * v - truth.b * u) / norm,
            )
        };
        let mut camera = CameraMotion::new();
        camera.estimate(&frame(|x, y| (x, y)), &[]);
        let motion = camera.estimate(&frame(inverse), &[]).expect("measured");
        assert!((motion.a - truth.a).abs() < 3e-3, "{motion:?} vs {truth:?}");
        assert!((motion.b - truth.b).abs() < 3e-3, "{motion:?} vs {truth:?}");
        for (x, y) in [(40.0, 30.0), (600.0, 330.0), (320.0, 180.0)] {
            let (ex, ey) = truth.apply(x, y);
            let (mx, my) = motion.apply(x, y);
            assert!(
                (ex - mx).hypot(ey - my) < 0.5,
                "at ({x}, {y}): {motion:?} vs {truth:?}"
            );
        }
    }

    #[test]
    fn objects_moving_against_the_background_do_not_count_and_flat_frames_give_nothing() {
        // The background stays; a large object (a third of the frame) moves 9 pixels right.
        let object = BBox::new(200.0, 100.0, 440.0, 260.0);
        let inside = |x: f64, y: f64| (200.0..440.0).contains(&x) && (100.0..260.0).contains(&y);
        let mut camera = CameraMotion::new();
        camera.estimate(&frame(|x, y| (x, y)), &[object]);
        let moved = frame(|x, y| if inside(x, y) { (x - 9.0, y) } else { (x, y) });
        let motion = camera.estimate(&moved, &[object]).expect("measured");
        assert!(motion.tx.abs() < 0.3 && motion.ty.abs() < 0.3, "{motion:?}");
        let flat = RgbImage::from_pixel(640, 360, image::Rgb([90, 90, 90]));
        let mut camera = CameraMotion::new();
        camera.estimate(&flat, &[]);
        assert_eq!(camera.estimate(&flat, &[]), None);
    }
}
