//! Counters of a node and their Prometheus text form.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::mux::{ChannelCounters, ChannelId};

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
    /// Events waiting for room in the application's queues now (bounded by the
    /// receive credit of the messages among them).
    pub waiting_events: u64,
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
        labelled(
            &mut s,
            "reports_total",
            "Misbehavior reports from the application, by severity.",
            &self.reports,
        );
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
        let text = m.to_prometheus();
        assert!(text.contains("# TYPE meshwire_peers_inbound gauge\nmeshwire_peers_inbound 3\n"));
        assert!(text.contains("meshwire_refused_total{reason=\"per_ip\"} 2\n"));
        assert!(text.contains("meshwire_channel_sent_bytes_total{channel=\"7\"} 10\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "bad sample line {line}");
        }
    }
}
