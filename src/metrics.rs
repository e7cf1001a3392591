//! Counters of a node and their Prometheus text form.

use std::collections::BTreeMap;
use std::fmt::Write;

pub use crate::histogram::Histogram;
use crate::mux::{ChannelCounters, ChannelId};

/// Bytes on the wire of one connection (frames, headers and all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerBytes {
    /// Read from its socket.
    pub read: u64,
    /// Written to it.
    pub written: u64,
}

/// A snapshot of a node's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Established inbound connections now.
    pub inbound: u64,
    /// Established outbound connections now.
    pub outbound: u64,
    /// Connections handshaking or dialing now.
    pub pending: u64,
    /// Inbound connections accepted.
    pub accepted: u64,
    /// Inbound connections refused at accept, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Dials started.
    pub dials: u64,
    /// Dials that failed before a handshake (refused, timed out).
    pub dial_failures: u64,
    /// Handshakes completed.
    pub handshakes_ok: u64,
    /// Handshakes failed, by reason.
    pub handshakes_failed: BTreeMap<&'static str, u64>,
    /// Disconnections of established peers, by reason.
    pub disconnects: BTreeMap<&'static str, u64>,
    /// Bytes read from sockets.
    pub bytes_read: u64,
    /// Bytes written to sockets.
    pub bytes_written: u64,
    /// Messages dropped, by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Per channel: bytes and messages sent and received.
    pub channels: BTreeMap<ChannelId, ChannelCounters>,
    /// Peers banned.
    pub bans: u64,
    /// Misbehavior reports from the application, by severity.
    pub reports: BTreeMap<&'static str, u64>,
    /// Gossip, per subscribed topic.
    pub topics: BTreeMap<String, crate::gossip::TopicMetrics>,
    /// Peers in the DHT's routing table now.
    pub dht_table_peers: u64,
    /// Provider records the DHT holds for others now.
    pub dht_provider_records: u64,
    /// DHT lookups running now.
    pub dht_lookups_running: u64,
    /// Keys we provide now.
    pub dht_providing: u64,
    /// Peer records waiting for a dial-back before they enter the DHT table.
    pub dht_dial_backs_waiting: u64,
    /// Peer records not dialed back (too many waited): they wait for their next
    /// contact.
    pub dht_dial_backs_dropped: u64,
    /// How long DHT lookups took (every finished lookup: ours, the application's,
    /// table refreshes).
    pub dht_lookup_latency: Histogram,
    /// Smoothed keepalive round-trip time per connected peer that has one.
    pub peer_rtt: BTreeMap<crate::identity::PeerId, std::time::Duration>,
    /// Bytes on the wire per connected peer, both ways.
    pub peer_bytes: BTreeMap<crate::identity::PeerId, PeerBytes>,
    /// Events waiting for room in the application's queues now (bounded by the
    /// receive credit of the messages among them).
    pub waiting_events: u64,
    /// Requests sent (queued on a connection).
    pub requests_sent: u64,
    /// Our requests that got no answer in time.
    pub requests_timed_out: u64,
    /// Requests received and handed to the application.
    pub requests_received: u64,
    /// Requests received and refused before the application saw them, by reason.
    pub requests_refused: BTreeMap<&'static str, u64>,
    /// Answers the application sent.
    pub responses_sent: u64,
    /// Observed addresses adopted (announced once peers in several subnets agreed).
    pub addresses_adopted: u64,
}

impl Metrics {
    pub(crate) fn count(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
        *map.entry(key).or_default() += 1;
    }

    pub(crate) fn add_channel(&mut self, channel: ChannelId, c: &ChannelCounters) {
        let t = self.channels.entry(channel).or_default();
        t.sent_bytes += c.sent_bytes;
        t.sent_msgs += c.sent_msgs;
        t.recv_bytes += c.recv_bytes;
        t.recv_msgs += c.recv_msgs;
        t.expired += c.expired;
        t.replaced += c.replaced;
        t.withdrawn += c.withdrawn;
        t.withdrawn_bytes += c.withdrawn_bytes;
    }

