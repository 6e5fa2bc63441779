//! Axis-aligned boxes in pixel coordinates, shared by detection, tracking and evaluation.

use serde::{Deserialize, Serialize};

/// A box given by its top-left and bottom-right corners.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    /// From corners.
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    /// From top-left corner and size (MOT `left, top, width, height`).
    pub fn from_ltwh(left: f32, top: f32, width: f32, height: f32) -> Self {
        Self::new(left, top, left + width, top + height)
    }

    /// From centre and size.
    pub fn from_cxcywh(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        Self::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
    }

    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    /// Area, zero for inverted boxes.
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// Centre point.
    pub fn centre(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    /// Bottom-centre point: where an object touches the ground.
    pub fn bottom_centre(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, self.y2)
    }

    /// Area of the overlap with `other`.
    pub fn intersection(&self, other: &BBox) -> f32 {
        let w = self.x2.min(other.x2) - self.x1.max(other.x1);
        let h = self.y2.min(other.y2) - self.y1.max(other.y1);
        w.max(0.0) * h.max(0.0)
    }

    /// Intersection over union; 0 when both boxes are empty.
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = self.intersection(other);
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// The box clipped to `[0, width] x [0, height]`.
    pub fn clipped(&self, width: f32, height: f32) -> BBox {
        BBox::new(
            self.x1.clamp(0.0, width),
            self.y1.clamp(0.0, height),
            self.x2.clamp(0.0, width),
            self.y2.clamp(0.0, height),
        )
    }

    /// True when the image border cuts the box's bottom or a side, which moves its
    /// [bottom centre](BBox::bottom_centre); a cut top leaves that point where it is. An edge
    /// counts as cut within `margin` pixels of the border, or within `fraction` of the box's
    /// own width (sides) or height (bottom) where that is more: a detector's box edges
    /// scatter in proportion to its size, so a large box that the border cuts may end well
    /// inside it.
    pub fn ground_point_cut(&self, width: f32, height: f32, margin: f32, fraction: f32) -> bool {
        let side = margin.max(fraction * self.width());
        let bottom = margin.max(fraction * self.height());
        self.x1 <= side || self.x2 >= width - side || self.y2 >= height - bottom
    }
}

/// Whether `(x, y)` lies inside `polygon` (even-odd rule; vertices in order, either winding).
pub fn point_in_polygon<T: Copy + Into<f64>>(polygon: &[[T; 2]], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = polygon.len().wrapping_sub(1);
    for (i, vertex) in polygon.iter().enumerate() {
        let (xi, yi) = (vertex[0].into(), vertex[1].into());
        let (xj, yj) = (polygon[j][0].into(), polygon[j][1].into());
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        let b = BBox::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 30.0, 30.0)), 0.0);
        assert_eq!(BBox::default().iou(&BBox::default()), 0.0);
    }

    #[test]
    fn conversions_and_clipping() {
        let b = BBox::from_ltwh(10.0, 20.0, 30.0, 40.0);
        assert_eq!(b, BBox::new(10.0, 20.0, 40.0, 60.0));
        assert_eq!(BBox::from_cxcywh(25.0, 40.0, 30.0, 40.0), b);
        assert_eq!(b.bottom_centre(), (25.0, 60.0));
        assert_eq!(
            BBox::new(-5.0, 2.0, 700.0, 9.0).clipped(640.0, 480.0),
            BBox::new(0.0, 2.0, 640.0, 9.0)
        );
        assert!(b.ground_point_cut(40.0, 100.0, 0.5, 0.0));
        assert!(b.ground_point_cut(100.0, 61.0, 2.0, 0.0));
        assert!(!b.ground_point_cut(100.0, 100.0, 2.0, 0.0));
        // A tall box cut only at the top keeps its ground point.
        assert!(!BBox::new(10.0, 0.0, 40.0, 60.0).ground_point_cut(100.0, 100.0, 2.0, 0.0));
        // 10 px from the left border: clear of a 2 px margin, but within a third of its
        // 30 px width; 40 px from the bottom, a fraction of its 40 px height that reaches it.
        assert!(b.ground_point_cut(100.0, 100.0, 2.0, 1.0 / 3.0));
        assert!(!b.ground_point_cut(100.0, 100.0, 2.0, 0.3));
        assert!(b.ground_point_cut(1000.0, 100.0, 2.0, 1.0));
    }
}
