//! Request/response and routing on the handle: a request to a peer, the answer to
//! one received, and a request routed to whichever provider of a key answers.

use super::handle::NEXT_REQUEST;
use super::*;
use crate::node::requests::Answer;

/// How [`NodeHandle::route`] goes about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOptions {
    /// Providers asked at once in each round; the first answer wins.
    pub fanout: usize,
    /// How long each round's requests may take. (The provider lookup ends by the
    /// DHT's own timeouts.)
    pub timeout: Duration,
    /// Providers tried in all, at most, before giving up.
    pub attempts: usize,
}

impl Default for RouteOptions {
    /// One provider at a time, three in all, 5 s each.
    fn default() -> Self {
        RouteOptions {
            fanout: 1,
            timeout: Duration::from_secs(5),
            attempts: 3,
        }
    }
}

/// What became of a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// A provider answered.
    Delivered {
        /// The provider that answered.
        peer: PeerId,
        /// Its answer.
        answer: Vec<u8>,
        /// The providers tried before it (the fallbacks taken), with why each failed.
        failed: Vec<(PeerId, RequestError)>,
    },
    /// The lookup found no provider of the key (or none but this node).
    NoProvider,
    /// The provider lookup did not finish (the node is closing, or runs no DHT).
    LookupFailed(SendError),
    /// Every provider tried failed.
    AllFailed {
        /// Each provider tried, with why it failed.
        tried: Vec<(PeerId, RequestError)>,
    },
}

/// The longest a route waits for its provider lookup: the DHT ends every lookup by
/// its own request timeouts well before; this only guards against a stuck loop.
const LOOKUP_WAIT: Duration = Duration::from_secs(30);

