//! Per-operation timing of the network's forward pass, for finding where CPU time goes.
//!
//! CPU backends run every operation eagerly, so wall time around an operation is its cost.
//! On wgpu, operations are queued asynchronously and these timings mean nothing; the bench
//! command only offers the profile on the CPU.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The operation types the profile groups time by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    Conv3x3,
    Conv1x1,
    ConvDepthwise,
    Activation,
    SplitConcat,
    Add,
    MaxPool,
    Upsample,
    Attention,
    /// DFL decoding, anchors and the final sigmoid.
    HeadDecode,
}

impl OpKind {
    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Conv3x3 => "conv 3x3",
            Self::Conv1x1 => "conv 1x1",
            Self::ConvDepthwise => "conv depthwise",
            Self::Activation => "SiLU",
            Self::SplitConcat => "split/concat",
            Self::Add => "residual add",
            Self::MaxPool => "max-pool",
            Self::Upsample => "upsample",
            Self::Attention => "attention (matmul/softmax)",
            Self::HeadDecode => "head decode (DFL, sigmoid)",
        }
    }
}

/// One timed call of a recorded forward pass: what ran, and for a convolution which one.
#[derive(Debug, Clone)]
pub struct OpCall {
    pub kind: OpKind,
    /// A convolution's channels, kernel, stride, output size and arithmetic, e.g.
    /// `64->64 3x3/2 to 40x40 int8`; `None` for other operations and for convolutions on
    /// Burn's stock kernels.
    pub layer: Option<String>,
    pub time: Duration,
}

/// Every timed call of a recording, in the order it ran.
#[derive(Debug, Clone, Default)]
pub struct OpProfile {
    pub calls: Vec<OpCall>,
}

impl OpProfile {
    /// Calls and total time per operation type.
    pub fn per_kind(&self) -> BTreeMap<OpKind, (usize, Duration)> {
        per_kind(&self.calls)
    }
}

/// Calls and total time per operation type of `calls`.
pub fn per_kind(calls: &[OpCall]) -> BTreeMap<OpKind, (usize, Duration)> {
    let mut totals = BTreeMap::<OpKind, (usize, Duration)>::new();
    for call in calls {
        let entry = totals.entry(call.kind).or_default();
        entry.0 += 1;
        entry.1 += call.time;
    }
    totals
}

thread_local! {
    static ACTIVE: RefCell<Option<OpProfile>> = const { RefCell::new(None) };
}

/// Runs `f`, charging its wall time to `kind` when a profile is being recorded on this thread.
pub(crate) fn timed<T>(kind: OpKind, f: impl FnOnce() -> T) -> T {
    timed_if_some(kind, || Some(f())).expect("always Some")
}

/// Like [`timed`], for a layer the profile names (see [`timed_layer_if_some`]).
pub(crate) fn timed_layer<T>(
    kind: OpKind,
    f: impl FnOnce() -> T,
    layer: impl FnOnce(&T) -> Option<String>,
) -> T {
    timed_layer_if_some(kind, || Some(f()), layer).expect("always Some")
}

/// Like [`timed`], for an operation that may decline (`None`): only runs that happened count.
pub(crate) fn timed_if_some<T>(kind: OpKind, f: impl FnOnce() -> Option<T>) -> Option<T> {
    timed_layer_if_some(kind, f, |_| None)
}

/// Like [`timed_if_some`], for a layer the profile names: `layer` describes it from what it
/// returned (called only while recording).
pub(crate) fn timed_layer_if_some<T>(
    kind: OpKind,
    f: impl FnOnce() -> Option<T>,
    layer: impl FnOnce(&T) -> Option<String>,
) -> Option<T> {
    if !is_recording() {
        return f();
    }
    let start = Instant::now();
    let out = f()?;
    let time = start.elapsed();
    let layer = layer(&out);
    ACTIVE.with(|a| {
        if let Some(profile) = a.borrow_mut().as_mut() {
            profile.calls.push(OpCall { kind, layer, time });
        }
    });
    Some(out)
}

/// Whether a profile is being recorded on this thread.
pub(crate) fn is_recording() -> bool {
    ACTIVE.with(|a| a.borrow().is_some())
}

/// Runs `f` with profiling on for this thread and returns what it recorded.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, OpProfile) {
    let (out, profile) = continue_recording(Some(OpProfile::default()), f);
    (out, profile.unwrap_or_default())
}

/// Runs `f` on a thread of rayon's pool, carrying this thread's profile, if one is being
/// recorded, to that thread and its additions back.
pub(crate) fn in_rayon_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let carried = ACTIVE.with(|a| a.borrow_mut().take());
    let (out, carried) = rayon::scope(|_| continue_recording(carried, f));
    ACTIVE.with(|a| *a.borrow_mut() = carried);
    out
}

/// Runs `f` with `profile` as this thread's recording (none: not recording) and hands it back.
fn continue_recording<T>(
    profile: Option<OpProfile>,
    f: impl FnOnce() -> T,
) -> (T, Option<OpProfile>) {
    let before = ACTIVE.with(|a| std::mem::replace(&mut *a.borrow_mut(), profile));
    let out = f();
    let profile = ACTIVE.with(|a| std::mem::replace(&mut *a.borrow_mut(), before));
    (out, profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ComputeDevice, YoloModel};

    /// The fast CPU path runs the pass on a rayon worker; the profile must follow it there.
    #[test]
    fn records_a_forward_pass_run_on_the_thread_pool() {
        let path = std::path::Path::new("../shared/data/models/yolo11n-coco-320.onnx");
        let model = YoloModel::load(path, ComputeDevice::cpu()).expect("test model loads");
        let input = model.planar_input(vec![0.5; 3 * 320 * 320], 1);
        let (_, recorded) = record(|| model.infer(input));
        let per_kind = recorded.per_kind();
        let calls = |kind| per_kind.get(&kind).map_or(0, |(calls, _)| *calls);
        assert!(calls(OpKind::Conv3x3) > 10, "{per_kind:?}");
        assert!(calls(OpKind::Conv1x1) > 10, "{per_kind:?}");
        assert_eq!(calls(OpKind::HeadDecode), 1, "{per_kind:?}");
        // Every call in order, each convolution named: the stem first.
        let first = &recorded.calls[0];
        assert_eq!(first.kind, OpKind::Conv3x3);
        assert_eq!(first.layer.as_deref(), Some("3->16 3x3/2 to 160x160 f32"));
        let convolution = |kind| {
            matches!(
                kind,
                OpKind::Conv3x3 | OpKind::Conv1x1 | OpKind::ConvDepthwise
            )
        };
        for call in &recorded.calls {
            assert_eq!(convolution(call.kind), call.layer.is_some(), "{call:?}");
        }
        let depthwise = recorded
            .calls
            .iter()
            .find(|c| c.kind == OpKind::ConvDepthwise);
        let label = depthwise
            .and_then(|c| c.layer.as_deref())
            .unwrap_or_default();
        assert!(label.contains("3x3 depthwise"), "{label}");
        assert!(
            ACTIVE.with(|a| a.borrow().is_none()),
            "recording ends with `record`"
        );
    }
}
