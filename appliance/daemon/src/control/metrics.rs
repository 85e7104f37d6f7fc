//! `/metrics`: the appliance's counters in the Prometheus text format (0.0.4),
//! read from the device at scrape time. Names follow Prometheus conventions: a
//! `cloudpipe_` prefix, base units in the name (`_bytes`, `_seconds`), `_total`
//! on counters.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `cloudpipe_peer_receive_bytes_total` | counter | `peer`, `public_key` |
//! | `cloudpipe_peer_transmit_bytes_total` | counter | `peer`, `public_key` |
//! | `cloudpipe_peer_latest_handshake_timestamp_seconds` | gauge (Unix time, 0: never) | `peer`, `public_key` |
//! | `cloudpipe_peers` | gauge | |
//! | `cloudpipe_handshakes_total` | counter (initiations answered) | |
//! | `cloudpipe_packets_dropped_total` | counter | `reason` (every [`DropReason`]) |
//! | `cloudpipe_cookie_replies_total` | counter | |
//! | `cloudpipe_icmp_unreachable_total` | counter | |
//! | `cloudpipe_datagrams_received_total` | counter | |
//! | `cloudpipe_metadata_polls_total` | counter | `result`: changed, unchanged, rejected, error |
//! | `cloudpipe_pool_addresses` | gauge | `state`: used, free |
//! | `cloudpipe_address_conflicts_total` | counter (allowed IPs moved between peers) | |

use super::{Shared, View};
use cloudpipe_core::wg::{DropReason, PeerInfo, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything one scrape reports, taken at once.
#[derive(Debug)]
struct Scrape {
    view: Arc<View>,
    peers: Vec<PeerInfo>,
    stats: Stats,
    polls: [(&'static str, u64); 4],
}

/// The metrics of `shared` now, in the Prometheus text format.
pub fn render(shared: &Shared) -> String {
    render_scrape(Scrape {
        view: shared.view(),
        peers: shared.device.peers(SystemTime::now()),
        stats: shared.device.stats(),
        polls: shared.polls.all(),
    })
}

fn render_scrape(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Fmt {
    let c = ConstCounter::new(value);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        let names = self.view.names();
        let labels = |p: &PeerInfo| {
            [
                (
                    "peer",
                    names.get(&p.public_key).cloned().unwrap_or_default(),
                ),
                ("public_key", p.public_key.to_base64()),
            ]
        };
        for (name, help, value) in [
            (
                "cloudpipe_peer_receive",
                "Bytes of inner packets received from the peer.",
                (|p: &PeerInfo| p.rx_bytes) as fn(&PeerInfo) -> u64,
            ),
            (
                "cloudpipe_peer_transmit",
                "Bytes of inner packets sent to the peer.",
                |p: &PeerInfo| p.tx_bytes,
            ),
        ] {
            let mut m =
                enc.encode_descriptor(name, help, Some(&Unit::Bytes), MetricType::Counter)?;
            for p in &self.peers {
                ConstCounter::new(value(p)).encode(m.encode_family(&labels(p))?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "cloudpipe_peer_latest_handshake_timestamp",
            "Unix time of the peer's latest completed handshake (0: none since start).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for p in &self.peers {
            let t = p
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            ConstGauge::new(t).encode(m.encode_family(&labels(p))?)?;
        }
        let g = ConstGauge::new(self.peers.len() as i64);
        g.encode(enc.encode_descriptor(
            "cloudpipe_peers",
            "Peers configured.",
            None,
            MetricType::Gauge,
        )?)?;
        let s = &self.stats;
        counter(
            &mut enc,
            "cloudpipe_handshakes",
            "Handshakes completed: initiations answered with a response.",
            s.handshake_responses,
        )?;
        let mut m = enc.encode_descriptor(
            "cloudpipe_packets_dropped",
            "Packets dropped, by reason (unknown_key, unknown_index: unknown peer; bad_mac; replay; spoofed_source; no_route; rate_limited; ...).",
            None,
            MetricType::Counter,
        )?;
        for r in DropReason::ALL {
            ConstCounter::new(s.drops(r)).encode(m.encode_family(&[("reason", r.as_str())])?)?;
        }
        counter(
            &mut enc,
            "cloudpipe_cookie_replies",
            "Cookie replies sent to handshake initiations under load.",
            s.cookie_replies,
        )?;
        counter(
            &mut enc,
            "cloudpipe_icmp_unreachable",
            "ICMP host unreachable answers for pool addresses nobody holds.",
            s.icmp_unreachables,
        )?;
        counter(
            &mut enc,
            "cloudpipe_datagrams_received",
            "UDP datagrams received.",
            s.rx_datagrams,
        )?;
        let mut m = enc.encode_descriptor(
            "cloudpipe_metadata_polls",
            "Readings of the instance properties, by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in self.polls {
            ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
        }
        let mut m = enc.encode_descriptor(
            "cloudpipe_pool_addresses",
            "Client pool addresses, held by a peer (used) or not (free).",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [("used", self.view.pool_used), ("free", self.view.pool_free)] {
            ConstGauge::new(n as i64).encode(m.encode_family(&[("state", state)])?)?;
        }
        counter(
            &mut enc,
            "cloudpipe_address_conflicts",
            "Allowed IPs claimed by a second peer (moved to it).",
            self.view.conflicts_total,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_metric_with_conventional_names() {
        let (c, view) = super::super::tests::view();
        let alice = PeerInfo {
            public_key: c.peers[0].public_key,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: vec![],
            last_handshake: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            rx_bytes: 1234,
            tx_bytes: 99,
        };
        let text = render_scrape(Scrape {
            view: Arc::new(view),
            peers: vec![alice],
            stats: Stats::default(),
            polls: [
                ("changed", 1),
                ("unchanged", 5),
                ("rejected", 0),
                ("error", 2),
            ],
        });
        let key = c.peers[0].public_key.to_base64();
        for line in [
            format!("cloudpipe_peer_receive_bytes_total{{peer=\"alice\",public_key=\"{key}\"}} 1234"),
            format!("cloudpipe_peer_transmit_bytes_total{{peer=\"alice\",public_key=\"{key}\"}} 99"),
            format!("cloudpipe_peer_latest_handshake_timestamp_seconds{{peer=\"alice\",public_key=\"{key}\"}} 1700000000"),
            "cloudpipe_peers 1".into(),
            "cloudpipe_handshakes_total 0".into(),
            "cloudpipe_packets_dropped_total{reason=\"spoofed_source\"} 0".into(),
            "cloudpipe_packets_dropped_total{reason=\"bad_mac\"} 0".into(),
            "cloudpipe_cookie_replies_total 0".into(),
            "cloudpipe_metadata_polls_total{result=\"unchanged\"} 5".into(),
            "cloudpipe_metadata_polls_total{result=\"error\"} 2".into(),
            "cloudpipe_pool_addresses{state=\"used\"} 2".into(),
            "cloudpipe_pool_addresses{state=\"free\"} 3".into(),
            "cloudpipe_address_conflicts_total 0".into(),
            "# TYPE cloudpipe_peer_receive_bytes_total counter".into(),
            "# TYPE cloudpipe_pool_addresses gauge".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert_eq!(
            text.matches("cloudpipe_packets_dropped_total{").count(),
            DropReason::ALL.len()
        );
    }
}
