//! Thinning a live stream to a target analysis rate.

/// Passes at most `fps` frames per second of presentation time, on an even grid.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    period: f64,
    next_due: Option<f64>,
}

impl RateLimiter {
    /// `fps` must be positive.
    pub fn new(fps: f64) -> Self {
        Self {
            period: 1.0 / fps,
            next_due: None,
        }
    }

    /// Whether the frame presented at `pts` should be analysed.
    pub fn admit(&mut self, pts: f64) -> bool {
        // A quarter period of slack absorbs rounding and the timestamp jitter of cameras.
        let due = self.next_due.unwrap_or(pts);
        if pts + 0.25 * self.period < due {
            return false;
        }
        // After a gap (or a clock jump) restart the grid at this frame.
        let next = due + self.period;
        self.next_due = Some(if next <= pts { pts + self.period } else { next });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(fps: f64, source_fps: f64, frames: usize) -> usize {
        let mut limiter = RateLimiter::new(fps);
        (0..frames)
            .filter(|&i| limiter.admit(i as f64 / source_fps))
            .count()
    }

    #[test]
    fn thins_a_stream_to_the_target_rate() {
        assert_eq!(admitted(10.0, 30.0, 300), 100);
        assert_eq!(admitted(12.5, 25.0, 250), 125);
        assert_eq!(
            admitted(25.0, 25.0, 250),
            250,
            "equal rates pass everything"
        );
        assert_eq!(admitted(60.0, 25.0, 250), 250);
    }

    #[test]
    fn restarts_its_grid_after_a_gap() {
        let mut limiter = RateLimiter::new(5.0);
        assert!(limiter.admit(0.0));
        assert!(!limiter.admit(0.1));
        assert!(limiter.admit(10.0), "first frame after an outage");
        assert!(!limiter.admit(10.1));
        assert!(limiter.admit(10.2));
    }
}
