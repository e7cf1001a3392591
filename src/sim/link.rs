//! Simulated TCP connections: two byte streams, each with what is in flight
//! (written, not yet arrived), an inbox (arrived, not yet read) and a window that
//! bounds both, so a sender that outpaces its receiver blocks as on a real socket.

use std::collections::VecDeque;
use std::time::Duration;

use crate::node::core::{ConnId, Io};

/// Bytes one direction may hold in flight and unread: a socket buffer's worth.
pub(crate) const WINDOW: usize = 1 << 20;
/// Largest segment put on a link as one event.
pub(crate) const SEGMENT: usize = 16 * 1024;

/// One direction of a connection.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// Written by the sender and not yet in the inbox.
    pub(crate) in_flight: usize,
    /// Arrived, not yet read.
    pub(crate) inbox: VecDeque<u8>,
    /// The sender closed: after the inbox, end of stream.
    pub(crate) eof: bool,
    /// The receiver is gone: what arrives is discarded.
    pub(crate) receiver_gone: bool,
    /// The sender found no room: wake it when there is.
    pub(crate) sender_blocked: bool,
}

impl Stream {
    fn room(&self) -> usize {
        WINDOW.saturating_sub(self.in_flight + self.inbox.len())
    }
}

/// A connection between two simulated nodes: end 0 dialed, end 1 accepted.
#[derive(Debug)]
pub(crate) struct Link {
    /// (node, its connection id); end 1's id is known once accepted.
    pub(crate) ends: [(usize, Option<ConnId>); 2],
    pub(crate) latency: Duration,
    /// `streams[i]` carries bytes from end i to end 1 - i.
    pub(crate) streams: [Stream; 2],
    /// Which ends have finished with it.
    pub(crate) closed: [bool; 2],
}

impl Link {
    pub(crate) fn new(dialer: (usize, ConnId), acceptor: usize, latency: Duration) -> Self {
        Link {
            ends: [(dialer.0, Some(dialer.1)), (acceptor, None)],
            latency,
            streams: [Stream::default(), Stream::default()],
            closed: [false, false],
        }
    }

    /// Which end connection `c` of node `n` is.
    pub(crate) fn end_of(&self, n: usize, c: ConnId) -> usize {
        usize::from(self.ends[0] != (n, Some(c)))
    }
}

/// A node's side of a link during one step: reads from its inbox, collects writes
/// (they go on the uplink when the step ends).
pub(crate) struct EndIo<'a> {
    pub(crate) incoming: &'a mut Stream,
    pub(crate) outgoing: &'a mut Stream,
    pub(crate) written: &'a mut Vec<u8>,
    /// Bytes read, so the sender can be woken if it waited for room.
    pub(crate) read: usize,
}

impl Io for EndIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.incoming.inbox.len());
        if n == 0 {
            return if self.incoming.eof && self.incoming.in_flight == 0 {
                Ok(0)
            } else {
                Err(std::io::ErrorKind::WouldBlock.into())
            };
        }
        let (a, b) = self.incoming.inbox.as_slices();
        let first = n.min(a.len());
        buf[..first].copy_from_slice(&a[..first]);
        buf[first..n].copy_from_slice(&b[..n - first]);
        self.incoming.inbox.drain(..n);
        if self.incoming.inbox.is_empty() && self.incoming.inbox.capacity() > 4096 {
            // Give back what a burst left behind: thousands of links stay open.
            self.incoming.inbox = VecDeque::new();
        }
        self.read += n;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.outgoing.receiver_gone {
            // The peer is gone: a real socket would soon say so; the bytes are lost.
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        let n = buf.len().min(self.outgoing.room());
        if n == 0 {
            self.outgoing.sender_blocked = true;
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.outgoing.in_flight += n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
