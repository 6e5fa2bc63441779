//! Evaluation: MOTChallenge tracking metrics (HOTA, CLEAR, Identity) computed as TrackEval
//! computes them.

pub mod agreement;
pub mod detection;
pub mod mot;
pub mod speed;
