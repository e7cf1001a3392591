//! Kademlia RPCs in: requests answered, responses fed to their lookups, sender
//! records learned into the table; misbehaviour reported.

use super::*;
use crate::kad::provider::{Provider, UncheckedProvider, MAX_PROVIDER_METADATA};
use crate::kad::shape;

impl Kademlia {
    // ------------------------------------------------------------ inputs

    /// A peer connected: introduce ourselves, and learn its record from the answer.
    pub fn on_connected(&mut self, peer: PeerId, addrs: Vec<SocketAddr>, now: Instant) {
        self.request(
            peer,
            addrs,
            wire::kad_request::Body::Ping(wire::KadPing {}),
            None,
            false,
            now,
        );
    }

    /// `peer` cannot be reached: its requests fail now.
    pub fn on_unreachable(&mut self, peer: PeerId, now: Instant) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail_request(id, now);
        }
    }

    /// A message from `from` on the Kademlia channel, whose connection comes from
    /// `seen` (what the table's diversity limits count).
    pub fn handle_message(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        bytes: &[u8],
        now: Instant,
    ) {
        let (k, max_providers) = (self.config.table.k, self.config.max_providers_per_key);
        let reason = match shape::within_limits(bytes, k, max_providers) {
            Ok(true) => None,
            Ok(false) => Some(KadViolation::OverLimits),
            Err(_) => Some(KadViolation::Undecodable),
        };
        if let Some(reason) = reason {
            // Whatever it was meant to answer counts as failed: lookups move on.
            self.misbehaved(from, reason);
            return self.on_unreachable(from, now);
        }
        let Ok(msg) = wire::KadMessage::decode(bytes) else {
            return self.misbehaved(from, KadViolation::Undecodable);
        };
        match msg.msg {
            Some(wire::kad_message::Msg::Request(req)) => self.handle_request(from, seen, req, now),
            Some(wire::kad_message::Msg::Response(resp)) => {
                self.handle_response(from, seen, resp, now)
            }
            None => self.misbehaved(from, KadViolation::Empty),
        }
    }

    pub(super) fn misbehaved(&mut self, peer: PeerId, reason: KadViolation) {
        log::debug!("kad: peer {} misbehaved: {reason}", peer.short());
        self.outputs
            .push_back(KadOutput::Misbehaved { peer, reason });
    }

    /// Verifies the record a peer sent about itself and puts it in the table. `Err`
    /// when the record is bad (the peer is reported); `Ok(None)` when there is none.
    pub(super) fn learn_sender(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        raw: Option<wire::PeerRecord>,
        now: Instant,
    ) -> Result<Option<PeerRecord>, ()> {
        let Some(raw) = raw else { return Ok(None) };
        match self.verify_record(raw) {
            Ok(rec) if rec.id == from && self.private.contains(&from) => Ok(Some(rec)),
            Ok(rec) if rec.id == from => {
                self.admit_record(rec.clone(), seen, now);
                Ok(Some(rec))
            }
            Ok(_) => {
                self.misbehaved(from, KadViolation::SenderRecordOfAnother);
                Err(())
            }
            Err(_) => {
                self.misbehaved(from, KadViolation::InvalidSenderRecord);
                Err(())
            }
        }
    }

    pub(super) fn handle_request(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        req: wire::KadRequest,
        now: Instant,
    ) {
        if !self.rates.try_take(from, now) {
            return self.misbehaved(from, KadViolation::RequestRate);
        }
        let Ok(sender) = self.learn_sender(from, seen, req.sender, now) else {
            return;
        };
        let sender_addrs = sender.as_ref().map(|r| r.addrs.clone()).unwrap_or_default();
        let k = self.config.table.k;
        let mut resp = wire::KadResponse {
            id: req.id,
            sender: Some(self.record.to_wire()),
            ..Default::default()
        };
        use wire::kad_request::Body;
        match req.body {
            Some(Body::Ping(_)) => {}
            Some(Body::FindNode(f)) => {
                let Some(key) = key32(&f.key) else {
                    return self.misbehaved(from, KadViolation::BadKey);
                };
                resp.closer = self.closest_except(&key, k, from);
            }
            Some(Body::GetProviders(g)) => {
                let Some(key) = key32(&g.key) else {
                    return self.misbehaved(from, KadViolation::BadKey);
                };
                resp.providers = self
                    .providers
                    .get(&key, now)
                    .iter()
                    .map(Provider::to_wire)
                    .collect();
                resp.closer = self.closest_except(&key, k, from);
            }
            Some(Body::AddProvider(a)) => {
                let Some(key) = key32(&a.key) else {
                    return self.misbehaved(from, KadViolation::BadKey);
                };
                let Some(rec) = sender else {
                    return self.misbehaved(from, KadViolation::ProviderWithoutRecord);
                };
                // The metadata's bound is checked before the signature is.
                if a.metadata.len() > MAX_PROVIDER_METADATA {
                    return self.misbehaved(from, KadViolation::ProviderMetadataTooLarge);
                }
                if !self.private.contains(&from) {
                    let Some(provider) = Provider::verified(rec, &key, a.metadata, a.signature)
                    else {
                        return self.misbehaved(from, KadViolation::BadProviderSignature);
                    };
                    // Our TTL cap, and a cap per provider, whatever the peer asks for.
                    let ttl = Duration::from_secs(a.ttl_secs).min(self.config.provider_ttl);
                    self.providers.add(key, provider, ttl, now);
                }
            }
            None => return self.misbehaved(from, KadViolation::NoBody),
        }
        let bytes = wire::KadMessage {
            msg: Some(wire::kad_message::Msg::Response(resp)),
        }
        .encode_to_vec();
        self.outputs.push_back(KadOutput::Send {
            peer: from,
            addrs: sender_addrs,
            bytes,
        });
    }

    pub(super) fn closest_except(
        &self,
        key: &Key,
        k: usize,
        except: PeerId,
    ) -> Vec<wire::PeerRecord> {
        self.table
            .closest_refs(key, k + 1)
            .into_iter()
            .filter(|r| r.id != except)
            .take(k)
            .map(|r| r.to_wire())
            .collect()
    }

    pub(super) fn handle_response(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        resp: wire::KadResponse,
        now: Instant,
    ) {
        let Some(pending) = self.untrack(resp.id) else {
            return; // late or unknown: harmless
        };
        if pending.peer != from {
            self.track(resp.id, pending);
            return self.misbehaved(from, KadViolation::UnsolicitedAnswer);
        }
        let k = self.config.table.k;
        let oversized =
            resp.closer.len() > k || resp.providers.len() > self.config.max_providers_per_key;
        if oversized {
            self.misbehaved(from, KadViolation::OversizedAnswer);
        }
        if oversized || self.learn_sender(from, seen, resp.sender, now).is_err() {
            // A dropped answer is a failed request: the lookup moves on without it.
            return self.request_failed(pending, now);
        }
        if pending.table_ping {
            self.table.ping_result(from, true, now);
        }
        // Shapes only: signatures are checked when a record is about to be used.
        let mut malformed = false;
        let mut parse = |list: Vec<wire::PeerRecord>| -> Vec<UncheckedRecord> {
            list.into_iter()
                .filter_map(|r| match UncheckedRecord::parse(r) {
                    Ok(r) => Some(r),
                    Err(_) => {
                        malformed = true;
                        None
                    }
                })
                .collect()
        };
        let closer = parse(resp.closer);
        let providers: Vec<UncheckedProvider> = resp
            .providers
            .into_iter()
            .filter_map(|p| {
                let parsed = UncheckedProvider::parse(p);
                malformed |= parsed.is_none();
                parsed
            })
            .collect();
        if malformed {
            self.misbehaved(from, KadViolation::MalformedRecord);
        }
        if let Some(id) = pending.lookup {
            if let Some(run) = self.lookups.get_mut(&id) {
                run.lookup.on_response(&from, closer, providers);
            }
            self.drive(id, now);
        }
    }
}
