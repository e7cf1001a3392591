//! Token buckets, driven by the caller's clock: byte rates of a connection, request
//! and signature-check rates of a peer, handshake rates of a subnet.

use crate::collections::Map;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Tokens refill at `per_sec` up to `burst`. [`TokenBucket::try_take`] takes whole
/// tokens only when there are enough; [`TokenBucket::spend`] may overdraw, and the
/// debt delays the next spend (so a packet larger than the burst still gets through).
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(per_sec: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            per_sec,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
    }

    /// Takes `n` tokens if there are that many; `false` (and nothing taken) if not.
    pub(crate) fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now` (it can be forgotten).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.burst
    }

    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    pub(crate) fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// When tokens will be positive again; `None` if they are now.
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        if self.tokens > 0.0 {
            return None;
        }
        let wait = (-self.tokens + 1.0) / self.per_sec.max(1.0);
        Some(self.updated + Duration::from_secs_f64(wait))
    }
}

/// One bucket per key (a peer, a subnet), at most `max` keys: when full, buckets
/// that have refilled are forgotten, and a new key beyond them is refused.
#[derive(Debug)]
pub(crate) struct RateTable<K> {
    per_sec: f64,
    burst: f64,
    max: usize,
    buckets: Map<K, TokenBucket>,
}

impl<K: Hash + Eq + Copy> RateTable<K> {
    pub(crate) fn new(per_sec: f64, burst: f64, max: usize) -> Self {
        RateTable {
            per_sec,
            burst,
            max,
            buckets: Map::default(),
        }
    }

    /// Takes one token of `key`'s bucket.
    pub(crate) fn try_take(&mut self, key: K, now: Instant) -> bool {
        if self.buckets.len() >= self.max && !self.buckets.contains_key(&key) {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.max {
                return false;
            }
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(per_sec, burst, now))
            .try_take(1.0, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 100.0, t0);
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

    #[test]
    fn whole_tokens_are_taken_only_when_there_are_enough() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!((0..3).all(|_| b.try_take(1.0, t0)));
        assert!(!b.try_take(1.0, t0));
        assert!(!b.is_full(t0));
        assert!(b.try_take(1.0, t0 + Duration::from_millis(100)));
        assert!(b.is_full(t0 + Duration::from_secs(1)));
    }
}