impl NodeHandle {
    /// Sends `data` as a request to `peer` on `channel` and waits for the answer,
    /// at most `timeout` ([`RequestError::TimedOut`] after it). If `peer` is not
    /// connected, it is found (in the DHT's table, else by a lookup of its id) and
    /// reached over a lookup-only connection, which takes no peer slot, joins no
    /// gossip mesh and closes once idle.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle, peer: meshwire::PeerId) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// const BLOCKS: u32 = 3;
    /// let block = node.request(peer, BLOCKS, b"height=42".to_vec(), Duration::from_secs(2))?;
    /// # let _ = block; Ok(()) }
    /// ```
    pub fn request(
        &self,
        peer: PeerId,
        channel: ChannelId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let data = self.request_data(channel, data)?;
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(RequestError::Closed);
        }
        let (cmd, rx) = self.with_reply(
            |request| Command::Request {
                peer,
                channel,
                data,
                timeout,
                answer: Answer::Reply(request),
            },
            |r| match r {
                Reply::Response(r) => Some(r),
                _ => None,
            },
        );
        self.inner
            .runtime
            .submit(cmd)
            .map_err(|_| RequestError::Closed)?;
        // The core times the request out; the margin covers a busy loop.
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(RequestError::TimedOut),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(RequestError::Closed),
        }
    }

    /// [`NodeHandle::request`] without waiting: the answer arrives as
    /// [`Event::Response`] under the id returned.
    pub fn request_async(
        &self,
        peer: PeerId,
        channel: ChannelId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<OutboundRequestId, RequestError> {
        let data = self.request_data(channel, data)?;
        let id = OutboundRequestId(NEXT_REQUEST.fetch_add(1, Ordering::Relaxed));
        self.submit(Command::Request {
            peer,
            channel,
            data,
            timeout,
            answer: Answer::Event(id),
        })
        .map_err(|_| RequestError::Closed)?;
        Ok(id)
    }

    /// Answers the request `id` (from [`Event::Request`]) with `data`, on the
    /// channel it came on. An answer too late (after
    /// [`RequestConfig::inbound_timeout`]) or to a peer gone is counted in the
    /// metrics' drops.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// for ev in node.events() {
    ///     if let meshwire::Event::Request { id, data, .. } = ev {
    ///         node.respond(id, data)?; // an echo server
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn respond(&self, id: InboundRequestId, data: Vec<u8>) -> Result<(), SendError> {
        self.submit(Command::Respond(id, Arc::new(data)))
    }

    /// Checks a request's channel and size here, before it costs the loop anything.
    fn request_data(
        &self,
        channel: ChannelId,
        data: Vec<u8>,
    ) -> Result<Arc<Vec<u8>>, RequestError> {
        let config = self
            .inner
            .shared
            .config
            .channel(channel)
            .filter(|c| c.requests)
            .ok_or(RequestError::UnknownChannel(channel))?;
        if data.len() > config.max_message_size {
            return Err(RequestError::TooLarge {
                size: data.len(),
                max: config.max_message_size,
            });
        }
        Ok(Arc::new(data))
    }

    /// Sends `data` as a request on `channel` to a provider of `key` (a service, a
    /// partition: see [`crate::kad::key::key_from_name`]) and returns the first
    /// answer. The providers are found by a DHT lookup and tried best first (by
    /// score, then by observed round-trip time), `fanout` at a time, over
    /// lookup-only connections where not connected; on a failure or timeout the
    /// next ones are tried, up to `attempts` providers. A one-way message is
    /// routed the same way: the provider acknowledges it with any answer (empty
    /// will do), so that delivery is known rather than hoped for.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle) {
    /// use meshwire::kad::key::key_from_name;
    /// use meshwire::{RouteOptions, RouteOutcome};
    /// const TXS: u32 = 4;
    /// let key = key_from_name("acc/partition/2");
    /// match node.route(key, TXS, b"tx".to_vec(), RouteOptions::default()) {
    ///     RouteOutcome::Delivered { peer, failed, .. } => {
    ///         println!("{peer} took it after {} fallbacks", failed.len())
    ///     }
    ///     RouteOutcome::NoProvider => println!("nobody serves partition 2"),
    ///     RouteOutcome::AllFailed { tried } => println!("all {} failed", tried.len()),
    ///     RouteOutcome::LookupFailed(e) => println!("no lookup: {e}"),
    /// }
    /// # }
    /// ```
    pub fn route(
        &self,
        key: Key,
        channel: ChannelId,
        data: Vec<u8>,
        opts: RouteOptions,
    ) -> RouteOutcome {
        let me = self.peer_id();
        let found = match self.find_providers_blocking(key, LOOKUP_WAIT) {
            Ok(r) => r.providers,
            Err(e) => return RouteOutcome::LookupFailed(e),
        };
        let providers: Vec<PeerId> = found.iter().map(|r| r.id()).filter(|p| *p != me).collect();
        if providers.is_empty() {
            return RouteOutcome::NoProvider;
        }
        let ranked = self
            .ask(
                |request| Command::RankPeers(providers.clone(), request),
                |r| match r {
                    Reply::Ranked(r) => Some(r),
                    _ => None,
                },
                Duration::from_secs(5),
            )
            .unwrap_or(providers);
        let mut tried = Vec::new();
        let candidates = &ranked[..ranked.len().min(opts.attempts.max(1))];
        for round in candidates.chunks(opts.fanout.max(1)) {
            let (tx, rx) = crossbeam_channel::bounded(round.len());
            for &peer in round {
                let (node, tx, data) = (self.clone(), tx.clone(), data.clone());
                let timeout = opts.timeout;
                let ask = move || {
                    let _ = tx.send((peer, node.request(peer, channel, data, timeout)));
                };
                if round.len() == 1 {
                    ask();
                } else {
                    std::thread::spawn(ask);
                }
            }
            drop(tx);
            for (peer, result) in rx.iter() {
                match result {
                    Ok(answer) => {
                        return RouteOutcome::Delivered {
                            peer,
                            answer,
                            failed: tried,
                        }
                    }
                    Err(e) => {
                        log::debug!("route: provider {} failed: {e}", peer.short());
                        tried.push((peer, e));
                    }
                }
            }
        }
        RouteOutcome::AllFailed { tried }
    }
}
