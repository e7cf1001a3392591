//! What the application says about peers, and asks about them: misbehavior
//! reports and good marks feeding the one score, and a peer's details.

use super::*;
use crate::node::PeerDetails;
use crate::peer_score::Misbehavior;

impl NodeCore {
    /// The application saw `peer` misbehave: its score drops by the severity's
    /// penalty, and a peer whose score crosses the threshold is banned.
    pub(super) fn report(&mut self, peer: PeerId, what: Misbehavior, reason: &str, now: Instant) {
        log::info!("peer {} reported ({what:?}): {reason}", peer.short());
        Metrics::count(&mut self.metrics.reports, report_label(what));
        let delta = self.manager.report_penalty(what);
        self.punish(peer, ScoreSource::Application, delta, now);
    }

    /// The application found `peer` useful (CometBFT's `MarkPeerAsGood`).
    pub(super) fn mark_good(&mut self, peer: PeerId, now: Instant) {
        let delta = self.manager.good_mark();
        self.manager
            .adjust(peer, ScoreSource::Application, delta, now);
    }

    /// A persistent peer added at runtime: dialed now unless already connected.
    pub(super) fn add_persistent(&mut self, addr: SocketAddr, id: Option<PeerId>, now: Instant) {
        let peer = PersistentPeer { addr, id };
        if !self.manager.add_persistent(peer, now) {
            return;
        }
        let connected = self
            .conns
            .values()
            .find(|e| e.announced && (e.addr == addr || (id.is_some() && e.conn.remote() == id)));
        if let Some(e) = connected {
            if let Some(remote) = e.conn.remote() {
                self.manager.persistent_connected(e.addr, remote);
            }
        }
    }

    pub(super) fn peer_details(&mut self, peer: PeerId, now: Instant) -> Option<PeerDetails> {
        let id = *self.peers.get(&peer)?;
        let e = self.conns.get(&id)?;
        let persistent = e.persistent || self.manager.is_persistent(e.addr, Some(peer));
        let mut details = PeerDetails {
            id: peer,
            addr: e.addr,
            direction: e.conn.direction(),
            version: e.version.clone(),
            channels: e.channels.clone(),
            score: Default::default(),
            rtt: e.conn.rtt(),
            persistent,
            unconditional: self.manager.is_unconditional(&peer),
            connected_since: e.connected_at.unwrap_or(now),
            traffic: e.conn.channel_counters().unwrap_or_default(),
            observed_addr: e.observed,
            bytes_read: e.bytes_read,
            bytes_written: e.bytes_written,
        };
        details.score = self.manager.score(&peer, now);
        Some(details)
    }
}

fn report_label(what: Misbehavior) -> &'static str {
    match what {
        Misbehavior::Minor => "minor",
        Misbehavior::Invalid => "invalid",
        Misbehavior::Malicious => "malicious",
    }
}
