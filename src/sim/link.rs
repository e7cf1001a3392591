//! One node's end of a simulated TCP connection. Each end is owned by its node
//! alone: what it learns of the other side (bytes, the window opening, a close)
//! comes as events that take at least a one-way trip, so nodes never share state
//! and can run on different threads between those trips.

use std::collections::VecDeque;
use std::time::Duration;

use crate::node::core::{ConnId, Io};

/// Bytes one direction may hold unacknowledged: in flight, unread, or read with
/// the ACK still on its way back (a socket buffer's worth).
pub(crate) const WINDOW: usize = 1 << 20;
/// Largest segment put on a link as one event.
pub(crate) const SEGMENT: usize = 16 * 1024;

/// A node's end of a connection.
#[derive(Debug)]
pub(crate) struct End {
    /// The node at the other end.
    pub(crate) peer: usize,
    /// Its connection id there: known to the dialer once the answer came.
    pub(crate) peer_conn: Option<ConnId>,
    /// One-way latency (the dialer learns it when its SYN leaves).
    pub(crate) latency: Duration,
    /// Arrived, not yet read.
    pub(crate) inbox: VecDeque<u8>,
    /// The peer closed: after the inbox, end of stream.
    pub(crate) eof: bool,
    /// Written and not yet acknowledged by the peer's reads.
    pub(crate) outstanding: usize,
    /// This end found no room: wake it when credit comes.
    pub(crate) sender_blocked: bool,
    /// The peer is gone: writes fail.
    pub(crate) peer_gone: bool,
    /// Segments held by a partition arrive no earlier than this (in order).
    pub(crate) held_until: u64,
}

impl End {
    pub(crate) fn new(peer: usize, peer_conn: Option<ConnId>, latency: Duration) -> Self {
        End {
            peer,
            peer_conn,
            latency,
            inbox: VecDeque::new(),
            eof: false,
            outstanding: 0,
            sender_blocked: false,
            peer_gone: false,
            held_until: 0,
        }
    }
}

/// A node's end during one step: reads from its inbox, collects writes (they
/// go on the uplink when the step ends).
pub(crate) struct EndIo<'a> {
    pub(crate) end: &'a mut End,
    pub(crate) written: &'a mut Vec<u8>,
    /// Bytes read: credit for the peer.
    pub(crate) read: usize,
}

impl Io for EndIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let inbox = &mut self.end.inbox;
        let n = buf.len().min(inbox.len());
        if n == 0 {
            return if self.end.eof {
                Ok(0)
            } else {
                Err(std::io::ErrorKind::WouldBlock.into())
            };
        }
        let (a, b) = inbox.as_slices();
        let first = n.min(a.len());
        buf[..first].copy_from_slice(&a[..first]);
        buf[first..n].copy_from_slice(&b[..n - first]);
        inbox.drain(..n);
        if inbox.is_empty() && inbox.capacity() > 4096 {
            // Give back what a burst left behind: thousands of links stay open.
            *inbox = VecDeque::new();
        }
        self.read += n;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.end.peer_gone {
            // The peer is gone: the bytes are lost.
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        let room = WINDOW.saturating_sub(self.end.outstanding);
        let n = buf.len().min(room);
        if n == 0 {
            self.end.sender_blocked = true;
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.end.outstanding += n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
