//! What goes out next: control packets first, then fragments from the ready
//! channel with the least recent bytes per unit of priority, within the send rate.

use std::time::{Duration, Instant};

use super::{packet, Closing, Mux, DECAY_FACTOR, DECAY_PERIOD};

/// Channels that sent within this window count as concurrently active.
const MIXED_WINDOW: Duration = Duration::from_millis(100);
/// Frames sealed ahead when one stream has the link to itself.
const MAX_BATCH_FRAMES: usize = 4;
/// Room kept in a frame for a packet's framing around its payload.
const PACKET_ROOM: usize = packet::MSG_OVERHEAD_MAX + 3;

impl Mux {
    pub(super) fn has_data(&self) -> bool {
        self.send.iter().any(|c| c.ready())
    }

    fn has_control(&self) -> bool {
        self.pending_ping.is_some()
            || self.pending_pong.is_some()
            || self.recv.iter().any(|r| r.to_grant > 0)
    }

    /// Whether [`Mux::fill_frame`] would write anything now.
    pub fn wants_to_send(&mut self, now: Instant) -> bool {
        if self.has_control() {
            return true;
        }
        match self.closing {
            Closing::Sent => false,
            Closing::Now(_) => true,
            Closing::Flush(_) if !self.send.iter().any(|c| !c.is_empty()) => true,
            _ => self.has_data() && self.send_bucket.as_mut().is_none_or(|b| b.ready(now)),
        }
    }

    /// Appends the packets of the next frame to `out`, at most `max` bytes of them;
    /// returns how many bytes were written.
    pub fn fill_frame(&mut self, out: &mut Vec<u8>, max: usize, now: Instant) -> usize {
        let start = out.len();
        self.decay(now);
        if let Some(nonce) = self.pending_pong.take() {
            packet::put_pong(out, nonce);
        }
        if let Some(nonce) = self.pending_ping.take() {
            packet::put_ping(out, nonce);
            self.ping_written_at = Some(now);
        }
        for r in &mut self.recv {
            if r.to_grant > 0 && out.len() - start + 24 <= max {
                packet::put_credit(out, r.id(), r.to_grant);
                r.to_grant = 0;
            }
        }
        if let Closing::Now(reason) = self.closing {
            packet::put_close(out, reason);
            self.closing = Closing::Sent;
            return out.len() - start;
        }
        if self.closing != Closing::Sent {
            for c in &mut self.send {
                c.drop_expired(now);
            }
            self.fill_data(out, start, max, now);
        }
        if let Closing::Flush(reason) = self.closing {
            if self.send.iter().all(|c| c.is_empty()) && out.len() - start + 16 <= max {
                packet::put_close(out, reason);
                self.closing = Closing::Sent;
            }
        }
        out.len() - start
    }

    fn fill_data(&mut self, out: &mut Vec<u8>, start: usize, max: usize, now: Instant) {
        loop {
            if let Some(b) = &mut self.send_bucket {
                if !b.ready(now) {
                    return;
                }
            }
            let space = max.saturating_sub(out.len() - start);
            if space <= PACKET_ROOM {
                return;
            }
            let Some(pick) = self.pick() else { return };
            let priority = self.send[pick].config.priority;
            let urgent_waiting = self
                .send
                .iter()
                .any(|c| c.config.priority > priority && !c.is_empty());
            let fragment = if urgent_waiting {
                self.small_fragment
            } else {
                self.fragment
            };
            let limit = fragment.min(space - PACKET_ROOM);
            let before = out.len();
            if self.send[pick].write_fragment(out, limit).is_none() {
                return;
            }
            // The peer takes data: not stalled.
            self.stalled_since = None;
            self.send[pick].last_sent = Some(now);
            if let Some(b) = &mut self.send_bucket {
                b.spend(out.len() - before);
            }
        }
    }

    /// How many frames to seal ahead of the socket. A lone stream gets deep batches
    /// (fewer syscalls); when several channels carry data, one frame at a time, so a
    /// message of a busier priority never waits behind our own backlog.
    pub fn batch_frames(&self, now: Instant) -> usize {
        let active = self
            .send
            .iter()
            .filter(|c| {
                c.last_sent
                    .is_some_and(|t| now.saturating_duration_since(t) < MIXED_WINDOW)
            })
            .count();
        if active >= 2 {
            1
        } else {
            MAX_BATCH_FRAMES
        }
    }

    /// The ready channel with the least recent bytes per unit of priority.
    fn pick(&self) -> Option<usize> {
        self.send
            .iter()
            .enumerate()
            .filter(|(_, c)| c.ready())
            .min_by(|(_, a), (_, b)| a.score().total_cmp(&b.score()))
            .map(|(i, _)| i)
    }

    fn decay(&mut self, now: Instant) {
        if now < self.decay_at {
            return;
        }
        let periods = (now - self.decay_at).as_nanos() / DECAY_PERIOD.as_nanos() + 1;
        let factor = DECAY_FACTOR.powi(periods.min(64) as i32);
        for c in &mut self.send {
            c.recent *= factor;
        }
        self.decay_at = now + DECAY_PERIOD;
    }
}
