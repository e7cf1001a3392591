//! A fixed-bucket histogram of durations, in the shape Prometheus histograms have.
//!
//! The bounds are fixed (1 ms to 30 s, roughly 1-2-5 steps), so recording is a
//! short scan and a histogram is 16 counters: cheap enough to keep one per gossip
//! topic and one for DHT lookups, and to merge or compare across nodes.

use std::fmt::Write;
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; one more bucket holds the rest.
pub const BOUNDS_MICROS: [u64; 15] = [
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000, 10_000_000, 20_000_000, 30_000_000,
];

/// Counts of durations by bucket, with their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): `counts[i]` for `BOUNDS_MICROS[i]`,
    /// the last one for everything above 30 s.
    pub counts: [u64; 16],
    /// Sum of all observations, in microseconds.
    pub sum_micros: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_MICROS
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(BOUNDS_MICROS.len());
        self.counts[i] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }

    /// The smallest bucket bound at or below which at least `q` (0..=1) of the
    /// observations lie (`None` if empty or beyond the last bound).
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let want = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return BOUNDS_MICROS.get(i).map(|b| Duration::from_micros(*b));
            }
        }
        None
    }

    /// Mean of the observations.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_micros / self.count))
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of metric `name` (seconds),
    /// each with `labels` (e.g. `topic="blocks"`, or empty).
    pub(crate) fn write_prometheus(&self, s: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = match BOUNDS_MICROS.get(i) {
                Some(b) => format!("{}", *b as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(s, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(s, "{name}_sum{braces} {:.6}", self.sum_micros as f64 / 1e6);
        let _ = writeln!(s, "{name}_count{braces} {}", self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets_and_render_cumulatively() {
        let mut h = Histogram::default();
        for ms in [0, 1, 3, 40, 40, 999_999] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count, 6);
        assert_eq!(h.counts[0], 2, "0 ms and 1 ms are at most 1 ms");
        assert_eq!(h.counts[2], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(h.counts[5], 2, "40 ms is in the 50 ms bucket");
        assert_eq!(h.counts[15], 1, "beyond 30 s");
        assert_eq!(h.quantile_bound(0.5), Some(Duration::from_millis(5)));
        assert_eq!(h.quantile_bound(0.8), Some(Duration::from_millis(50)));
        assert_eq!(h.quantile_bound(1.0), None);
        let mut s = String::new();
        h.write_prometheus(&mut s, "x_seconds", "topic=\"t\"");
        assert!(s.contains("x_seconds_bucket{topic=\"t\",le=\"0.001\"} 2\n"));
        assert!(s.contains("x_seconds_bucket{topic=\"t\",le=\"0.05\"} 5\n"));
        assert!(s.contains("x_seconds_bucket{topic=\"t\",le=\"+Inf\"} 6\n"));
        assert!(s.contains("x_seconds_count{topic=\"t\"} 6\n"));
        let mut plain = String::new();
        h.write_prometheus(&mut plain, "y_seconds", "");
        assert!(plain.contains("y_seconds_bucket{le=\"30\"} 5\n"));
        assert!(plain.contains("y_seconds_sum 1000.083000\n"));
    }
}
