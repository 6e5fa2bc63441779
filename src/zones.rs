//! Line crossing and zone counting, defined in the configuration file's `[zones]` section.
//!
//! A track's position is the bottom centre of its box (where the object touches the ground).
//! A **line** counts a track when that point moves from one side of the segment to the other
//! across the segment itself: `in` when it crosses from the right-hand side of the line
//! (looking from `from` to `to`, image coordinates) to the left-hand side, `out` the other way.
//! A point closer than [`LINE_MARGIN`] pixels to the line is on neither side, so jitter along
//! the line does not count. An **area** (polygon) counts each track once when it first enters,
//! and reports every enter and exit.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::geometry::{BBox, point_in_polygon};

/// Pixels either side of a counting line that belong to neither side.
pub const LINE_MARGIN: f32 = 2.0;

/// A crossing, entry or exit, as the event outputs report it (`"event": "line_crossing"`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ZoneEvent {
    /// A track crossed a counting line.
    LineCrossing {
        frame: u64,
        time: f64,
        line: String,
        id: u64,
        class: usize,
        direction: Direction,
    },
    /// A track entered a counting area.
    ZoneEnter {
        frame: u64,
        time: f64,
        zone: String,
        id: u64,
        class: usize,
    },
    /// A track left a counting area.
    ZoneExit {
        frame: u64,
        time: f64,
        zone: String,
        id: u64,
        class: usize,
    },
}

/// `[zones]` in the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZonesConfig {
    /// Counting lines (`[[zones.lines]]`).
    pub lines: Vec<LineConfig>,
    /// Counting areas (`[[zones.areas]]`).
    pub areas: Vec<AreaConfig>,
}

/// A counting line from `from` to `to`, in pixels of the source video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub name: String,
    pub from: [f32; 2],
    pub to: [f32; 2],
}

/// A counting area: a polygon of at least three points, in pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaConfig {
    pub name: String,
    pub polygon: Vec<[f32; 2]>,
}

impl ZonesConfig {
    /// Checks names are unique and shapes are usable.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for line in &self.lines {
            if !names.insert(line.name.as_str()) {
                return Err(format!("zone name '{}' is used twice", line.name));
            }
            crate::checks::finite_points(&format!("line '{}'", line.name), &[line.from, line.to])?;
            if line.from == line.to {
                return Err(format!("line '{}' has zero length", line.name));
            }
        }
        for area in &self.areas {
            if !names.insert(area.name.as_str()) {
                return Err(format!("zone name '{}' is used twice", area.name));
            }
            crate::checks::finite_points(&format!("area '{}'", area.name), &area.polygon)?;
            if area.polygon.len() < 3 {
                return Err(format!("area '{}' needs at least 3 points", area.name));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.areas.is_empty()
    }
}

/// Which way a track crossed a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

/// Crossings of one line by one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LineCount {
    #[serde(rename = "in")]
    pub inbound: u64,
    #[serde(rename = "out")]
    pub outbound: u64,
}

/// Totals per zone name and class name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ZoneCounts {
    pub lines: BTreeMap<String, BTreeMap<String, LineCount>>,
    /// Distinct tracks that entered each area.
    pub areas: BTreeMap<String, BTreeMap<String, u64>>,
}

impl ZoneCounts {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.areas.is_empty()
    }
}

/// One track's position in one frame, as the counter needs it.
#[derive(Debug, Clone, Copy)]
pub struct TrackPosition {
    pub id: u64,
    pub class: usize,
    pub bbox: BBox,
}

/// Counts line crossings and area visits over a stream.
#[derive(Debug, Default)]
pub struct ZoneCounter {
    config: ZonesConfig,
    /// Last determined side (+1/-1) of each track for each line.
    sides: HashMap<(usize, u64), f32>,
    /// Last anchor point of each track.
    last_point: HashMap<u64, [f32; 2]>,
    /// Tracks inside each area now.
    inside: Vec<HashSet<u64>>,
    /// Tracks that ever entered each area.
    visited: Vec<HashSet<u64>>,
    counts: ZoneCounts,
}

