//! Commands from the application's handles.

use super::*;

impl NodeCore {
    // ------------------------------------------------------------ commands

    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Dial { addr, expected } => self.dial(addr, expected, false, now),
            Command::Request {
                peer,
                channel,
                data,
                timeout,
                answer,
            } => self.start_request(peer, channel, data, timeout, answer, now),
            Command::Respond(request, data) => self.respond(request, data, now),
            Command::RankPeers(peers, request) => {
                let ranked = self.rank_peers(peers, now);
                self.reply(request, Reply::Ranked(ranked));
            }
            Command::Send {
                peer,
                channel,
                data,
                opts,
            } => {
                if let Err(e) = self.send_to(peer, channel, data, opts) {
                    self.count_send_failure(peer, channel, &e);
                }
            }
            Command::Broadcast {
                peers,
                channel,
                data,
            } => {
                for peer in peers {
                    if let Err(e) =
                        self.send_to(peer, channel, data.clone(), SendOptions::default())
                    {
                        self.count_send_failure(peer, channel, &e);
                    }
                }
            }
            Command::Disconnect(peer) => {
                if let Some(&id) = self.peers.get(&peer) {
                    self.close_conn(id, LocalClose::Requested, true, now);
                }
            }
            Command::Ban(peer, duration) => {
                self.manager.ban(peer, duration, now);
                self.metrics.bans += 1;
                if let Some(&id) = self.peers.get(&peer) {
                    self.close_conn(id, LocalClose::Banned, false, now);
                }
            }
            Command::Report(peer, what, reason) => self.report(peer, what, &reason, now),
            Command::MarkGood(peer) => self.mark_good(peer, now),
            Command::AddPersistent(addr, id) => self.add_persistent(addr, id, now),
            Command::RemovePersistent(addr) => self.manager.remove_persistent(Some(addr), None),
            Command::SetUnconditional(peer, yes) => self.manager.set_unconditional(peer, yes),
            Command::ReportValidation(id, verdict) => {
                if let Some(r) = &mut self.router {
                    if !r.report_validation(id, verdict, now) {
                        self.metrics_drop("verdict_unknown_id");
                    }
                }
                self.drain_gossip(now, None);
            }
            Command::SetPrivate(peer, yes) => {
                if let Some(kad) = &mut self.kad {
                    kad.set_private(peer, yes);
                }
            }
            Command::PeerInfo(peer, request) => {
                let details = self.peer_details(peer, now).map(Box::new);
                self.reply(request, Reply::PeerInfo(details));
            }
            Command::Metrics(request) => {
                let m = Box::new(self.metrics());
                self.reply(request, Reply::Metrics(m));
            }
            Command::Subscribe(topic) => {
                if let Some(r) = &mut self.router {
                    r.subscribe(&topic, now);
                }
                self.drain_gossip(now, None);
            }
            Command::Unsubscribe(topic) => {
                if let Some(r) = &mut self.router {
                    r.unsubscribe(&topic, now);
                }
                self.drain_gossip(now, None);
            }
            Command::Publish(msg) => {
                let (topic, id) = (msg.topic().to_string(), msg.id());
                if let Some(r) = &mut self.router {
                    if let Err(reason) = r.publish_outgoing(*msg, now) {
                        Metrics::count(&mut self.metrics.drops, "publish_no_peers");
                        self.delivery_push(Event::PublishFailed { topic, id, reason }, None);
                    }
                }
                self.drain_gossip(now, None);
            }
            Command::GossipMetrics(request) => {
                let m = self
                    .router
                    .as_ref()
                    .map(Router::metrics)
                    .unwrap_or_default();
                self.reply(request, Reply::GossipMetrics(m));
            }
            Command::MeshPeers(topic, request) => {
                let m = self
                    .router
                    .as_ref()
                    .map(|r| r.mesh(&topic))
                    .unwrap_or_default();
                self.reply(request, Reply::MeshPeers(m));
            }
            Command::FindNode(key, reply) => {
                self.user_lookup(key, LookupKind::FindNode, reply, now)
            }
            Command::FindProviders(key, reply) => {
                self.user_lookup(key, LookupKind::GetProviders, reply, now)
            }
            Command::Provide(key, metadata) => {
                // Signed here: the DHT holds no key of ours.
                let signature = crate::kad::provider::sign(&self.key, &key, &metadata);
                let id = self
                    .kad
                    .as_mut()
                    .and_then(|k| k.provide(key, metadata, signature, now));
                self.user_lookups.extend(id);
                self.drain_kad(now);
            }
            Command::StopProviding(key) => {
                if let Some(kad) = &mut self.kad {
                    kad.stop_providing(&key);
                }
            }
            Command::RoutingTable(request) => {
                let table = self
                    .kad
                    .as_ref()
                    .map(|k| k.table().records().cloned().collect())
                    .unwrap_or_default();
                self.reply(request, Reply::RoutingTable(table));
            }
            Command::Shutdown(request) => {
                self.shutdown.get_or_insert_with(Vec::new).push(request);
                let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                for id in ids {
                    self.close_conn(id, LocalClose::Shutdown, true, now);
                }
                self.check_shutdown_done();
            }
        }
    }

    pub(super) fn send_to(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        let id = *self.peers.get(&peer).ok_or(SendError::UnknownPeer)?;
        let entry = self.conns.get_mut(&id).ok_or(SendError::UnknownPeer)?;
        entry.conn.send(channel, data, opts)?;
        self.touched.push(id);
        Ok(())
    }

    /// A message accepted by the handle never reached a queue: free its count.
    pub(super) fn count_send_failure(&mut self, peer: PeerId, channel: ChannelId, e: &SendError) {
        self.outputs.push_back(Output::Dequeued {
            peer,
            channel,
            n: 1,
        });
        self.metrics_drop(match e {
            SendError::Full => "queue_full",
            SendError::UnknownPeer => "peer_gone",
            // Over what the peer announced it accepts on the channel.
            SendError::TooLarge { .. } => "too_large_for_peer",
            _ => "send_error",
        });
    }

    pub(super) fn metrics_drop(&mut self, reason: &'static str) {
        Metrics::count(&mut self.metrics.drops, reason);
    }
}
