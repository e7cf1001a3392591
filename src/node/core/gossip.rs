//! The gossip router in the node: carrying out what it asks for, with the credit
//! of the RPC that caused it.

use super::*;
use crate::gossip::MessageId;

/// Least time between two outbound peers swapped for ones a PRUNE offered.
const PX_REPLACE_EVERY: Duration = Duration::from_secs(30);

impl NodeCore {
    /// Carries out what the gossip router asked for. `credit` is the connection and
    /// size of the RPC just handled: its deliveries hold that credit until taken.
    pub(super) fn drain_gossip(&mut self, now: Instant, mut credit: Option<(ConnId, usize)>) {
        let Some(router) = &mut self.router else {
            return self.release_rest(credit);
        };
        let outputs: Vec<GossipOutput> = std::iter::from_fn(|| router.poll_output()).collect();
        for out in outputs {
            match out {
                GossipOutput::Send {
                    peer,
                    bytes,
                    deadline,
                    chunk_of,
                } => {
                    let Some(&id) = self.peers.get(&peer) else {
                        continue;
                    };
                    let Some(e) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    let opts = SendOptions {
                        deadline: Some(deadline),
                        replace_key: None,
                        withdraw_key: chunk_of.as_ref().map(withdraw_key),
                    };
                    if let Err(err) = e.conn.send(GOSSIP_CHANNEL, bytes, opts) {
                        let reason = match err {
                            SendError::Full => "gossip_queue_full",
                            SendError::Closed => "gossip_conn_closing",
                            SendError::UnknownChannel(_) => "gossip_channel_not_served",
                            SendError::UnknownPeer => "gossip_conn_not_open",
                            SendError::TooLarge { .. } => "gossip_too_large",
                            SendError::TimedOut => "gossip_timed_out",
                        };
                        Metrics::count(&mut self.metrics.drops, reason);
                    }
                    self.touched.push(id);
                }
                GossipOutput::Withdraw { peer, id } => {
                    let conn = self.peers.get(&peer).and_then(|c| self.conns.get_mut(c));
                    if let Some(mux) = conn.and_then(|e| e.conn.mux()) {
                        mux.withdraw(GOSSIP_CHANNEL, withdraw_key(&id));
                    }
                }
                GossipOutput::Deliver(ev) => {
                    let release = credit.as_mut().map(|(conn, left)| {
                        let n = ev.data.len().min(*left);
                        *left -= n;
                        (*conn, GOSSIP_CHANNEL, n)
                    });
                    self.delivery_push(Event::Gossip(ev), release);
                }
                GossipOutput::Penalize { peer, penalty } => {
                    log::debug!("peer {} misbehaved in gossip: {penalty}", peer.short());
                    let full = self.config.limits.violation_penalty;
                    let delta = if penalty.is_severe() {
                        -full
                    } else {
                        -full / 5.0
                    };
                    self.punish(peer, ScoreSource::Gossip, delta, now);
                }
                GossipOutput::Connect { from, records } => {
                    let (_, outbound) = self.manager.slots();
                    let free = self.config.limits.max_outbound.saturating_sub(outbound);
                    // No slot free: the outbound peer whose full mesh pruned us makes room
                    // for one it offered, so a node is never stuck among full meshes. At
                    // most one such swap per PX_REPLACE_EVERY: with few slots and meshes
                    // trimmed at every heartbeat, swapping on every prune churned
                    // (testnet, 500 nodes: 589 connections closed in a 7 s publish phase,
                    // 1,371 forwards refused by closing connections).
                    let may_swap = self
                        .px_swapped_at
                        .is_none_or(|t| now.saturating_duration_since(t) >= PX_REPLACE_EVERY);
                    let replace = free == 0
                        && may_swap
                        && self
                            .peers
                            .get(&from)
                            .and_then(|id| self.conns.get(id))
                            .is_some_and(|e| {
                                e.slot == Slot::Outbound
                                    && !self
                                        .config
                                        .persistent_peers
                                        .iter()
                                        .any(|p| p.id == Some(from))
                            });
                    if replace {
                        self.px_swapped_at = Some(now);
                        if let Some(&id) = self.peers.get(&from) {
                            if let Some(e) = self.conns.get_mut(&id) {
                                // Its slot goes to the replacement right away.
                                e.slot = self.manager.unslot(e.slot);
                            }
                            self.close_conn(id, LocalClose::Requested, true, now);
                        }
                    }
                    let dials = if replace { 1 } else { free.min(2) };
                    // Peer exchange obeys the per-subnet cap of outbound peers too.
                    let mut per_subnet = self.outbound_subnets();
                    let mut fresh = Vec::new();
                    for r in records {
                        let Some(addr) = r.addrs.first().copied() else {
                            continue;
                        };
                        let n = per_subnet.entry(subnet(addr.ip())).or_default();
                        if self.peers.contains_key(&r.id) || *n >= MAX_OUTBOUND_PER_SUBNET {
                            continue;
                        }
                        *n += 1;
                        fresh.push((r.id, addr));
                        if fresh.len() >= dials {
                            break;
                        }
                    }
                    for (peer, addr) in fresh {
                        self.dial(addr, Some(peer), false, now);
                    }
                }
            }
        }
        self.release_rest(credit);
    }

    /// Gives back the part of an RPC's credit no delivery holds.
    pub(super) fn release_rest(&mut self, credit: Option<(ConnId, usize)>) {
        if let Some((id, left)) = credit.filter(|(_, left)| *left > 0) {
            if let Some(e) = self.conns.get_mut(&id) {
                e.conn.release(GOSSIP_CHANNEL, left);
                self.touched.push(id);
            }
        }
    }
}

/// The mux key of a message's chunks. Eight bytes of the id: two ids sharing them
/// (which an origin could grind for) only let a peer that says it has one go
/// without our chunks of the other, which costs that peer alone.
fn withdraw_key(id: &MessageId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    u64::from_le_bytes(b)
}
