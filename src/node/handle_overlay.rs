//! The handle's gossip and DHT calls: topics, publishing, lookups, providing.

use super::*;

impl NodeHandle {
    /// Subscribes to a gossip topic: its messages arrive as [`Event::Gossip`].
    pub fn subscribe(&self, topic: &str) -> Result<(), SendError> {
        self.submit(Command::Subscribe(topic.to_string()))
    }

    /// Leaves a gossip topic.
    pub fn unsubscribe(&self, topic: &str) -> Result<(), SendError> {
        self.submit(Command::Unsubscribe(topic.to_string()))
    }

    /// Publishes `data` to every subscriber of `topic`; returns the message id. The
    /// message is signed here, on the caller's thread.
    pub fn publish(&self, topic: &str, data: Vec<u8>) -> Result<MessageId, SendError> {
        let Some(gossip) = self.inner.shared.config.gossip.as_ref() else {
            return Err(SendError::TooLarge {
                size: data.len(),
                max: 0,
            });
        };
        let max = gossip.max_message_size;
        if data.len() > max {
            return Err(SendError::TooLarge {
                size: data.len(),
                max,
            });
        }
        let seqno = self.inner.seqno.fetch_add(1, Ordering::Relaxed);
        let key = self.inner.sign.then_some(&*self.inner.key);
        // Signed (and cut into chunks) here, on the caller's thread, not the loop's.
        let msg = Outgoing::build(
            gossip,
            key,
            topic,
            seqno,
            data,
            Some(std::time::SystemTime::now()),
        );
        let id = msg.id();
        self.submit(Command::Publish(Box::new(msg)))?;
        Ok(id)
    }

    /// Gossip counters per topic.
    pub fn gossip_metrics(&self) -> Result<HashMap<String, TopicMetrics>, SendError> {
        self.ask(
            Command::GossipMetrics,
            |r| match r {
                Reply::GossipMetrics(m) => Some(m),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// The mesh peers of `topic`.
    pub fn mesh_peers(&self, topic: &str) -> Result<Vec<PeerId>, SendError> {
        self.ask(
            |request| Command::MeshPeers(topic.to_string(), request),
            |r| match r {
                Reply::MeshPeers(m) => Some(m),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// Starts a DHT lookup of the nodes closest to `key`; the answer arrives as
    /// [`Event::Lookup`].
    pub fn find_node(&self, key: Key) -> Result<(), SendError> {
        self.submit(Command::FindNode(key, None))
    }

    /// Starts a DHT lookup of the providers of `key`; the answer arrives as
    /// [`Event::Lookup`].
    pub fn find_providers(&self, key: Key) -> Result<(), SendError> {
        self.submit(Command::FindProviders(key, None))
    }

    /// Looks up the nodes closest to `key`, waiting at most `timeout`
    /// ([`SendError::TimedOut`] after it).
    pub fn find_node_blocking(
        &self,
        key: Key,
        timeout: Duration,
    ) -> Result<LookupResult, SendError> {
        self.ask(
            |request| Command::FindNode(key, Some(request)),
            pick_lookup,
            timeout,
        )
    }

    /// Looks up the providers of `key`, waiting at most `timeout`
    /// ([`SendError::TimedOut`] after it).
    pub fn find_providers_blocking(
        &self,
        key: Key,
        timeout: Duration,
    ) -> Result<LookupResult, SendError> {
        self.ask(
            |request| Command::FindProviders(key, Some(request)),
            pick_lookup,
            timeout,
        )
    }

    /// Announces this node as a provider of `key` (a service, a partition) to the
    /// nodes closest to it, and keeps republishing it.
    pub fn provide(&self, key: Key) -> Result<(), SendError> {
        self.provide_with(key, Vec::new())
    }

    /// [`NodeHandle::provide`] with `metadata` (at most
    /// [`MAX_PROVIDER_METADATA`](crate::kad::provider::MAX_PROVIDER_METADATA)
    /// bytes: a version, a shard, a capacity) in the signed announcement, which
    /// [`NodeHandle::find_providers`] returns with the provider. Providing the key
    /// again replaces the metadata.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle) -> Result<(), meshwire::SendError> {
    /// use meshwire::kad::key::key_from_name;
    /// node.provide_with(key_from_name("acc/partition/X"), b"api=v2;height=1042".to_vec())?;
    /// # Ok(()) }
    /// ```
    pub fn provide_with(&self, key: Key, metadata: Vec<u8>) -> Result<(), SendError> {
        let max = crate::kad::provider::MAX_PROVIDER_METADATA;
        if metadata.len() > max {
            return Err(SendError::TooLarge {
                size: metadata.len(),
                max,
            });
        }
        self.submit(Command::Provide(key, metadata))
    }

    /// Stops announcing this node as a provider of `key`: it is no longer
    /// republished, and the records the closest nodes hold expire at their TTL
    /// (`KadConfig::provider_ttl`).
    pub fn stop_providing(&self, key: Key) -> Result<(), SendError> {
        self.submit(Command::StopProviding(key))
    }

    /// A snapshot of the DHT's routing table.
    pub fn routing_table(&self) -> Result<Vec<PeerRecord>, SendError> {
        self.ask(
            Command::RoutingTable,
            |r| match r {
                Reply::RoutingTable(t) => Some(t),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }
}

fn pick_lookup(r: Reply) -> Option<LookupResult> {
    match r {
        Reply::Lookup(l) => Some(l),
        _ => None,
    }
}
