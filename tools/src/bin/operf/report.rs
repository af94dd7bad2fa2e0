//! What travels between operf's client and server besides data: the report
//! request and the report (the server's counters for the flow), and the
//! counting both sides do.
//!
//! Every SDU starts with a kind byte; byte 1 of data and echo SDUs is the
//! run's phase ([`PHASE_WARMUP`], then [`PHASE_MEASURED`]); bytes 8..16
//! carry a sequence number (data) or a request id (report request and
//! report).

use std::time::{Duration, Instant};

pub const KIND_DATA: u8 = 1;
pub const KIND_ECHO: u8 = 2;
pub const KIND_REPORT_REQ: u8 = 3;
pub const KIND_REPORT: u8 = 4;
/// Smallest SDU operf sends: kind byte, padding, sequence number.
pub const MIN_SIZE: u64 = 16;
/// A report: kind, padding, request id, then received, bytes, window_ns.
pub const REPORT_LEN: usize = 40;
/// The id of the report that closes a run (progress reports count up from 0).
pub const FINAL_ID: u64 = u64::MAX;

/// Phase byte of SDUs written before the measured window (`--warmup`).
pub const PHASE_WARMUP: u8 = 0;
/// Phase byte of SDUs written in the measured window.
pub const PHASE_MEASURED: u8 = 1;

/// The phase byte of a data or echo SDU (an older client's SDUs, and the
/// bytes of a short one, read as the warm-up phase).
pub fn phase_of(sdu: &[u8]) -> u8 {
    sdu.get(1).copied().unwrap_or(PHASE_WARMUP)
}

/// The server's count for one flow: a [`Tally`] that starts again at the
/// first SDU of a later phase, so what a warm-up delivered stays out of the
/// measured window. A flow keeps its order, so every warm-up SDU the server
/// gets comes before the first measured one; a lost SDU changes nothing.
#[derive(Default, Debug, Clone, Copy)]
pub struct PhasedTally {
    phase: u8,
    pub tally: Tally,
}

impl PhasedTally {
    pub fn count(&mut self, sdu: &[u8], now: Instant) {
        let phase = phase_of(sdu);
        if phase > self.phase {
            self.phase = phase;
            self.tally = Tally::default();
        }
        self.tally.count(sdu.len(), now);
    }
}

/// SDUs and bytes received, and the span from the first to the last one.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tally {
    pub sdus: u64,
    pub bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Tally {
    pub fn count(&mut self, len: usize, now: Instant) {
        self.sdus += 1;
        self.bytes += len as u64;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    pub fn window(&self) -> Duration {
        match (self.first, self.last) {
            (Some(f), Some(l)) => l - f,
            _ => Duration::ZERO,
        }
    }
}

/// The server's counters for one flow, as of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub id: u64,
    pub received: u64,
    pub bytes: u64,
    pub window: Duration,
}

/// Rates over a receive window (SDUs/s, Mbit/s); zero when the window is empty.
pub fn rates(sdus: u64, bytes: u64, window: Duration) -> (f64, f64) {
    let s = window.as_secs_f64();
    if s <= 0.0 {
        return (0.0, 0.0);
    }
    (sdus as f64 / s, bytes as f64 * 8.0 / s / 1e6)
}

pub fn encode_request(id: u64) -> [u8; MIN_SIZE as usize] {
    let mut r = [0u8; MIN_SIZE as usize];
    r[0] = KIND_REPORT_REQ;
    r[8..16].copy_from_slice(&id.to_be_bytes());
    r
}

/// The id of a report request (0 for one without: an older client's).
pub fn request_id(b: &[u8]) -> u64 {
    b.get(8..16)
        .map_or(0, |x| u64::from_be_bytes(x.try_into().expect("8 bytes")))
}

pub fn encode_report(id: u64, t: &Tally) -> [u8; REPORT_LEN] {
    let mut r = [0u8; REPORT_LEN];
    r[0] = KIND_REPORT;
    r[8..16].copy_from_slice(&id.to_be_bytes());
    r[16..24].copy_from_slice(&t.sdus.to_be_bytes());
    r[24..32].copy_from_slice(&t.bytes.to_be_bytes());
    r[32..40].copy_from_slice(&(t.window().as_nanos() as u64).to_be_bytes());
    r
}

pub fn decode_report(b: &[u8]) -> Option<Report> {
    if b.len() < REPORT_LEN || b[0] != KIND_REPORT {
        return None;
    }
    let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Some(Report {
        id: u(8),
        received: u(16),
        bytes: u(24),
        window: Duration::from_nanos(u(32)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_with_its_id() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        t.count(100, t0);
        t.count(100, t0 + Duration::from_millis(500));
        let r = decode_report(&encode_report(7, &t)).expect("a report");
        assert_eq!(
            r,
            Report {
                id: 7,
                received: 2,
                bytes: 200,
                window: Duration::from_millis(500)
            }
        );
        assert!(decode_report(&[KIND_DATA; REPORT_LEN]).is_none());
        assert!(decode_report(&[KIND_REPORT; 10]).is_none());
        assert_eq!(request_id(&encode_request(FINAL_ID)), FINAL_ID);
        assert_eq!(request_id(&[KIND_REPORT_REQ]), 0);
    }

    #[test]
    fn a_later_phase_starts_the_count_again() {
        let t0 = Instant::now();
        let sdu = |phase: u8| {
            let mut b = [0u8; 64];
            (b[0], b[1]) = (KIND_DATA, phase);
            b
        };
        let mut c = PhasedTally::default();
        for i in 0..5 {
            c.count(&sdu(PHASE_WARMUP), t0 + Duration::from_millis(i));
        }
        assert_eq!(c.tally.sdus, 5);
        c.count(&sdu(PHASE_MEASURED), t0 + Duration::from_millis(10));
        c.count(&sdu(PHASE_MEASURED), t0 + Duration::from_millis(30));
        assert_eq!((c.tally.sdus, c.tally.bytes), (2, 128));
        assert_eq!(c.tally.window(), Duration::from_millis(20));
        // A straggler of an earlier phase is counted, never a reset.
        c.count(&sdu(PHASE_WARMUP), t0 + Duration::from_millis(40));
        assert_eq!(c.tally.sdus, 3);
        // An older client's SDUs (phase byte 0 throughout) count from the first.
        let mut old = PhasedTally::default();
        old.count(&sdu(PHASE_WARMUP), t0);
        old.count(&[KIND_DATA], t0);
        assert_eq!(old.tally.sdus, 2);
    }

    #[test]
    fn rates_are_over_the_receive_window() {
        let (pps, mbps) = rates(1000, 125_000, Duration::from_millis(500));
        assert_eq!(pps, 2000.0);
        assert_eq!(mbps, 2.0);
        assert_eq!(rates(1, 64, Duration::ZERO), (0.0, 0.0));
    }
}
