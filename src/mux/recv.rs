//! One channel's receive side: reassembly bounded by the message size, and credit.

use crate::error::MuxError;
use crate::mux::config::ChannelConfig;
use crate::mux::tag::Tag;

pub(crate) struct RecvChannel {
    id: u32,
    pub(crate) announce_first: bool,
    max_message_size: usize,
    window: u64,
    partial: Vec<u8>,
    /// The tag of the message being reassembled (from its first fragment).
    tag: Tag,
    /// Total bytes granted to the peer, and total received.
    granted: u64,
    received: u64,
    /// Bytes the application took that are not yet granted back.
    released: u64,
    /// A grant waiting to be sent.
    pub(crate) to_grant: u64,
}

impl RecvChannel {
    /// The initial grant of the whole window is queued at once.
    pub(crate) fn new(config: &ChannelConfig) -> Self {
        let window = config.recv_window.max(config.max_message_size).max(1) as u64;
        RecvChannel {
            id: config.id,
            announce_first: config.announce_first_fragment,
            max_message_size: config.max_message_size,
            window,
            partial: Vec::new(),
            tag: Tag::Plain,
            granted: window,
            received: 0,
            released: 0,
            to_grant: window,
        }
    }

    /// The peer does not serve this channel: it is granted nothing, so it can send
    /// nothing here (a byte is credit exceeded).
    pub(crate) fn withhold(&mut self) {
        self.granted = 0;
        self.to_grant = 0;
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Whether the next fragment starts a message.
    pub(crate) fn at_message_start(&self) -> bool {
        self.partial.is_empty()
    }

    /// Bytes held for messages still arriving.
    pub(crate) fn reassembly_bytes(&self) -> usize {
        self.partial.capacity()
    }

    /// Adds a fragment; returns the message and its tag when `eof` completes one.
    /// `total_len` and `tag`, on a first fragment, announce the whole size and what
    /// the message is (on later fragments they are ignored). `room` is what the
    /// connection may still allocate for reassembly; anything beyond it is refused
    /// before allocating.
    pub(crate) fn on_fragment(
        &mut self,
        eof: bool,
        data: &[u8],
        total_len: u64,
        tag: Tag,
        room: usize,
    ) -> Result<Option<(Tag, Vec<u8>)>, MuxError> {
        self.received += data.len() as u64;
        if self.received > self.granted {
            return Err(MuxError::CreditExceeded { channel: self.id });
        }
        let too_large = MuxError::MessageTooLarge {
            channel: self.id,
            max: self.max_message_size,
        };
        if self.partial.len() + data.len() > self.max_message_size {
            return Err(too_large);
        }
        let budget = MuxError::ReassemblyBudget { channel: self.id };
        if self.partial.is_empty() {
            self.tag = tag;
        }
        if self.partial.is_empty() && !eof && total_len > 0 {
            if total_len > self.max_message_size as u64 {
                return Err(too_large);
            }
            if total_len as usize > room {
                return Err(budget);
            }
            // Exact allocation: no regrowth copies while the fragments arrive.
            self.partial.reserve_exact(total_len as usize);
        }
        if !eof {
            let grow = (self.partial.len() + data.len()).saturating_sub(self.partial.capacity());
            if grow > room {
                return Err(budget);
            }
            self.partial.reserve_exact(grow);
            self.partial.extend_from_slice(data);
            return Ok(None);
        }
        let tag = std::mem::take(&mut self.tag);
        if self.partial.is_empty() {
            return Ok(Some((tag, data.to_vec())));
        }
        self.partial.extend_from_slice(data);
        Ok(Some((tag, std::mem::take(&mut self.partial))))
    }

    /// The application took `bytes`; grants them back in batches of a quarter window.
    pub(crate) fn release(&mut self, bytes: usize) {
        self.released += bytes as u64;
        if self.released >= self.window / 4 {
            self.granted += self.released;
            self.to_grant += self.released;
            self.released = 0;
        }
    }
}
