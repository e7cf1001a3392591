//! Token bucket, driven by the caller's clock.

use std::time::{Duration, Instant};

use crate::mux::config::RateLimit;

/// Bytes may be spent while tokens are positive; spending may overdraw, and the
/// debt delays the next spend. That lets a packet larger than the burst through.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: limit.burst as f64,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens =
            (self.tokens + elapsed * self.limit.bytes_per_sec as f64).min(self.limit.burst as f64);
    }

    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    pub(crate) fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// When tokens will be positive again; `None` if they are now.
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        if self.tokens > 0.0 {
            return None;
        }
        let rate = self.limit.bytes_per_sec.max(1) as f64;
        let wait = (-self.tokens + 1.0) / rate;
        Some(self.updated + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                bytes_per_sec: 1000,
                burst: 100,
            },
            t0,
        );
        assert!(b.ready(t0));
        b.spend(600);
        assert!(!b.ready(t0));
        let at = b.ready_at().unwrap();
        assert!(at > t0 + Duration::from_millis(490) && at < t0 + Duration::from_millis(520));
        assert!(b.ready(t0 + Duration::from_millis(510)));
        // Refill never exceeds the burst.
        assert!(b.ready(t0 + Duration::from_secs(100)));
        b.spend(100);
        assert!(!b.ready(t0 + Duration::from_secs(100)));
    }
}
