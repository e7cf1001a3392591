//! The write side of a connection: frames sealed from the mux as the socket takes
//! the previous ones.

use std::time::Instant;

use super::{Connection, State};
use crate::error::DisconnectReason;
use crate::secure::FrameSealer;

impl Connection {
    /// Bytes to write now; sealing new frames when the previous ones are written.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> &[u8] {
        self.arm_drop(now);
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.done.is_none() {
                self.seal_frames(now);
            }
        }
        &self.out[self.out_pos..]
    }

    fn seal_frames(&mut self, now: Instant) {
        let State::Open(open) = &mut self.state else {
            return;
        };
        let max = open.sealer.max_plaintext();
        for _ in 0..open.mux.batch_frames(now) {
            if !open.mux.wants_to_send(now) {
                break;
            }
            let start = FrameSealer::begin_frame(&mut self.out);
            if open.mux.fill_frame(&mut self.out, max, now) == 0 {
                self.out.truncate(start);
                break;
            }
            if let Err(e) = open.sealer.seal_in_place(&mut self.out, start) {
                self.out.truncate(start);
                self.done = Some(DisconnectReason::Frame(e));
                return;
            }
        }
        self.check_close_complete();
    }

    /// `n` bytes of [`Connection::poll_transmit`] were written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
    }

    /// Bytes sealed but not yet written.
    pub fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether there is output to write right now without sealing anything new.
    pub fn wants_write(&mut self, now: Instant) -> bool {
        if self.out_pos < self.out.len() {
            return true;
        }
        match &mut self.state {
            State::Open(open) if self.done.is_none() => open.mux.wants_to_send(now),
            _ => false,
        }
    }
}
