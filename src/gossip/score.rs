//! Peer scores for gossip: first deliveries count for, invalid messages, broken IWANT
//! promises, mesh delivery deficits and IP colocation count against; all decay.

use std::collections::HashMap;

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
    /// Topics scored with weights of their own (GossipSub v1.1's topic
    /// parameters): their first deliveries, invalid messages and mesh deficits count
    /// there, weighted, instead of in the parts above. The thresholds stay global.
    pub topics: HashMap<String, TopicScoreWeights>,
}

/// The weights of one topic's part of the score.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicScoreWeights {
    /// The whole topic part is multiplied by this (a vote topic may count for more
    /// than a transaction topic).
    pub topic_weight: f64,
    /// Per first delivery in the topic (capped).
    pub first_delivery: f64,
    /// Cap of the first-delivery counter.
    pub first_delivery_cap: f64,
    /// Per invalid message in the topic, squared.
    pub invalid: f64,
    /// Per missing mesh delivery in the topic, squared.
    pub mesh_deficit: f64,
}

impl Default for TopicScoreWeights {
    fn default() -> Self {
        let w = ScoreWeights::default();
        TopicScoreWeights {
            topic_weight: 1.0,
            first_delivery: w.first_delivery,
            first_delivery_cap: w.first_delivery_cap,
            invalid: w.invalid,
            mesh_deficit: w.mesh_deficit,
        }
    }
}

/// A peer's counters in one topic that has weights of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicCounters {
    /// Messages of the topic this peer delivered first.
    pub first_deliveries: f64,
    /// Invalid messages of the topic it sent.
    pub invalid: f64,
    /// Mesh deliveries of the topic missing.
    pub mesh_deficit: f64,
}

/// Which counter an event moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    FirstDelivery,
    Invalid,
    MeshDeficit,
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
            topics: HashMap::new(),
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
    /// Counters of the topics with weights of their own (at most one entry per
    /// configured topic).
    pub topics: HashMap<String, TopicCounters>,
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
            + self
                .topics
                .iter()
                .filter_map(|(t, c)| w.topics.get(t).map(|tw| (tw, c)))
                .map(|(tw, c)| {
                    tw.topic_weight
                        * (tw.first_delivery * c.first_deliveries.min(tw.first_delivery_cap)
                            + tw.invalid * c.invalid * c.invalid
                            + tw.mesh_deficit * c.mesh_deficit * c.mesh_deficit)
                })
                .sum::<f64>()
    }

    /// Adds `by` to `counter`, in `topic`'s own counters when it has weights.
    pub(crate) fn count(
        &mut self,
        w: &ScoreWeights,
        topic: Option<&str>,
        counter: Counter,
        by: f64,
    ) {
        if let Some(t) = topic.filter(|t| w.topics.contains_key(*t)) {
            let c = self.topics.entry(t.to_string()).or_default();
            match counter {
                Counter::FirstDelivery => c.first_deliveries += by,
                Counter::Invalid => c.invalid += by,
                Counter::MeshDeficit => c.mesh_deficit += by,
            }
            return;
        }
        match counter {
            Counter::FirstDelivery => self.first_deliveries += by,
            Counter::Invalid => self.invalid += by,
            Counter::MeshDeficit => self.mesh_deficit += by,
        }
    }

    /// One heartbeat of decay.
    pub fn decay(&mut self, w: &ScoreWeights) {
        self.first_deliveries *= w.decay;
        self.invalid *= w.decay;
        self.broken_promises *= w.decay;
        self.mesh_deficit *= w.decay;
        for c in self.topics.values_mut() {
            c.first_deliveries *= w.decay;
            c.invalid *= w.decay;
            c.mesh_deficit *= w.decay;
        }
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

    #[test]
    fn a_topic_with_weights_of_its_own_counts_apart_and_weighted() {
        let mut w = ScoreWeights::default();
        w.topics.insert(
            "votes".into(),
            TopicScoreWeights {
                topic_weight: 2.0,
                invalid: -50.0,
                ..TopicScoreWeights::default()
            },
        );
        let mut s = PeerScore::default();
        s.count(&w, Some("txs"), Counter::Invalid, 1.0);
        assert_eq!(s.value(&w), -20.0, "an unweighted topic counts globally");
        s.count(&w, Some("votes"), Counter::Invalid, 1.0);
        assert_eq!(s.value(&w), -20.0 - 100.0);
        assert_eq!(s.topics["votes"].invalid, 1.0);
        for _ in 0..30 {
            s.count(&w, Some("votes"), Counter::FirstDelivery, 1.0);
        }
        // Capped at 20 first deliveries, weighted twice.
        assert_eq!(s.value(&w), -20.0 - 100.0 + 2.0 * 20.0);
        s.decay(&w);
        assert!((s.topics["votes"].invalid - 0.95).abs() < 1e-12);
    }
}