impl ZoneCounter {
    pub fn new(config: ZonesConfig) -> Self {
        let areas = config.areas.len();
        Self {
            config,
            inside: vec![HashSet::new(); areas],
            visited: vec![HashSet::new(); areas],
            ..Self::default()
        }
    }

    /// Updates with the tracks of one frame; returns what happened. `names` maps class ids to
    /// the names the totals are kept under.
    pub fn update(
        &mut self,
        frame: u64,
        time: f64,
        tracks: &[TrackPosition],
        names: &[String],
    ) -> Vec<ZoneEvent> {
        let mut events = Vec::new();
        if self.config.is_empty() {
            return events;
        }
        for track in tracks {
            let point = [(track.bbox.x1 + track.bbox.x2) / 2.0, track.bbox.y2];
            let previous = self.last_point.insert(track.id, point);
            let name = &names[track.class];
            for (index, line) in self.config.lines.iter().enumerate() {
                let distance = signed_distance(line, point);
                if distance.abs() <= LINE_MARGIN {
                    continue;
                }
                let side = distance.signum();
                let before = self.sides.insert((index, track.id), side);
                let crossed = before.is_some_and(|b| b != side)
                    && previous.is_some_and(|p| crosses_segment(line, p, point));
                if !crossed {
                    continue;
                }
                // Image y points down, so positive distance is the right-hand side.
                let direction = if side < 0.0 {
                    Direction::In
                } else {
                    Direction::Out
                };
                let count = self
                    .counts
                    .lines
                    .entry(line.name.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_default();
                match direction {
                    Direction::In => count.inbound += 1,
                    Direction::Out => count.outbound += 1,
                }
                events.push(ZoneEvent::LineCrossing {
                    frame,
                    time,
                    line: line.name.clone(),
                    id: track.id,
                    class: track.class,
                    direction,
                });
            }
            for (index, area) in self.config.areas.iter().enumerate() {
                let inside_now =
                    point_in_polygon(&area.polygon, f64::from(point[0]), f64::from(point[1]));
                let was_inside = self.inside[index].contains(&track.id);
                let zone = area.name.clone();
                let (id, class) = (track.id, track.class);
                if inside_now && !was_inside {
                    self.inside[index].insert(id);
                    if self.visited[index].insert(id) {
                        *self
                            .counts
                            .areas
                            .entry(zone.clone())
                            .or_default()
                            .entry(name.clone())
                            .or_default() += 1;
                    }
                    events.push(ZoneEvent::ZoneEnter {
                        frame,
                        time,
                        zone,
                        id,
                        class,
                    });
                } else if !inside_now && was_inside {
                    self.inside[index].remove(&id);
                    events.push(ZoneEvent::ZoneExit {
                        frame,
                        time,
                        zone,
                        id,
                        class,
                    });
                }
            }
        }
        events
    }

    /// Forgets a track that ended.
    pub fn forget(&mut self, id: u64) {
        self.last_point.remove(&id);
        self.sides.retain(|(_, track), _| *track != id);
        // Track ids are never reused: an ended track cannot enter again.
        for (inside, visited) in self.inside.iter_mut().zip(&mut self.visited) {
            inside.remove(&id);
            visited.remove(&id);
        }
    }

    /// Totals so far.
    pub fn counts(&self) -> &ZoneCounts {
        &self.counts
    }

    /// The lines and areas counted.
    pub fn config(&self) -> &ZonesConfig {
        &self.config
    }
}

/// Distance of `p` from the line through the segment, positive on the right-hand side of
/// `from → to` in image coordinates (y down).
fn signed_distance(line: &LineConfig, p: [f32; 2]) -> f32 {
    let (dx, dy) = (line.to[0] - line.from[0], line.to[1] - line.from[1]);
    let cross = dx * (p[1] - line.from[1]) - dy * (p[0] - line.from[0]);
    cross / (dx * dx + dy * dy).sqrt()
}

/// Whether the movement `a → b` intersects the line's segment.
fn crosses_segment(line: &LineConfig, a: [f32; 2], b: [f32; 2]) -> bool {
    let orient = |p: [f32; 2], q: [f32; 2], r: [f32; 2]| {
        (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    };
    let (c, d) = (line.from, line.to);
    let (o1, o2) = (orient(a, b, c), orient(a, b, d));
    let (o3, o4) = (orient(c, d, a), orient(c, d, b));
    o1 * o2 <= 0.0 && o3 * o4 <= 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ZonesConfig {
        toml::from_str(
            r#"
            [[lines]]
            name = "stop"
            from = [0.0, 100.0]
            to = [200.0, 100.0]
            [[areas]]
            name = "box"
            polygon = [[50.0, 150.0], [150.0, 150.0], [150.0, 250.0], [50.0, 250.0]]
            "#,
        )
        .unwrap()
    }

    /// A 20-pixel box whose bottom centre is at (x, y).
    fn at(id: u64, x: f32, y: f32) -> TrackPosition {
        TrackPosition {
            id,
            class: 0,
            bbox: BBox::new(x - 10.0, y - 20.0, x + 10.0, y),
        }
    }

    fn run(counter: &mut ZoneCounter, path: &[(u64, f32, f32)]) -> Vec<ZoneEvent> {
        let names = vec!["car".to_string()];
        path.iter()
            .enumerate()
            .flat_map(|(f, &(id, x, y))| {
                counter.update(f as u64, f as f64, &[at(id, x, y)], &names)
            })
            .collect()
    }

    #[test]
    fn a_track_driving_down_crosses_the_line_once_and_visits_the_area() {
        let mut counter = ZoneCounter::new(config());
        let events = run(
            &mut counter,
            &[
                (1, 100.0, 80.0),
                (1, 100.0, 99.0),
                (1, 100.0, 120.0),
                (1, 100.0, 200.0),
                (1, 100.0, 300.0),
            ],
        );
        let kinds: Vec<String> = events
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(kinds, ["line_crossing", "zone_enter", "zone_exit"]);
        // Downwards is from the left of (0,100)→(200,100) to its right: out.
        assert_eq!(
            counter.counts().lines["stop"]["car"],
            LineCount {
                inbound: 0,
                outbound: 1
            }
        );
        assert_eq!(counter.counts().areas["box"]["car"], 1);
    }

    #[test]
    fn jitter_on_the_line_and_passing_beside_it_do_not_count() {
        let mut counter = ZoneCounter::new(config());
        run(
            &mut counter,
            &[
                (2, 100.0, 99.0),
                (2, 100.0, 101.0),
                (2, 100.0, 99.5),
                (2, 100.0, 101.5),
            ],
        );
        // Track 3 passes beyond the segment's end.
        run(&mut counter, &[(3, 300.0, 50.0), (3, 300.0, 150.0)]);
        assert!(counter.counts().lines.is_empty(), "{:?}", counter.counts());
    }

    #[test]
    fn crossing_back_counts_in_and_revisits_count_once() {
        let mut counter = ZoneCounter::new(config());
        run(
            &mut counter,
            &[
                (4, 100.0, 200.0),
                (4, 100.0, 300.0),
                (4, 100.0, 200.0),
                (4, 100.0, 50.0),
            ],
        );
        assert_eq!(
            counter.counts().lines["stop"]["car"],
            LineCount {
                inbound: 1,
                outbound: 0
            }
        );
        assert_eq!(
            counter.counts().areas["box"]["car"],
            1,
            "re-entry is not a new visit"
        );
    }

    #[test]
    fn invalid_zones_are_refused() {
        let mut c = config();
        c.areas[0].name = "stop".into();
        assert!(c.validate().unwrap_err().contains("used twice"));
        let mut c = config();
        c.lines[0].to = c.lines[0].from;
        assert!(c.validate().unwrap_err().contains("zero length"));
    }
}
