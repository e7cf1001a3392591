//! Hash maps whose iteration order depends only on what was inserted.
//!
//! The state machines iterate maps when they decide things (which peers to graft,
//! which connections' timers run first), so with std's per-process random hasher two
//! runs of the simulator with one seed would diverge. SipHash with fixed keys keeps
//! runs identical. The keys hashed here are peer ids and message ids (digests), and
//! the maps are bounded in size, so an attacker grinding collisions gains little.

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

/// SipHash-1-3 with fixed keys.
pub(crate) type FixedState = BuildHasherDefault<DefaultHasher>;
/// A hash map with a deterministic iteration order.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, FixedState>;
/// A hash set with a deterministic iteration order.
pub(crate) type Set<K> = std::collections::HashSet<K, FixedState>;
