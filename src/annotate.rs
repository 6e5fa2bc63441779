//! Drawing results into frames: class-coloured boxes, labels (class, confidence, track id,
//! speed) in a built-in 8x8 bitmap font, short motion trails, and the counting lines and
//! areas with their running counts.

use std::collections::{HashMap, VecDeque};

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::geometry::BBox;
use crate::zones::{ZoneCounts, ZonesConfig};

/// Counting lines are drawn in yellow, counting areas in cyan.
const LINE_COLOUR: Rgb<u8> = Rgb([0xff, 0xd7, 0x00]);
const AREA_COLOUR: Rgb<u8> = Rgb([0x00, 0xe5, 0xff]);

/// Ultralytics' 20-colour palette, indexed by class id.
const PALETTE: [[u8; 3]; 20] = [
    [0xff, 0x38, 0x38],
    [0xff, 0x9d, 0x97],
    [0xff, 0x70, 0x1f],
    [0xff, 0xb2, 0x1d],
    [0xcf, 0xd2, 0x31],
    [0x48, 0xf9, 0x0a],
    [0x92, 0xcc, 0x17],
    [0x3d, 0xdb, 0x86],
    [0x1a, 0x93, 0x34],
    [0x00, 0xd4, 0xbb],
    [0x2c, 0x99, 0xa8],
    [0x00, 0xc2, 0xff],
    [0x34, 0x45, 0x93],
    [0x64, 0x73, 0xff],
    [0x00, 0x18, 0xec],
    [0x84, 0x38, 0xff],
    [0x52, 0x00, 0x85],
    [0xcb, 0x38, 0xff],
    [0xff, 0x95, 0xc8],
    [0xff, 0x37, 0xc7],
];

/// Points kept per trail.
const TRAIL_LENGTH: usize = 30;

/// One object to draw.
#[derive(Debug, Clone)]
pub struct Annotation {
    pub bbox: BBox,
    pub class_id: usize,
    pub class_name: String,
    pub score: f32,
    pub track_id: Option<u64>,
    /// Speed in the configured unit, with the unit's label.
    pub speed: Option<(f32, &'static str)>,
}

impl Annotation {
    /// A detection with no track or speed yet.
    pub fn from_detection(d: &crate::detect::Detection, class_name: &str) -> Self {
        Self {
            bbox: d.bbox,
            class_id: d.class_id,
            class_name: class_name.to_string(),
            score: d.score,
            track_id: None,
            speed: None,
        }
    }

    /// `#12 car 0.87 54 km/h`.
    pub fn label(&self) -> String {
        let mut label = String::new();
        if let Some(id) = self.track_id {
            label.push_str(&format!("#{id} "));
        }
        label.push_str(&format!("{} {:.2}", self.class_name, self.score));
        if let Some((speed, unit)) = self.speed {
            label.push_str(&format!(" {speed:.0} {unit}"));
        }
        label
    }
}

/// Draws annotations and remembers each track's recent positions for its trail.
pub struct Annotator {
    trails: HashMap<u64, VecDeque<(f32, f32)>>,
}

impl Default for Annotator {
    fn default() -> Self {
        Self::new()
    }
}

impl Annotator {
    pub fn new() -> Self {
        Self {
            trails: HashMap::new(),
        }
    }

