//! One score per peer, fed by every layer: the transport's protocol violations, the
//! DHT's and gossip's penalties, and what the application reports. Each part decays
//! halfway back to zero every half-life; the sum decides bans. Sans-IO.

use std::time::{Duration, Instant};

use crate::collections::Map;
use crate::identity::PeerId;

/// Most peers whose score is remembered; the mildest are forgotten first.
const MAX_SCORED: usize = 4096;

/// Who changed a peer's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreSource {
    /// Protocol violations on the connection (bad frames, packets, credit).
    Transport,
    /// The DHT's penalties (malformed answers, bad records).
    Dht,
    /// Gossip's penalties (invalid messages, broken promises).
    Gossip,
    /// The application's reports and good marks.
    Application,
}

impl ScoreSource {
    fn index(self) -> usize {
        self as usize
    }
}

/// How bad what a peer did was, as an application reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehavior {
    /// Useless but possibly honest: a stale vote, a block part nobody asked for.
    /// A tenth of a protocol violation.
    Minor,
    /// Invalid data an honest peer would not send: a vote with a bad signature, a
    /// block part that does not hash to its header. One protocol violation (with
    /// the default limits the third within a half-life bans).
    Invalid,
    /// Proof of malice, such as an equivocation: banned at once.
    Malicious,
}

/// A peer's score and its parts, decayed to when it was read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerScore {
    /// The sum of the parts; below the ban threshold the peer is banned.
    pub total: f64,
    /// From protocol violations on the connection.
    pub transport: f64,
    /// From the DHT.
    pub dht: f64,
    /// From gossip.
    pub gossip: f64,
    /// From the application (reports, and good marks up to a cap).
    pub application: f64,
}

#[derive(Debug, Clone)]
struct Parts {
    values: [f64; 4],
    updated: Instant,
}

impl Parts {
    fn decay_to(&mut self, now: Instant, half_life: Duration) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let factor = 0.5f64.powf(elapsed / half_life.as_secs_f64().max(1e-3));
        for v in &mut self.values {
            *v *= factor;
        }
        self.updated = now;
    }

    fn total(&self) -> f64 {
        self.values.iter().sum()
    }
}

/// The scores of the peers a node has seen, bounded in number.
#[derive(Debug)]
pub(crate) struct ScoreBook {
    half_life: Duration,
    /// The most the application's good marks may add: they cannot buy a peer more
    /// than this much room for misbehaving.
    max_good: f64,
    scores: Map<PeerId, Parts>,
}

impl ScoreBook {
    pub(crate) fn new(half_life: Duration, max_good: f64) -> Self {
        ScoreBook {
            half_life,
            max_good,
            scores: Map::default(),
        }
    }

    /// `peer`'s score (all zero when unknown), decayed to `now`.
    pub(crate) fn get(&mut self, peer: &PeerId, now: Instant) -> PeerScore {
        let Some(p) = self.scores.get_mut(peer) else {
            return PeerScore::default();
        };
        p.decay_to(now, self.half_life);
        let [transport, dht, gossip, application] = p.values;
        PeerScore {
            total: p.total(),
            transport,
            dht,
            gossip,
            application,
        }
    }

    /// Adds `delta` to `source`'s part of `peer`'s score; returns the new total.
    pub(crate) fn adjust(
        &mut self,
        peer: PeerId,
        source: ScoreSource,
        delta: f64,
        now: Instant,
    ) -> f64 {
        if self.scores.len() >= MAX_SCORED && !self.scores.contains_key(&peer) {
            // Forget the score closest to neutral.
            if let Some(mild) = self
                .scores
                .iter()
                .min_by(|a, b| a.1.total().abs().total_cmp(&b.1.total().abs()))
                .map(|(p, _)| *p)
            {
                self.scores.remove(&mild);
            }
        }
        let half_life = self.half_life;
        let parts = self.scores.entry(peer).or_insert(Parts {
            values: [0.0; 4],
            updated: now,
        });
        parts.decay_to(now, half_life);
        let v = &mut parts.values[source.index()];
        *v += delta;
        if source == ScoreSource::Application {
            *v = v.min(self.max_good);
        }
        parts.total()
    }

    /// Forgets `peer`'s score (it was banned: the ban is the memory now).
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.scores.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_decay_and_good_marks_are_capped() {
        let now = Instant::now();
        let mut book = ScoreBook::new(Duration::from_secs(600), 10.0);
        let p = PeerId::from_bytes([1; 32]);
        book.adjust(p, ScoreSource::Transport, -50.0, now);
        book.adjust(p, ScoreSource::Gossip, -10.0, now);
        for _ in 0..100 {
            book.adjust(p, ScoreSource::Application, 5.0, now);
        }
        let s = book.get(&p, now);
        assert_eq!(
            (s.transport, s.gossip, s.application, s.dht),
            (-50.0, -10.0, 10.0, 0.0)
        );
        assert_eq!(s.total, -50.0);
        let later = book.get(&p, now + Duration::from_secs(600));
        assert!((later.total + 25.0).abs() < 1e-9, "{later:?}");
        book.forget(&p);
        assert_eq!(book.get(&p, now), PeerScore::default());
    }
}
