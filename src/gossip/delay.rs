//! One-way delay: the wall clock the node tells the router, and the delay of each
//! stamped message from its origin's publish time to its acceptance here.

use std::time::{Duration, Instant, SystemTime};

use crate::gossip::{Router, TopicMetrics};

impl Router {
    /// The wall clock reads `wall` at `now` (the router reads no clock: the driver
    /// or the simulator tells it, at start and now and then, so a stepped system
    /// clock is followed).
    pub fn handle_wall_clock(&mut self, now: Instant, wall: SystemTime) {
        self.wall = Some((now, wall));
    }

    /// The wall clock at `now`, from the last reading given.
    pub(super) fn wall_time(&self, now: Instant) -> Option<SystemTime> {
        let (at, wall) = self.wall?;
        match now.checked_duration_since(at) {
            Some(ahead) => wall.checked_add(ahead),
            None => wall.checked_sub(at.saturating_duration_since(now)),
        }
    }

    /// A message stamped `origin_time_micros` (0: none) accepted at `now`: when it
    /// was sent and when it arrived, by the wall clock (`None` if unstamped or we
    /// have no clock).
    pub(super) fn stamp_and_arrival(
        &self,
        origin_time_micros: u64,
        now: Instant,
    ) -> Option<(SystemTime, SystemTime)> {
        origin_time(origin_time_micros).zip(self.wall_time(now))
    }
}

impl TopicMetrics {
    /// A message sent at `sent` (by its origin's clock) arrived at `arrived`: its
    /// one-way delay goes into the histogram.
    pub(super) fn record_delay(&mut self, (sent, arrived): (SystemTime, SystemTime)) {
        match arrived.duration_since(sent) {
            Ok(d) => self.delay.record(d),
            Err(_) => {
                self.clock_ahead += 1;
                self.delay.record(Duration::ZERO);
            }
        }
    }
}

/// The publish time a message carries, as a time (`None` when unstamped, or so
/// far out that the platform's clock cannot hold it: the origin chose it).
pub(super) fn origin_time(micros: u64) -> Option<SystemTime> {
    if micros == 0 {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::super::hostile_tests::{key, Harness, T};
    use super::*;
    use crate::gossip::{message, stream, GossipOutput};
    use crate::wire;

    fn deliveries(out: &[GossipOutput]) -> Vec<&crate::gossip::GossipEvent> {
        out.iter()
            .filter_map(|o| match o {
                GossipOutput::Deliver(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn stamped_messages_fill_the_topics_delay_histogram() {
        let mut h = Harness::new();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        h.r.handle_wall_clock(h.now, wall);
        let a = h.peer(1, &[T]);
        let sent = |ago_ms: u64| {
            let t = wall - Duration::from_millis(ago_ms);
            crate::gossip::outgoing::unix_micros(t)
        };
        // 30 ms ago and 300 ms ago by our clock; one from a clock 2 s ahead; one
        // unstamped.
        for (seqno, time) in [
            (1, sent(30)),
            (2, sent(300)),
            (3, sent(0) + 2_000_000),
            (4, 0),
        ] {
            let mut m = message::build(Some(&key(50)), T, seqno, time, vec![1; 64]);
            m.hops = 1;
            h.rpc(
                a,
                &wire::GossipRpc {
                    publish: vec![m],
                    ..Default::default()
                },
            );
        }
        let out = h.take();
        let got = deliveries(&out);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0].origin_time,
            Some(wall - Duration::from_millis(30)),
            "the event carries the origin's time"
        );
        assert_eq!(got[3].origin_time, None);
        let m = &h.r.metrics()[T];
        assert_eq!(m.delay.count, 3, "the unstamped message has no delay");
        assert_eq!(m.clock_ahead, 1);
        assert_eq!(m.delay.counts[0], 1, "ahead counts as 0");
        assert_eq!(m.delay.counts[5], 1, "30 ms: the 50 ms bucket");
        assert_eq!(m.delay.counts[8], 1, "300 ms: the 500 ms bucket");
        assert_eq!(m.delay.sum_micros, 330_000);
    }

    #[test]
    fn any_stamp_an_origin_signs_is_taken_without_panic() {
        assert_eq!(origin_time(0), None);
        let far = origin_time(u64::MAX);
        let mut m = TopicMetrics::default();
        if let Some(sent) = far {
            m.record_delay((sent, SystemTime::UNIX_EPOCH));
            assert_eq!((m.clock_ahead, m.delay.count), (1, 1));
        }
    }

    #[test]
    fn a_stream_is_timed_from_its_head_and_a_router_without_a_clock_records_nothing() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let stamp = crate::gossip::outgoing::unix_micros(wall - Duration::from_millis(8));
        let data = vec![3u8; 40_000];
        let (mut head, chunks) = stream::build(&key(50), T, 1, stamp, &data, 16 * 1024);
        head.hops = 1;
        for clock in [true, false] {
            let mut h = Harness::new();
            if clock {
                h.r.handle_wall_clock(h.now, wall);
            }
            let a = h.peer(1, &[T]);
            h.rpc(
                a,
                &wire::GossipRpc {
                    head: vec![head.clone()],
                    ..Default::default()
                },
            );
            for c in &chunks {
                h.raw(a, c);
            }
            let out = h.take();
            assert_eq!(deliveries(&out).len(), 1);
            let m = &h.r.metrics()[T];
            if clock {
                assert_eq!(
                    (m.delay.count, m.delay.counts[3]),
                    (1, 1),
                    "8 ms: 10 ms bucket"
                );
            } else {
                assert_eq!(m.delay.count, 0);
            }
        }
    }
}
