//! A connection's deadlines (handshake, keepalive, stall, linger, the hard drop
//! after the end) and the buffers a quiet connection gives back.

use std::time::Instant;

use super::{Connection, State};
use crate::error::{DisconnectReason, LocalClose};

impl Connection {
    /// When [`Connection::handle_timeout`] must run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done.is_some() {
            return self.drop_at.filter(|_| self.out_pos < self.out.len());
        }
        let t = match &self.state {
            State::Handshaking(hs) => hs.poll_timeout(),
            State::Open(open) => open.mux.poll_timeout(),
        };
        match self.local_close {
            Some((_, linger)) => Some(t.map_or(linger, |t| t.min(linger))),
            None => t,
        }
    }

    /// Handles deadlines: handshake timeout, keepalive, stall, linger, and the hard
    /// deadline after the end.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done.is_some() {
            self.arm_drop(now);
            if self.drop_at.is_some_and(|at| now >= at) {
                // The peer did not take the rest in time: give it up.
                self.out_pos = self.out.len();
            }
            return;
        }
        if let Some((_, linger)) = self.local_close {
            if now >= linger {
                self.done = Some(DisconnectReason::Local(LocalClose::LingerTimeout));
                return;
            }
        }
        let result = match &mut self.state {
            State::Handshaking(hs) => hs.handle_timeout(now).map_err(DisconnectReason::Handshake),
            State::Open(open) => match open.mux.handle_timeout(now) {
                Err(e) => Err(DisconnectReason::Protocol(e)),
                Ok(()) if open.mux.is_stalled(now) => {
                    Err(DisconnectReason::Local(LocalClose::Stalled))
                }
                Ok(()) => Ok(()),
            },
        };
        if let Err(reason) = result {
            self.finish(reason, now);
            self.arm_drop(now);
        }
        self.release_idle_buffers();
    }

    /// Gives back buffers that hold nothing (on the connection's timers, so only a
    /// quiet connection pays for allocating them again): an idle connection keeps a
    /// few hundred bytes, not tens of KiB, so a node can hold many and the
    /// simulator many nodes.
    fn release_idle_buffers(&mut self) {
        self.release_read_buffers();
        if self.out_pos == self.out.len() && self.out.capacity() > 0 {
            self.out = Vec::new();
            self.out_pos = 0;
        }
    }

    /// Gives back the read buffers if they hold nothing (the next read allocates
    /// again).
    fn release_read_buffers(&mut self) {
        if let State::Open(open) = &mut self.state {
            open.opener.release_if_empty();
            if self.scratch.capacity() > 0 {
                self.scratch = Vec::new();
            }
        }
    }
}
