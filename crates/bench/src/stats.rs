//! Percentiles of a sample, by the nearest-rank method on a sorted copy.

use serde::Serialize;

/// p50, p99 and max of a sample (all 0 for an empty one), in the sample's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Spread {
    /// Values in the sample.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// Summarises `values` (sorted in place).
    pub fn of(values: &mut [f64]) -> Spread {
        values.sort_by(f64::total_cmp);
        let Some(&max) = values.last() else {
            return Spread::default();
        };
        Spread {
            count: values.len(),
            p50: rank(values, 0.50),
            p99: rank(values, 0.99),
            max,
        }
    }
}

/// The nearest-rank percentile `q` (0..=1) of a sorted, non-empty slice.
fn rank(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let index = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
    sorted[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Spread::of(&mut values);
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        let mut one = [7.0];
        assert_eq!(Spread::of(&mut one).p99, 7.0);
        assert_eq!(Spread::of(&mut []), Spread::default());
    }
}
