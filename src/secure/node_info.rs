//! What a node tells its peer about itself in the handshake.

use std::net::SocketAddr;

use prost::Message;

use crate::error::HandshakeError;
use crate::wire;

/// Most listen addresses a node may announce.
pub const MAX_LISTEN_ADDRS: usize = 16;
/// Longest software version string.
pub const MAX_VERSION_LEN: usize = 64;
/// Most channels a node may announce.
pub const MAX_CHANNELS: usize = 256;
const MAX_ADDR_LEN: usize = 64;
/// Smallest frame plaintext a node may announce: room for any control packet.
pub const MIN_FRAME_PLAINTEXT: usize = 1024;

/// A node's self-description, carried sealed in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Addresses the node accepts connections on.
    pub listen_addrs: Vec<SocketAddr>,
    /// Software name and version, e.g. `meshwire/0.1.0`.
    pub version: String,
    /// Channel ids the node serves.
    pub channels: Vec<u32>,
    /// The connection carries DHT lookups only (no peer slot, closed when idle).
    pub lookup_only: bool,
    /// Largest frame plaintext the node accepts (`None`: not announced).
    pub max_frame_plaintext: Option<usize>,
    /// Largest message the node accepts on each of `channels`, in the same order
    /// (empty: not announced).
    pub channel_max_message: Vec<u64>,
    /// The address the node sees the other side of this connection on (set per
    /// connection; `None`: not told).
    pub observed_addr: Option<SocketAddr>,
}

impl NodeInfo {
    pub(crate) fn encode(&self) -> Vec<u8> {
        wire::NodeInfo {
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            version: self.version.clone(),
            channels: self.channels.clone(),
            lookup_only: self.lookup_only,
            max_frame_plaintext: self
                .max_frame_plaintext
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            channel_max_message: self.channel_max_message.clone(),
            observed_addr: self
                .observed_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
        .encode_to_vec()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let raw =
            wire::NodeInfo::decode(bytes).map_err(|_| HandshakeError::Malformed("node info"))?;
        if raw.listen_addrs.len() > MAX_LISTEN_ADDRS {
            return Err(HandshakeError::BadNodeInfo("too many listen addresses"));
        }
        if raw.version.len() > MAX_VERSION_LEN {
            return Err(HandshakeError::BadNodeInfo("version string too long"));
        }
        if raw.channels.len() > MAX_CHANNELS {
            return Err(HandshakeError::BadNodeInfo("too many channels"));
        }
        let frame = raw.max_frame_plaintext as usize;
        if frame != 0
            && !(MIN_FRAME_PLAINTEXT..=crate::secure::frame::MAX_PLAINTEXT_LIMIT).contains(&frame)
        {
            return Err(HandshakeError::BadNodeInfo("frame size out of range"));
        }
        let limits = raw.channel_max_message.len();
        if limits != 0 && limits != raw.channels.len() {
            return Err(HandshakeError::BadNodeInfo(
                "channel limits do not match the channels",
            ));
        }
        let listen_addrs = raw
            .listen_addrs
            .iter()
            .map(|a| {
                if a.len() > MAX_ADDR_LEN {
                    return Err(HandshakeError::BadNodeInfo("listen address too long"));
                }
                a.parse()
                    .map_err(|_| HandshakeError::BadNodeInfo("listen address is not ip:port"))
            })
            .collect::<Result<_, _>>()?;
        let observed_addr = match raw.observed_addr.as_str() {
            "" => None,
            a if a.len() > MAX_ADDR_LEN => {
                return Err(HandshakeError::BadNodeInfo("observed address too long"))
            }
            a => Some(
                a.parse()
                    .map_err(|_| HandshakeError::BadNodeInfo("observed address is not ip:port"))?,
            ),
        };
        Ok(NodeInfo {
            listen_addrs,
            version: raw.version,
            channels: raw.channels,
            lookup_only: raw.lookup_only,
            max_frame_plaintext: (raw.max_frame_plaintext > 0)
                .then_some(raw.max_frame_plaintext as usize),
            channel_max_message: raw.channel_max_message,
            observed_addr,
        })
    }

    /// The largest message the node accepts on `channel`, if it announced one.
    pub fn max_message(&self, channel: u32) -> Option<usize> {
        let i = self.channels.iter().position(|c| *c == channel)?;
        let max = *self.channel_max_message.get(i)?;
        Some(usize::try_from(max).unwrap_or(usize::MAX))
    }

    /// Checks our own info against the limits a peer will apply.
    pub(crate) fn validate(&self) -> Result<(), HandshakeError> {
        Self::decode(&self.encode()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observed_address_round_trips_and_junk_is_refused() {
        let info = NodeInfo {
            observed_addr: Some("203.0.113.7:50001".parse().unwrap()),
            ..NodeInfo::default()
        };
        assert_eq!(NodeInfo::decode(&info.encode()), Ok(info));
        for junk in ["not an address", "203.0.113.7", &"9".repeat(65)] {
            let raw = wire::NodeInfo {
                observed_addr: junk.to_string(),
                ..Default::default()
            };
            assert!(matches!(
                NodeInfo::decode(&raw.encode_to_vec()),
                Err(HandshakeError::BadNodeInfo(_))
            ));
        }
        assert_eq!(
            NodeInfo::decode(&NodeInfo::default().encode()).map(|i| i.observed_addr),
            Ok(None)
        );
    }
}
