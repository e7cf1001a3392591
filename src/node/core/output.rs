//! What the core asks of its driver, and the byte pipe it reads and writes through.
//!
//! The core never touches a socket: the driver hands it an [`Io`] for one
//! connection at a time, and collects [`Output`]s after every input.

use std::net::{IpAddr, SocketAddr};

use crate::conn::Direction;
use crate::identity::PeerId;
use crate::mux::ChannelId;
use crate::node::command::{Reply, RequestId};
use crate::node::delivery::Release;
use crate::node::event::Event;

use super::ConnId;

/// One thing for the driver to do or pass on, in the order the core decided it.
#[derive(Debug)]
pub(crate) enum Output {
    /// Open a TCP connection for `conn` to `addr`, from `local` if given; report
    /// the outcome with `handle_connected` / `handle_dial_failed`.
    Dial {
        conn: ConnId,
        addr: SocketAddr,
        local: Option<IpAddr>,
    },
    /// `conn` has work outside its own I/O (something to write, a close): call
    /// `handle_io` for it.
    Wake(ConnId),
    /// For the application. With a release, the message holds receive credit that
    /// goes back (`handle_released`) once the application's queue took it.
    Event {
        event: Event,
        release: Option<Release>,
    },
    /// The answer to a request.
    Reply { request: RequestId, reply: Reply },
    /// A peer is announced (or its announced connection changed): what handles see.
    PeerUp {
        peer: PeerId,
        addr: SocketAddr,
        direction: Direction,
        channels: Vec<ChannelId>,
    },
    /// A peer is gone; `unsent` lists the channel of each message lost with it.
    PeerDown {
        peer: PeerId,
        unsent: Vec<ChannelId>,
    },
    /// `n` messages the handle counted left `peer`'s queue on `channel` (sent,
    /// expired, replaced or never queued).
    Dequeued {
        peer: PeerId,
        channel: ChannelId,
        n: usize,
    },
}

/// A connection's byte pipe, as the driver (a socket) or the simulator (a modeled
/// link) provides it. The core calls it only inside `handle_io`.
pub(crate) trait Io {
    /// Reads into `buf`: `Ok(0)` is end of stream, `WouldBlock` means nothing now.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes from `buf`; `WouldBlock` means no room now.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize>;
}

/// Bytes one `handle_io` call may move each way before other connections and
/// commands get a turn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoBudget {
    /// Bytes read.
    pub(crate) read: usize,
    /// Bytes written (the write that crosses it completes).
    pub(crate) write: usize,
}

impl IoBudget {
    /// No limit either way (test harnesses).
    #[cfg(any(test, fuzzing))]
    pub(crate) const UNLIMITED: IoBudget = IoBudget {
        read: usize::MAX,
        write: usize::MAX,
    };
}

/// What one `handle_io` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct IoOutcome {
    /// The connection is over and its entry gone: drop the pipe.
    pub(crate) finished: bool,
    /// The read budget ran out with input perhaps left: call again soon.
    pub(crate) more_input: bool,
    /// The write budget ran out with output left and the socket still taking it:
    /// call again soon (after other work, so an urgent command is not kept waiting
    /// behind a bulk transfer the peer drains as fast as we write).
    pub(crate) more_output: bool,
    pub(crate) read: usize,
    pub(crate) written: usize,
}
