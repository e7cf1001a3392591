//! A whole node core with several peers past the handshake: each step of the input
//! is one peer sending a sealed frame of arbitrary packets, raw bytes, or time
//! moving on, or the application taking events. After every step the core's
//! invariants (reassembly within the node budget, output bounded) must hold, and
//! nothing may panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use meshwire::harness::CoreHarness;

const PEERS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let mut h = CoreHarness::new(PEERS);
    let mut input = data;
    while let [op, rest @ ..] = input {
        input = rest;
        match op % 4 {
            0 | 1 => {
                // peer, u16 length, bytes
                let [peer, hi, lo, rest @ ..] = input else { return };
                let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(rest.len());
                let (bytes, rest) = rest.split_at(len);
                input = rest;
                let peer = usize::from(*peer) % PEERS;
                if op % 4 == 0 {
                    h.send_frame(peer, bytes);
                } else {
                    h.send_raw(peer, bytes);
                }
            }
            2 => {
                let [ms, rest @ ..] = input else { return };
                input = rest;
                h.advance(Duration::from_millis(u64::from(*ms) * 50));
            }
            _ => {
                h.take_events(usize::from(op >> 2));
            }
        }
        h.check_invariants();
    }
});
