//! The network model of S1: regions with measured round-trip times, bandwidth
//! classes, and the processing cost of a node's work.

use std::time::Duration;

use crate::rng::Rng;

/// Region names, in the order of `RTT_MS` (the round-trip matrix).
pub const REGIONS: [&str; 9] = [
    "us-east-1",
    "us-west-1",
    "eu-west-1",
    "eu-central-1",
    "ap-northeast-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-south-1",
    "sa-east-1",
];

/// How many nodes of every 14,326 run in each region (a rough picture of where
/// Ethereum nodes run; ../shared/BENCHMARKS.md).
const WEIGHTS: [u32; 9] = [2894, 1240, 2847, 2799, 530, 529, 290, 161, 36];

/// p50 round-trip times between regions in milliseconds (cloudping.co over a year,
/// as embedded in commonware's estimator), row = from, column = to.
const RTT_MS: [[u32; 9]; 9] = [
    [6, 64, 70, 93, 150, 220, 200, 193, 115],
    [64, 3, 130, 153, 108, 170, 139, 232, 175],
    [70, 130, 3, 27, 202, 179, 256, 126, 178],
    [93, 153, 27, 4, 227, 160, 251, 129, 204],
    [150, 109, 202, 228, 3, 71, 107, 134, 258],
    [219, 171, 179, 161, 71, 4, 95, 64, 328],
    [200, 139, 256, 252, 106, 95, 4, 155, 312],
    [190, 232, 125, 129, 133, 64, 155, 3, 301],
    [115, 175, 179, 205, 259, 328, 312, 302, 3],
];

/// Which link model a simulation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkModel {
    /// Regions, their latencies and the bandwidth classes.
    Regions,
    /// No latency and unbounded bandwidth (for calibration against the loopback).
    Zero,
}

/// Where a node runs and what its access link carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Index into [`REGIONS`].
    pub region: usize,
    /// Uplink, bytes per second (`f64::INFINITY` when unbounded).
    pub up: f64,
    /// Downlink, bytes per second.
    pub down: f64,
}

/// 1 Gbit/s and 50 Mbit/s in bytes per second.
const GBIT: f64 = 1e9 / 8.0;
const MBIT50: f64 = 50e6 / 8.0;

impl LinkModel {
    /// Draws a node's region (by the weights) and bandwidth class (20% 1 Gbit/s,
    /// 80% 50 Mbit/s, up and down alike).
    pub(crate) fn place(self, rng: &mut Rng) -> Placement {
        match self {
            LinkModel::Zero => Placement {
                region: 0,
                up: f64::INFINITY,
                down: f64::INFINITY,
            },
            LinkModel::Regions => {
                let total: u32 = WEIGHTS.iter().sum();
                let mut pick = rng.below(u64::from(total)) as u32;
                let mut region = 0;
                for (i, w) in WEIGHTS.iter().enumerate() {
                    if pick < *w {
                        region = i;
                        break;
                    }
                    pick -= w;
                }
                let bw = if rng.unit() < 0.2 { GBIT } else { MBIT50 };
                Placement {
                    region,
                    up: bw,
                    down: bw,
                }
            }
        }
    }

    /// The one-way latency between two regions before jitter: half the RTT.
    pub(crate) fn base_latency(self, from: usize, to: usize) -> Duration {
        match self {
            LinkModel::Zero => Duration::ZERO,
            LinkModel::Regions => Duration::from_micros(u64::from(RTT_MS[from][to]) * 500),
        }
    }

    /// A connection's fixed one-way latency: base × (1 + u), u uniform in [0, 0.1].
    pub(crate) fn connection_latency(self, from: usize, to: usize, rng: &mut Rng) -> Duration {
        self.base_latency(from, to).mul_f64(1.0 + 0.1 * rng.unit())
    }
}

/// Time to put `bytes` on a link of `rate` bytes per second.
pub(crate) fn serialization(bytes: usize, rate: f64) -> Duration {
    if rate.is_infinite() {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(bytes as f64 / rate)
    }
}

/// Modeled CPU time of a node's work. The constants come from the real code on
/// this machine (2 cores, release build; `cargo run --release --example sim --
/// --calibrate` measures the first three again):
///
/// | operation | measured | charged |
/// |---|---|---|
/// | Ed25519 verification (ring) | 64 µs | 64 µs per gossip signature check |
/// | AES-256-GCM seal or open | 0.16 ns/byte | |
/// | SHA-256 (message id, signature input) | 0.69 ns/byte | |
/// | per byte read or written: AEAD, SHA-256 on receipt, ~3 copies | | 0.6 ns |
/// | handshake, one side: X25519 key pair and agreement, Ed25519 sign and verify, transcript | | 160 µs |
/// | one input handled (a read or timer, its frames, the follow-up writes) | | 4 µs |
/// | each connection written in a step: a write system call | not measured (an estimate) | 10 µs |
///
/// The fixed cost per input is the part of the P1 profile's ~230 µs per delivery
/// that is neither signatures nor bytes nor thread wake-ups (which a simulated
/// node does not have).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// One Ed25519 verification.
    pub verify: Duration,
    /// One handshake, one side.
    pub handshake: Duration,
    /// Sealing or opening one byte, plus copying it: nanoseconds.
    pub per_byte_ns: f64,
    /// Fixed cost of handling one input.
    pub per_input: Duration,
    /// Cost of each connection written in a step (a write system call; on the
    /// loopback it also runs the receiver's TCP stack).
    pub per_write: Duration,
    /// 0: every node has a CPU of its own. N: all nodes share N cores, node i on
    /// core i mod N (as the loopback benchmarks run their nodes on loop threads).
    pub shared_cores: usize,
    /// Every charge multiplied by this (e.g. for a debug build).
    pub scale: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            verify: Duration::from_micros(64),
            handshake: Duration::from_micros(160),
            per_byte_ns: 0.6,
            per_input: Duration::from_micros(4),
            per_write: Duration::from_micros(10),
            shared_cores: 0,
            scale: 1.0,
        }
    }
}

impl CostModel {
    /// No processing cost at all.
    pub fn free() -> Self {
        CostModel {
            verify: Duration::ZERO,
            handshake: Duration::ZERO,
            per_byte_ns: 0.0,
            per_input: Duration::ZERO,
            per_write: Duration::ZERO,
            shared_cores: 0,
            scale: 1.0,
        }
    }

    /// The time a step took that read and wrote `bytes`, wrote to `writes`
    /// connections, verified `verifies` signatures and finished `handshakes`.
    pub(crate) fn charge(
        &self,
        bytes: usize,
        writes: usize,
        verifies: u64,
        handshakes: u64,
    ) -> Duration {
        (self.per_input
            + self.per_write * writes as u32
            + self.verify * verifies as u32
            + self.handshake * handshakes as u32
            + Duration::from_nanos((bytes as f64 * self.per_byte_ns) as u64))
        .mul_f64(self.scale)
    }
}
