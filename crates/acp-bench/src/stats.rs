//! Latency samples and their summaries. Samples are kept whole (microseconds, a few bytes each) and sorted once:
//! exact percentiles without a histogram dependency.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn push(&mut self, latency: Duration) {
        self.0.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn summary(&self, wall: Duration) -> Summary {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let ms = |q: f64| percentile(&sorted, q) as f64 / 1000.0;
        let secs = wall.as_secs_f64();
        Summary {
            count: sorted.len(),
            per_sec: if secs > 0.0 { sorted.len() as f64 / secs } else { 0.0 },
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: sorted.last().copied().unwrap_or(0) as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Summary {
    pub count: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted values (0 when empty): the smallest value with at least `q` of the values
/// at or below it.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn summary_reports_milliseconds_and_rate() {
        let mut samples = Samples::default();
        for ms in [1, 2, 3, 4, 100] {
            samples.push(Duration::from_millis(ms));
        }
        let s = samples.summary(Duration::from_secs(2));
        assert_eq!(s.count, 5);
        assert_eq!(s.per_sec, 2.5);
        assert_eq!(s.p50_ms, 3.0);
        assert_eq!(s.p99_ms, 100.0);
        assert_eq!(s.max_ms, 100.0);
    }
}
