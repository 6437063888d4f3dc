//! Summaries of repeated measurements: median, p10, p90 and n, as every table and plot shows them.

use serde::{Deserialize, Serialize};

/// The summary of one metric's samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The median (the middle sample; the mean of the two middle ones for even n).
    pub median: f64,
    /// The 10th percentile (linear interpolation between order statistics).
    pub p10: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// How many samples.
    pub n: usize,
}

impl Stats {
    /// Summarises `samples`; `None` when there are none (or any is not finite).
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Stats {
            median: quantile(&v, 0.5),
            p10: quantile(&v, 0.1),
            p90: quantile(&v, 0.9),
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }
}

/// The `q` quantile of sorted, non-empty `v`, interpolating linearly between neighbours.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_counts() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).expect("stats");
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        let s = Stats::of(&v).expect("stats");
        assert!((s.p10 - 1.0).abs() < 1e-9 && (s.p90 - 9.0).abs() < 1e-9);
        let one = Stats::of(&[7.0]).expect("stats");
        assert_eq!((one.p10, one.median, one.p90), (7.0, 7.0, 7.0));
    }

    #[test]
    fn nothing_or_nan_is_no_summary() {
        assert!(Stats::of(&[]).is_none());
        assert!(Stats::of(&[1.0, f64::NAN]).is_none());
    }
}
