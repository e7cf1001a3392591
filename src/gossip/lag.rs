//! How far behind the network runs, as this node sees it: the spread between the
//! first copy of a message and its later duplicates. On a quiet network copies
//! arrive milliseconds apart; on an overloaded one, seconds. The repair machinery
//! (how long messages stay cached for IWANT, how far back IHAVE reaches, how long
//! an IWANT may take) stretches with it, so a node that falls behind can still
//! catch up instead of finding the message gone from every cache.

use std::time::Duration;

/// Most heartbeat windows the estimate may add (the cache's byte bound still holds).
const MAX_EXTRA_WINDOWS: usize = 100;
/// Largest sample taken. A peer can replay any message still in our seen cache
/// (minutes old) to fake a lag; clamped, it can stretch deadlines by 20 s at most.
const MAX_LAG: Duration = Duration::from_secs(10);

/// A lag estimate that rises at once and decays slowly.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Lag {
    value: Duration,
}

impl Lag {
    /// A duplicate came `lag` after the first copy.
    pub(crate) fn observe(&mut self, lag: Duration) {
        let lag = lag.min(MAX_LAG);
        self.value = if lag > self.value {
            // Up quickly: a quarter of the way per sample.
            self.value + (lag - self.value) / 4
        } else {
            // Down slowly: a 64th per sample, so a lull does not shrink the windows
            // a backlog still needs.
            self.value - (self.value - lag) / 64
        };
    }

    /// The estimate now.
    pub(crate) fn get(self) -> Duration {
        self.value
    }

    /// Heartbeat windows to add to the cache so it holds messages for twice the lag.
    pub(crate) fn extra_windows(self, heartbeat: Duration) -> usize {
        let beat = heartbeat.as_nanos().max(1);
        ((2 * self.value.as_nanos()).div_ceil(beat) as usize).min(MAX_EXTRA_WINDOWS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_rises_fast_decays_slowly_and_stretches_windows_within_a_bound() {
        let mut l = Lag::default();
        assert_eq!(l.extra_windows(Duration::from_millis(200)), 0);
        for _ in 0..20 {
            l.observe(Duration::from_secs(2));
        }
        assert!(l.get() > Duration::from_millis(1900));
        assert_eq!(l.extra_windows(Duration::from_millis(200)), 20);
        l.observe(Duration::ZERO);
        assert!(
            l.get() > Duration::from_millis(1800),
            "one quiet sample barely moves it"
        );
        for _ in 0..1000 {
            l.observe(Duration::from_millis(1));
        }
        assert!(
            l.get() < Duration::from_millis(10),
            "but a quiet network brings it down"
        );
        for _ in 0..100 {
            l.observe(Duration::from_secs(3600));
        }
        assert!(
            l.get() <= MAX_LAG,
            "a replayed old message fakes at most MAX_LAG"
        );
        assert_eq!(
            l.extra_windows(Duration::from_millis(200)),
            MAX_EXTRA_WINDOWS
        );
    }
}
