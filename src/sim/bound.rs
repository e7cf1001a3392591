//! The lower bound of S1: the earliest a message could reach each node over the
//! overlay as it stands, one copy per hop, no queueing and no processing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::model::serialization;
use super::Simulation;

/// Earliest arrival at every node of `size` bytes sent from `origin`: crossing
/// u→v costs the base one-way latency plus `size / min(up_u, down_v)`. `None` for
/// nodes the overlay does not reach.
pub(crate) fn earliest_arrivals(
    sim: &Simulation,
    origin: usize,
    size: usize,
) -> Vec<Option<Duration>> {
    let n = sim.len();
    let mut best: Vec<Option<u64>> = vec![None; n];
    let mut heap = BinaryHeap::new();
    best[origin] = Some(0);
    heap.push(Reverse((0u64, origin)));
    let model = sim.model();
    while let Some(Reverse((d, u))) = heap.pop() {
        if best[u].is_some_and(|b| b < d) {
            continue;
        }
        let pu = sim.placement(u);
        for v in sim.overlay(u) {
            if !sim.is_alive(v) {
                continue;
            }
            let pv = sim.placement(v);
            let hop =
                model.base_latency(pu.region, pv.region) + serialization(size, pu.up.min(pv.down));
            let nd = d + hop.as_nanos() as u64;
            if best[v].is_none_or(|b| nd < b) {
                best[v] = Some(nd);
                heap.push(Reverse((nd, v)));
            }
        }
    }
    best.into_iter()
        .map(|b| b.map(Duration::from_nanos))
        .collect()
}
