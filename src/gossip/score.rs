//! Peer scores for gossip: first deliveries count for, invalid messages, broken IWANT
//! promises, mesh delivery deficits and IP colocation count against; all decay.

/// Weights of the score components.
#[derive(Debug, Clone)]
pub struct ScoreWeights {
    /// Per first delivery (capped).
    pub first_delivery: f64,
    /// Cap of the first-delivery counter.
    pub first_delivery_cap: f64,
    /// Per invalid message, squared.
    pub invalid: f64,
    /// Per broken IWANT promise, squared.
    pub broken_promise: f64,
    /// Per missing mesh delivery below the threshold, squared.
    pub mesh_deficit: f64,
    /// Expected mesh deliveries per decay period before the deficit counts.
    pub mesh_threshold: f64,
    /// Per peer beyond `ip_colocation_threshold` on the same /24, squared.
    pub ip_colocation: f64,
    /// Peers on one /24 before colocation counts.
    pub ip_colocation_threshold: usize,
    /// Counters are multiplied by this every heartbeat.
    pub decay: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            first_delivery: 1.0,
            first_delivery_cap: 20.0,
            invalid: -20.0,
            broken_promise: -2.0,
            mesh_deficit: -0.5,
            mesh_threshold: 0.0,
            ip_colocation: -5.0,
            ip_colocation_threshold: 4,
            decay: 0.95,
        }
    }
}

/// One peer's score counters.
#[derive(Debug, Clone, Default)]
pub struct PeerScore {
    /// Messages this peer delivered first.
    pub first_deliveries: f64,
    /// Invalid messages it sent.
    pub invalid: f64,
    /// IWANT promises it broke.
    pub broken_promises: f64,
    /// Mesh deliveries missing.
    pub mesh_deficit: f64,
    /// Peers sharing its /24 (set by the router).
    pub colocated: usize,
}

impl PeerScore {
    /// The score under `w`.
    pub fn value(&self, w: &ScoreWeights) -> f64 {
        let colocation = self.colocated.saturating_sub(w.ip_colocation_threshold) as f64;
        w.first_delivery * self.first_deliveries.min(w.first_delivery_cap)
            + w.invalid * self.invalid * self.invalid
            + w.broken_promise * self.broken_promises * self.broken_promises
            + w.mesh_deficit * self.mesh_deficit * self.mesh_deficit
            + w.ip_colocation * colocation * colocation
    }

    /// One heartbeat of decay.
    pub fn decay(&mut self, w: &ScoreWeights) {
        self.first_deliveries *= w.decay;
        self.invalid *= w.decay;
        self.broken_promises *= w.decay;
        self.mesh_deficit *= w.decay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_messages_sink_a_score_and_decay_brings_it_back() {
        let w = ScoreWeights::default();
        let mut s = PeerScore {
            first_deliveries: 5.0,
            ..Default::default()
        };
        assert!(s.value(&w) > 0.0);
        s.invalid = 3.0;
        assert!(s.value(&w) < -100.0);
        for _ in 0..200 {
            s.decay(&w);
        }
        assert!(s.value(&w) > -1.0);
        let crowded = PeerScore {
            colocated: 10,
            ..Default::default()
        };
        assert!(crowded.value(&w) < -100.0);
    }
}