    /// Draws `annotations` into `image`.
    pub fn draw(&mut self, image: &mut RgbImage, annotations: &[Annotation]) {
        let scale = text_scale(image);
        let thickness = scale.max(1) as i32 + 1;
        let live: std::collections::HashSet<u64> =
            annotations.iter().filter_map(|a| a.track_id).collect();
        self.trails.retain(|id, _| live.contains(id));
        for a in annotations {
            let colour = Rgb(PALETTE[a.class_id % PALETTE.len()]);
            if let Some(id) = a.track_id {
                let trail = self.trails.entry(id).or_default();
                trail.push_back(a.bbox.bottom_centre());
                if trail.len() > TRAIL_LENGTH {
                    trail.pop_front();
                }
                for (p, q) in trail.iter().zip(trail.iter().skip(1)) {
                    draw_line(image, *p, *q, colour, thickness);
                }
            }
            draw_rect(image, &a.bbox, colour, thickness);
            draw_label(
                image,
                &a.label(),
                a.bbox.x1 as i32,
                a.bbox.y1 as i32,
                colour,
                scale,
            );
        }
    }
}

/// Draws every counting line (labelled `name in N out M`, summed over classes) and area
/// (outline, labelled `name N`: distinct tracks that entered) of `zones` into `image`.
pub fn draw_zones(image: &mut RgbImage, zones: &ZonesConfig, counts: &ZoneCounts) {
    let scale = text_scale(image);
    let thickness = scale as i32 + 1;
    for line in &zones.lines {
        let (from, to) = ((line.from[0], line.from[1]), (line.to[0], line.to[1]));
        draw_line(image, from, to, LINE_COLOUR, thickness);
        let (inbound, outbound) = counts.lines.get(&line.name).map_or((0, 0), |classes| {
            classes
                .values()
                .fold((0, 0), |(i, o), c| (i + c.inbound, o + c.outbound))
        });
        let text = format!("{} in {inbound} out {outbound}", line.name);
        draw_label(
            image,
            &text,
            from.0 as i32,
            from.1 as i32,
            LINE_COLOUR,
            scale,
        );
    }
    for area in &zones.areas {
        let points: Vec<(f32, f32)> = area.polygon.iter().map(|p| (p[0], p[1])).collect();
        for (i, &p) in points.iter().enumerate() {
            draw_line(
                image,
                p,
                points[(i + 1) % points.len()],
                AREA_COLOUR,
                thickness,
            );
        }
        let entered: u64 = counts
            .areas
            .get(&area.name)
            .map_or(0, |classes| classes.values().sum());
        let text = format!("{} {entered}", area.name);
        draw_label(
            image,
            &text,
            points[0].0 as i32,
            points[0].1 as i32,
            AREA_COLOUR,
            scale,
        );
    }
}

/// Text scale: 1 below 720 rows, 2 up to 1440, then 3.
fn text_scale(image: &RgbImage) -> u32 {
    (image.height() / 720 + 1).min(3)
}

fn put(image: &mut RgbImage, x: i32, y: i32, colour: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < image.width() && (y as u32) < image.height() {
        image.put_pixel(x as u32, y as u32, colour);
    }
}

fn fill(image: &mut RgbImage, x0: i32, y0: i32, x1: i32, y1: i32, colour: Rgb<u8>) {
    let (w, h) = (image.width() as i32, image.height() as i32);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            image.put_pixel(x as u32, y as u32, colour);
        }
    }
}

fn draw_rect(image: &mut RgbImage, b: &BBox, colour: Rgb<u8>, t: i32) {
    let (x1, y1, x2, y2) = (b.x1 as i32, b.y1 as i32, b.x2 as i32, b.y2 as i32);
    fill(image, x1, y1, x2 + 1, y1 + t, colour);
    fill(image, x1, y2 - t + 1, x2 + 1, y2 + 1, colour);
    fill(image, x1, y1, x1 + t, y2 + 1, colour);
    fill(image, x2 - t + 1, y1, x2 + 1, y2 + 1, colour);
}

fn draw_line(image: &mut RgbImage, p: (f32, f32), q: (f32, f32), colour: Rgb<u8>, t: i32) {
    let steps = (q.0 - p.0).abs().max((q.1 - p.1).abs()).ceil().max(1.0) as i32;
    for i in 0..=steps {
        let f = i as f32 / steps as f32;
        let (x, y) = (p.0 + (q.0 - p.0) * f, p.1 + (q.1 - p.1) * f);
        fill(
            image,
            x as i32 - t / 2,
            y as i32 - t / 2,
            x as i32 + (t + 1) / 2,
            y as i32 + (t + 1) / 2,
            colour,
        );
    }
}

