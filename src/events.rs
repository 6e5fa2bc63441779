//! What happens in a stream, reported once: speed-limit breaches, finished tracks, outages,
//! zone crossings and totals. The JSON-lines output, the server-sent events and the event
//! sinks (MQTT, webhooks) all carry this one type.

use serde::Serialize;

use crate::speed::TrackSummary;
use crate::zones::{ZoneCounts, ZoneEvent};

/// Something that happened, reported once.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A track's speed went above the calibration's `speed_limit`.
    SpeedLimit {
        frame: u64,
        time: f64,
        id: u64,
        speed: f64,
        limit: f64,
        unit: &'static str,
    },
    /// A track left the scene (or the stream ended); its summary.
    TrackEnd(TrackSummary),
    /// A live source was lost and came back.
    Outage(crate::video::Outage),
    /// Line and area totals at the end of a run.
    ZoneCounts(ZoneCounts),
    /// A line crossing, area entry or exit, tagged as the zone counter tags it.
    #[serde(untagged)]
    Zone(ZoneEvent),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zone event keeps the zone counter's own tag: one `event` key, no wrapper.
    #[test]
    fn zone_events_serialise_as_the_counter_tags_them() {
        let crossing = Event::Zone(ZoneEvent::LineCrossing {
            frame: 7,
            time: 0.28,
            line: "gate".into(),
            id: 3,
            class: 2,
            direction: crate::zones::Direction::In,
        });
        assert_eq!(
            serde_json::to_value(&crossing).unwrap(),
            serde_json::json!({
                "event": "line_crossing", "frame": 7, "time": 0.28, "line": "gate",
                "id": 3, "class": 2, "direction": "in"
            })
        );
    }
}
