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

/// How long an IHAVE waits for the eager copy before its IWANT goes out, learned
/// from how IWANTs turned out: doubled after a premature one (an eager copy beat
/// its reply, which is then a duplicate), cut by a sixteenth after one whose reply
/// came first. It settles where about one IWANT in twelve is premature, and never
/// passes twice the lag (nor a bound the caller sets).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RepairWait {
    value: Duration,
}

impl RepairWait {
    /// The wait now, never below `floor` (the configured delay).
    pub(crate) fn get(self, floor: Duration) -> Duration {
        self.value.max(floor)
    }

    /// An IWANT we sent was answered first (`answer`), or an eager copy beat it.
    /// The wait stays under twice the lag and under `cap`: an offer is answered
    /// only while the message is in the offerer's cache.
    pub(crate) fn observe(&mut self, answer: bool, floor: Duration, cap: Duration, lag: Lag) {
        if answer {
            self.value -= self.value / 16;
        } else {
            let ceiling = floor.max((lag.get() * 2).min(cap));
            self.value = (self.value.max(floor) * 2).min(ceiling);
        }
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

    #[test]
    fn the_repair_wait_grows_with_premature_iwants_and_shrinks_with_answers() {
        let (floor, cap) = (Duration::from_millis(5), Duration::from_millis(1500));
        let mut lag = Lag::default();
        for _ in 0..50 {
            lag.observe(Duration::from_millis(400));
        }
        let mut w = RepairWait::default();
        assert_eq!(w.get(floor), floor);
        for _ in 0..4 {
            w.observe(false, floor, cap, lag);
        }
        assert_eq!(w.get(floor), floor * 16);
        for _ in 0..20 {
            w.observe(false, floor, cap, lag);
        }
        assert!(w.get(floor) <= lag.get() * 2, "capped at twice the lag");
        assert!(w.get(floor) > Duration::from_millis(700));
        w.observe(true, floor, cap, lag);
        assert!(
            w.get(floor) > Duration::from_millis(650),
            "one answer barely moves it"
        );
        for _ in 0..200 {
            w.observe(true, floor, cap, lag);
        }
        assert_eq!(w.get(floor), floor, "answers bring it to the floor");
        w.observe(false, floor, cap, Lag::default());
        assert_eq!(w.get(floor), floor, "no lag: no longer than configured");
        for _ in 0..50 {
            lag.observe(Duration::from_secs(5));
        }
        for _ in 0..20 {
            w.observe(false, floor, cap, lag);
        }
        assert_eq!(w.get(floor), cap, "and never past the cap");
    }
}
