//! Range checks for configuration values. Each error names the key and the value it refused,
//! so a NaN, an infinity or a negative count never reaches the stages that would misbehave
//! on it (an infinite cost limit, for one, never lets the assignment solver finish).

/// `value` must be finite and lie in `min..=max`.
pub fn in_range(key: &str, value: f64, min: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{key} must lie in {min}..={max}, got {value}"))
    }
}

/// `value` must be finite and at least `min`.
pub fn at_least(key: &str, value: f64, min: f64) -> Result<(), String> {
    if value.is_finite() && value >= min {
        Ok(())
    } else {
        Err(format!(
            "{key} must be a finite number >= {min}, got {value}"
        ))
    }
}

/// `value` must be finite and above zero.
pub fn positive(key: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("{key} must be a finite number > 0, got {value}"))
    }
}

/// Every coordinate of every point must be finite.
pub fn finite_points<const N: usize, T: Into<f64> + Copy>(
    key: &str,
    points: &[[T; N]],
) -> Result<(), String> {
    match points
        .iter()
        .position(|p| p.iter().any(|&c| !c.into().is_finite()))
    {
        None => Ok(()),
        Some(i) => Err(format!("{key}: point {} is not a finite number", i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_key_and_value() {
        assert!(in_range("a", 0.5, 0.0, 1.0).is_ok());
        for bad in [f64::NAN, f64::INFINITY, -0.1, 1.5] {
            let e = in_range("tracker.match_thresh", bad, 0.0, 1.0).unwrap_err();
            assert!(
                e.contains("tracker.match_thresh") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
        assert!(at_least("b", 0.0, 0.0).is_ok());
        assert!(at_least("b", -1.0, 0.0).is_err());
        assert!(positive("c", 0.0).is_err());
        assert!(positive("c", f64::NAN).is_err());
        assert!(finite_points("zone", &[[1.0f32, 2.0]]).is_ok());
        let e = finite_points("zone", &[[1.0f32, 2.0], [f32::NAN, 0.0]]).unwrap_err();
        assert!(e.contains("point 2"), "{e}");
    }
}