    /// The Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut s = String::new();
        let gauge = |s: &mut String, name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(s, "# HELP meshwire_{name} {help}");
            let _ = writeln!(s, "# TYPE meshwire_{name} {kind}");
            let _ = writeln!(s, "meshwire_{name} {value}");
        };
        gauge(
            &mut s,
            "peers_inbound",
            "Established inbound connections.",
            "gauge",
            self.inbound,
        );
        gauge(
            &mut s,
            "peers_outbound",
            "Established outbound connections.",
            "gauge",
            self.outbound,
        );
        gauge(
            &mut s,
            "connections_pending",
            "Connections dialing or handshaking.",
            "gauge",
            self.pending,
        );
        gauge(
            &mut s,
            "accepted_total",
            "Inbound connections accepted.",
            "counter",
            self.accepted,
        );
        gauge(
            &mut s,
            "dials_total",
            "Dials started.",
            "counter",
            self.dials,
        );
        gauge(
            &mut s,
            "dial_failures_total",
            "Dials that failed before a handshake.",
            "counter",
            self.dial_failures,
        );
        gauge(
            &mut s,
            "handshakes_ok_total",
            "Handshakes completed.",
            "counter",
            self.handshakes_ok,
        );
        gauge(
            &mut s,
            "bytes_read_total",
            "Bytes read from sockets.",
            "counter",
            self.bytes_read,
        );
        gauge(
            &mut s,
            "bytes_written_total",
            "Bytes written to sockets.",
            "counter",
            self.bytes_written,
        );
        gauge(&mut s, "bans_total", "Peers banned.", "counter", self.bans);
        gauge(
            &mut s,
            "waiting_events",
            "Events waiting for room in the application's queues.",
            "gauge",
            self.waiting_events,
        );
        labelled(
            &mut s,
            "refused_total",
            "Inbound connections refused at accept.",
            &self.refused,
        );
        labelled(
            &mut s,
            "handshakes_failed_total",
            "Handshakes failed.",
            &self.handshakes_failed,
        );
        labelled(
            &mut s,
            "disconnects_total",
            "Disconnections of established peers.",
            &self.disconnects,
        );
        labelled(&mut s, "drops_total", "Messages dropped.", &self.drops);
        for (name, help, value) in [
            ("requests_sent_total", "Requests sent.", self.requests_sent),
            (
                "requests_timed_out_total",
                "Requests that got no answer in time.",
                self.requests_timed_out,
            ),
            (
                "requests_received_total",
                "Requests received and handed to the application.",
                self.requests_received,
            ),
            (
                "responses_sent_total",
                "Answers to requests sent.",
                self.responses_sent,
            ),
            (
                "addresses_adopted_total",
                "Observed addresses adopted and announced.",
                self.addresses_adopted,
            ),
        ] {
            gauge(&mut s, name, help, "counter", value);
        }
        labelled(
            &mut s,
            "requests_refused_total",
            "Requests refused before the application saw them.",
            &self.requests_refused,
        );
        labelled(
            &mut s,
            "reports_total",
            "Misbehavior reports from the application, by severity.",
            &self.reports,
        );
        gauge(
            &mut s,
            "dht_table_peers",
            "Peers in the DHT routing table.",
            "gauge",
            self.dht_table_peers,
        );
        gauge(
            &mut s,
            "dht_provider_records",
            "Provider records held for others.",
            "gauge",
            self.dht_provider_records,
        );
        gauge(
            &mut s,
            "dht_lookups_running",
            "DHT lookups running.",
            "gauge",
            self.dht_lookups_running,
        );
        gauge(
            &mut s,
            "dht_dial_backs_waiting",
            "Peer records waiting for a dial-back.",
            "gauge",
            self.dht_dial_backs_waiting,
        );
        gauge(
            &mut s,
            "dht_dial_backs_dropped_total",
            "Peer records not dialed back for want of room.",
            "counter",
            self.dht_dial_backs_dropped,
        );
        gauge(
            &mut s,
            "dht_providing_keys",
            "Keys this node provides.",
            "gauge",
            self.dht_providing,
        );
        let _ = writeln!(
            s,
            "# HELP meshwire_dht_lookup_seconds How long DHT lookups took."
        );
        let _ = writeln!(s, "# TYPE meshwire_dht_lookup_seconds histogram");
        self.dht_lookup_latency
            .write_prometheus(&mut s, "meshwire_dht_lookup_seconds", "");
        for (name, help, read) in [
            (
                "peer_read_bytes_total",
                "Bytes read from the peer's connection.",
                true,
            ),
            (
                "peer_written_bytes_total",
                "Bytes written to the peer's connection.",
                false,
            ),
        ] {
            let _ = writeln!(s, "# HELP meshwire_{name} {help}");
            let _ = writeln!(s, "# TYPE meshwire_{name} counter");
            for (peer, b) in &self.peer_bytes {
                let v = if read { b.read } else { b.written };
                let _ = writeln!(s, "meshwire_{name}{{peer=\"{peer}\"}} {v}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP meshwire_peer_rtt_seconds Smoothed keepalive round-trip time."
        );
        let _ = writeln!(s, "# TYPE meshwire_peer_rtt_seconds gauge");
        for (peer, rtt) in &self.peer_rtt {
            let _ = writeln!(
                s,
                "meshwire_peer_rtt_seconds{{peer=\"{peer}\"}} {:.6}",
                rtt.as_secs_f64()
            );
        }
        let per_topic: [(&str, &str, TopicGetter); 7] = [
            (
                "gossip_deliveries_total",
                "Gossip messages delivered.",
                |t| t.deliveries,
            ),
            (
                "gossip_duplicates_total",
                "Gossip copies beyond the first.",
                |t| t.duplicates,
            ),
            (
                "gossip_rejected_total",
                "Gossip messages rejected by validation.",
                |t| t.rejected,
            ),
            (
                "gossip_published_total",
                "Gossip messages published here.",
                |t| t.published,
            ),
            ("gossip_mesh_peers", "Gossip mesh size.", |t| t.mesh as u64),
            (
                "gossip_choked_links",
                "Gossip mesh links choked (lazy).",
                |t| t.choked as u64,
            ),
            (
                "gossip_clock_ahead_total",
                "Stamped gossip messages whose publish time was ahead of our clock.",
                |t| t.clock_ahead,
            ),
        ];
        for (name, help, get) in per_topic {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(s, "# HELP meshwire_{name} {help}");
            let _ = writeln!(s, "# TYPE meshwire_{name} {kind}");
            for (topic, t) in &self.topics {
                let _ = writeln!(
                    s,
                    "meshwire_{name}{{topic=\"{}\"}} {}",
                    escape(topic),
                    get(t)
                );
            }
        }
        let _ = writeln!(s, "# HELP meshwire_gossip_hops_total Gossip deliveries by hops from the origin (15 = 15 or more).");
        let _ = writeln!(s, "# TYPE meshwire_gossip_hops_total counter");
        for (topic, t) in &self.topics {
            for (hops, n) in t.hops.iter().enumerate().filter(|(_, n)| **n > 0) {
                let _ = writeln!(
                    s,
                    "meshwire_gossip_hops_total{{topic=\"{}\",hops=\"{hops}\"}} {n}",
                    escape(topic)
                );
            }
        }
        let _ = writeln!(s, "# HELP meshwire_gossip_delay_seconds One-way delay of stamped gossip messages, publish to acceptance here.");
        let _ = writeln!(s, "# TYPE meshwire_gossip_delay_seconds histogram");
        for (topic, t) in &self.topics {
            let labels = format!("topic=\"{}\"", escape(topic));
            t.delay
                .write_prometheus(&mut s, "meshwire_gossip_delay_seconds", &labels);
        }
        let per_channel: [(&str, &str, CounterGetter); 4] = [
            ("channel_sent_bytes_total", "Payload bytes sent.", |c| {
                c.sent_bytes
            }),
            ("channel_sent_messages_total", "Messages sent.", |c| {
                c.sent_msgs
            }),
            ("channel_recv_bytes_total", "Payload bytes received.", |c| {
                c.recv_bytes
            }),
            ("channel_recv_messages_total", "Messages received.", |c| {
                c.recv_msgs
            }),
        ];
        for (name, help, get) in per_channel {
            let _ = writeln!(s, "# HELP meshwire_{name} {help}");
            let _ = writeln!(s, "# TYPE meshwire_{name} counter");
            for (ch, c) in &self.channels {
                let _ = writeln!(s, "meshwire_{name}{{channel=\"{ch}\"}} {}", get(c));
            }
        }
        s
    }
}

