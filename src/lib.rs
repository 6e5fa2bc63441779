//! streamtrack: object detection, multi-object tracking and speed estimation on video, in
//! pure Rust. YOLO runs in Burn (wgpu or CPU); everything after the network is plain Rust.

pub mod analysis;
pub mod annotate;
pub mod bench;
pub mod checks;
pub mod compress;
pub mod config;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod events;
pub mod formats;
pub mod geometry;
pub mod job;
pub mod live_view;
pub mod metrics;
pub mod model;

pub mod output;
pub mod pipeline;
pub mod server;
pub mod setup;
pub mod sinks;
pub mod speed;
pub mod track;
pub mod video;
pub mod warnings;
pub mod zones;
