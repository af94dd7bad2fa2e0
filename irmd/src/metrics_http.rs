//! `irmd --metrics ADDR`: the Prometheus (OpenMetrics) text format at
//! `GET /metrics`, metric names prefixed `ethflow_`, encoded with the
//! `prometheus-client` crate from a [`Metrics`] snapshot taken per scrape.
//!
//! The HTTP side is the least that serves a scraper from irmd's one-thread
//! event loop: non-blocking sockets in the same epoll set, one request per
//! connection (read until the blank line, at most 8 KiB), the answer written
//! at once (a few KiB, well under a socket buffer), then closed. At most
//! [`MAX_CONNS`] connections; one idle for [`IDLE`] is dropped. A slow or
//! hostile client can never block irmd.

use crate::registry::Metrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub const MAX_CONNS: usize = 16;
pub const IDLE: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8192;

type Labels = Vec<(String, String)>;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The text exposition of a snapshot.
pub fn render(m: &Metrics) -> String {
    let mut reg = Registry::with_prefix("ethflow");
    let flows = Family::<Labels, Gauge>::default();
    reg.register("flows", "Flows by state", flows.clone());
    for (state, n) in &m.flows {
        flows.get_or_create(&l(&[("state", state)])).set(*n as i64);
    }
    let ipcps = Gauge::<i64>::default();
    ipcps.set(m.ipcps as i64);
    reg.register("ipcps", "IPCPs", ipcps);
    let names = Gauge::<i64>::default();
    names.set(m.names as i64);
    reg.register("names", "Registered names", names);
    let allocs = Counter::<u64>::default();
    allocs.inc_by(m.allocations);
    reg.register("allocations", "Flows allocated since irmd started", allocs);
    let changes = Family::<Labels, Counter>::default();
    reg.register(
        "flow_state_changes",
        "Flow state changes reported by IPCPs (liveness detection events), by cause",
        changes.clone(),
    );
    for (cause, n) in &m.state_changes {
        changes.get_or_create(&l(&[("cause", cause)])).inc_by(*n);
    }
    let gone = Counter::<u64>::default();
    gone.inc_by(m.ipcp_gone);
    reg.register(
        "flows_down_ipcp_gone",
        "Flows taken down because their IPCP ended",
        gone,
    );
    let frames = Family::<Labels, Counter>::default();
    reg.register(
        "ipcp_counter",
        "Counters each IPCP reported last (frames, drops, …), by counter name",
        frames.clone(),
    );
    for ((ipcp, layer), counters) in &m.ipcp_counters {
        for (name, v) in counters {
            frames
                .get_or_create(&l(&[("ipcp", ipcp), ("layer", layer), ("counter", name)]))
                .inc_by(*v);
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// The answer to one HTTP request (the bytes up to the blank line).
pub fn respond(request: &[u8], metrics: impl FnOnce() -> Metrics) -> Vec<u8> {
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (status, ctype, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(&metrics()),
        ),
        (Some("GET"), Some(_)) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Conn {
    stream: TcpStream,
    since: Instant,
    buf: Vec<u8>,
}

/// The listener and its connections (the shell owns it and polls it).
pub struct Server {
    pub listener: TcpListener,
    conns: HashMap<u64, Conn>,
    next: u64,
}

/// A connection the shell must watch.
pub enum Event {
    Added(u64),
}

impl Server {
    pub fn new(listener: TcpListener) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            conns: HashMap::new(),
            next: 1,
        })
    }

    /// Accept what waits (within the connection bound).
    pub fn accept(&mut self, events: &mut Vec<Event>) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                continue; // dropped: closes it
            }
            let id = self.next;
            self.next += 1;
            events.push(Event::Added(id));
            self.conns.insert(
                id,
                Conn {
                    stream,
                    since: Instant::now(),
                    buf: Vec::new(),
                },
            );
        }
    }

    pub fn stream(&self, id: u64) -> Option<&TcpStream> {
        self.conns.get(&id).map(|c| &c.stream)
    }

    /// Read from a connection; answer and close once the request is in.
    pub fn ready(&mut self, id: u64, metrics: impl FnOnce() -> Metrics) -> bool {
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        let mut chunk = [0u8; 2048];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => return self.conns.remove(&id).is_some(),
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    if c.buf.len() > MAX_REQUEST {
                        return self.conns.remove(&id).is_some();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return self.conns.remove(&id).is_some(),
            }
        }
        if !c.buf.windows(4).any(|w| w == b"\r\n\r\n") && !c.buf.windows(2).any(|w| w == b"\n\n") {
            return false;
        }
        let answer = respond(&c.buf, metrics);
        // Small; a client that does not take it whole loses the rest.
        let _ = c.stream.write(&answer);
        self.conns.remove(&id).is_some()
    }

    /// Drop connections idle too long.
    pub fn expire(&mut self) {
        self.conns.retain(|_, c| c.since.elapsed() <= IDLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sample() -> Metrics {
        Metrics {
            flows: [
                ("allocated".to_string(), 2),
                ("down".into(), 0),
                ("peer".into(), 1),
            ]
            .into_iter()
            .collect(),
            ipcp_counters: [(
                ("eth-a".to_string(), "lan".to_string()),
                vec![("rx_frames".to_string(), 7), ("tx_frames".into(), 9)],
            )]
            .into_iter()
            .collect(),
            ipcps: 1,
            names: 3,
            allocations: 5,
            state_changes: [("Unresponsive".to_string(), 1)].into_iter().collect(),
            ipcp_gone: 0,
        }
    }

    #[test]
    fn exposition_has_the_metrics() {
        let text = render(&sample());
        for want in [
            "ethflow_flows{state=\"allocated\"} 2",
            "ethflow_flows{state=\"peer\"} 1",
            "ethflow_allocations_total 5",
            "ethflow_flow_state_changes_total{cause=\"Unresponsive\"} 1",
            "ethflow_ipcp_counter_total{ipcp=\"eth-a\",layer=\"lan\",counter=\"rx_frames\"} 7",
            "ethflow_names 3",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let _ = BTreeMap::<String, u64>::new();
    }

    #[test]
    fn http_answers() {
        let ok = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\n\r\n", sample)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        assert!(ok.contains(&format!("Content-Length: {}\r\n", body.len())));
        let nf = String::from_utf8(respond(b"GET / HTTP/1.1\r\n\r\n", sample)).unwrap();
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let bad = String::from_utf8(respond(b"\xff\xfe junk\r\n\r\n", sample)).unwrap();
        assert!(bad.starts_with("HTTP/1.1 405"), "{bad}");
    }
}