/// Reads one counter of a channel.
type CounterGetter = fn(&ChannelCounters) -> u64;
/// Reads one figure of a gossip topic.
type TopicGetter = fn(&crate::gossip::TopicMetrics) -> u64;

/// A label value in the exposition format: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labelled(s: &mut String, name: &str, help: &str, map: &BTreeMap<&'static str, u64>) {
    let _ = writeln!(s, "# HELP meshwire_{name} {help}");
    let _ = writeln!(s, "# TYPE meshwire_{name} counter");
    for (reason, n) in map {
        let _ = writeln!(s, "meshwire_{name}{{reason=\"{reason}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_labels() {
        let mut m = Metrics {
            inbound: 3,
            ..Metrics::default()
        };
        Metrics::count(&mut m.refused, "per_ip");
        Metrics::count(&mut m.refused, "per_ip");
        m.add_channel(
            7,
            &ChannelCounters {
                sent_bytes: 10,
                ..Default::default()
            },
        );
        let mut t = crate::gossip::TopicMetrics {
            deliveries: 5,
            mesh: 6,
            ..Default::default()
        };
        t.hops[2] = 5;
        t.delay.record(std::time::Duration::from_millis(12));
        m.topics.insert("blocks \"x\"".into(), t);
        m.dht_lookup_latency
            .record(std::time::Duration::from_millis(150));
        m.dht_table_peers = 42;
        let peer = crate::identity::PeerId::from_bytes([0xab; 32]);
        m.peer_rtt
            .insert(peer, std::time::Duration::from_micros(1500));
        m.peer_bytes.insert(
            peer,
            PeerBytes {
                read: 9,
                written: 11,
            },
        );
        let text = m.to_prometheus();
        assert!(text.contains("meshwire_gossip_deliveries_total{topic=\"blocks \\\"x\\\"\"} 5\n"));
        assert!(text.contains("meshwire_gossip_mesh_peers{topic=\"blocks \\\"x\\\"\"} 6\n"));
        assert!(
            text.contains("meshwire_gossip_hops_total{topic=\"blocks \\\"x\\\"\",hops=\"2\"} 5\n")
        );
        assert!(text.contains("meshwire_dht_table_peers 42\n"));
        assert!(text.contains(
            "meshwire_gossip_delay_seconds_bucket{topic=\"blocks \\\"x\\\"\",le=\"0.02\"} 1\n"
        ));
        assert!(text.contains("meshwire_dht_lookup_seconds_bucket{le=\"0.1\"} 0\n"));
        assert!(text.contains("meshwire_dht_lookup_seconds_bucket{le=\"0.2\"} 1\n"));
        assert!(text.contains("meshwire_dht_lookup_seconds_count 1\n"));
        assert!(text.contains(&format!(
            "meshwire_peer_written_bytes_total{{peer=\"{peer}\"}} 11\n"
        )));
        assert!(text.contains(&format!(
            "meshwire_peer_rtt_seconds{{peer=\"{peer}\"}} 0.001500\n"
        )));
        assert!(text.contains("# TYPE meshwire_peers_inbound gauge\nmeshwire_peers_inbound 3\n"));
        assert!(text.contains("meshwire_refused_total{reason=\"per_ip\"} 2\n"));
        assert!(text.contains("meshwire_channel_sent_bytes_total{channel=\"7\"} 10\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
        }
    }
}