/// A filled label box above `(x, y)` (inside the box when there is no room above).
fn draw_label(image: &mut RgbImage, text: &str, x: i32, y: i32, colour: Rgb<u8>, scale: u32) {
    let s = scale as i32;
    let (w, h) = (text.chars().count() as i32 * 8 * s + 4, 8 * s + 4);
    let top = if y - h >= 0 { y - h } else { y };
    fill(image, x, top, x + w, top + h, colour);
    let luma = 0.299 * colour.0[0] as f32 + 0.587 * colour.0[1] as f32 + 0.114 * colour.0[2] as f32;
    let ink = if luma > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    };
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(c).unwrap_or([0; 8]);
        let gx = x + 2 + i as i32 * 8 * s;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    for dy in 0..s {
                        for dx in 0..s {
                            put(image, gx + col * s + dx, top + 2 + row as i32 * s + dy, ink);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotation(track_id: Option<u64>) -> Annotation {
        Annotation {
            bbox: BBox::new(20.0, 30.0, 60.0, 80.0),
            class_id: 2,
            class_name: "car".into(),
            score: 0.87,
            track_id,
            speed: Some((54.4, "km/h")),
        }
    }

    #[test]
    fn label_text() {
        assert_eq!(annotation(Some(12)).label(), "#12 car 0.87 54 km/h");
        assert_eq!(annotation(None).label(), "car 0.87 54 km/h");
    }

    #[test]
    fn draws_box_outline_and_label_in_class_colour() {
        let mut image = RgbImage::new(100, 100);
        Annotator::new().draw(&mut image, &[annotation(Some(1))]);
        let colour = Rgb(PALETTE[2]);
        assert_eq!(*image.get_pixel(40, 80), colour, "bottom edge");
        assert_eq!(*image.get_pixel(20, 55), colour, "left edge");
        assert_eq!(*image.get_pixel(40, 55), Rgb([0, 0, 0]), "inside untouched");
        // Label background above the box (the label is wider than the image), with dark ink
        // on this light colour.
        let label_pixels: Vec<_> = (20..100).map(|x| *image.get_pixel(x, 24)).collect();
        assert!(label_pixels.contains(&colour));
        assert!(label_pixels.contains(&Rgb([0, 0, 0])));
        assert!(
            label_pixels
                .iter()
                .all(|p| *p == colour || *p == Rgb([0, 0, 0]))
        );
    }

    #[test]
    fn zones_are_drawn_with_their_counts() {
        use crate::zones::{AreaConfig, LineConfig, LineCount};
        let zones = ZonesConfig {
            lines: vec![LineConfig {
                name: "stop".into(),
                from: [10.0, 150.0],
                to: [190.0, 150.0],
            }],
            areas: vec![AreaConfig {
                name: "pad".into(),
                polygon: vec![[20.0, 40.0], [180.0, 40.0], [180.0, 120.0], [20.0, 120.0]],
            }],
        };
        let draw = |counts: &ZoneCounts| {
            let mut image = RgbImage::new(200, 200);
            draw_zones(&mut image, &zones, counts);
            image
        };
        let none = draw(&ZoneCounts::default());
        assert_eq!(*none.get_pixel(100, 150), LINE_COLOUR, "the line");
        assert_eq!(
            *none.get_pixel(100, 120),
            AREA_COLOUR,
            "the area's bottom edge"
        );
        assert_eq!(
            *none.get_pixel(180, 80),
            AREA_COLOUR,
            "the area's right edge"
        );
        assert_eq!(*none.get_pixel(100, 80), Rgb([0, 0, 0]), "inside untouched");

        let mut counts = ZoneCounts::default();
        counts.lines.entry("stop".into()).or_default().insert(
            "car".into(),
            LineCount {
                inbound: 3,
                outbound: 1,
            },
        );
        counts
            .areas
            .entry("pad".into())
            .or_default()
            .insert("person".into(), 2);
        let counted = draw(&counts);
        // Only the two labels change: above the line's start, and at the area's first corner.
        let changed: Vec<(u32, u32)> = none
            .enumerate_pixels()
            .filter(|(x, y, p)| counted.get_pixel(*x, *y) != *p)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!changed.is_empty());
        assert!(
            changed
                .iter()
                .all(|&(_, y)| (138..150).contains(&y) || (28..52).contains(&y)),
            "{changed:?}"
        );
        assert!(changed.iter().any(|&(_, y)| y < 52), "the area's count");
        assert!(changed.iter().any(|&(_, y)| y >= 138), "the line's counts");
    }

    #[test]
    fn trails_follow_tracks_and_are_forgotten_with_them() {
        let mut annotator = Annotator::new();
        let mut image = RgbImage::new(200, 200);
        let mut a = annotation(Some(7));
        annotator.draw(&mut image, &[a.clone()]);
        a.bbox = BBox::new(120.0, 30.0, 160.0, 80.0);
        annotator.draw(&mut image, &[a]);
        assert_eq!(annotator.trails[&7].len(), 2);
        // The trail joins the two bottom centres along y = 80.
        assert_eq!(*image.get_pixel(90, 80), Rgb(PALETTE[2]));
        annotator.draw(&mut image, &[]);
        assert!(annotator.trails.is_empty());
    }
}
