//! The layer key: every frame of a keyed layer carries a trailer with a key
//! id, a per-sender counter and an AEAD tag (AES-256-GCM, a key per
//! sender derived from the layer key) over
//!
//! * the Ethernet header (destination, source, VLAN tags, ethertype),
//! * the ethflow header,
//! * the trailer's key id and counter,
//! * and the payload: encrypted with `encrypt`, else authenticated only.
//!
//! A received frame is opened ([`LayerKeys::open`]) before anything parses
//! it: a frame that fails (truncated, unknown key id, replayed, bad tag) is
//! counted and dropped without changing any state, the replay windows
//! included. [`LayerKeys`] is sans-IO: the caller passes the wall clock at
//! start and new keys on a change. The IO is in two small modules: `files`
//! (key files, `FILE.next`) and [`shell`] (SIGHUP, the IPCP's calls). See
//! `docs/security.md` ("With a layer key"), `docs/wire.md` ("Layer-key
//! trailer") and decisions 0017 and 0018; property tests in
//! `ipcpd-eth/tests/layer_key_prop.rs`.

mod files;
mod keys;
mod replay;
pub mod shell;
mod trailer;

pub use files::{next_path, KeyFiles};
pub use keys::{LayerSecret, Mode, SenderKey};
pub use replay::{Replay, ReplayTable, Window, WINDOW, WINDOW_BITS};
pub use trailer::{
    eth_header_len, FrameLayout, Trailer, TrailerRepr, TAG_LEN, TRAILER_AAD_LEN, TRAILER_LEN,
};

use crate::wire::Mac;
use irm::keyfile::LayerKey;
use std::time::Duration;

/// Tunables of the layer key.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Senders whose replay windows are kept (a bridge with more stations
    /// than this evicts the least recently heard; only authenticated
    /// senders ever take a place).
    pub max_senders: usize,
    /// How far a sender's clock may lag ours: a sender heard for the first
    /// time since our start must show a counter (its wall clock in ns) no
    /// older than our start minus this. Frames captured more than this
    /// before a receiver restarted cannot be replayed to it.
    pub max_clock_skew: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_senders: 4096,
            max_clock_skew: Duration::from_secs(30),
        }
    }
}

/// Wall-clock times before this (2020-01-01) mean the clock was never set;
/// counters started from it could repeat those of an earlier run.
pub const MIN_WALL_CLOCK_NS: u64 = 1_577_836_800 * 1_000_000_000;

/// Why a received frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short for its headers, payload and trailer.
    Truncated,
    /// No configured key has the frame's key id.
    UnknownKey(u8),
    /// Counter seen before, or too old.
    Replayed(Replay),
    /// The tag does not verify under any key with that id.
    Auth,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Truncated => f.write_str("frame too short for its layer-key trailer"),
            OpenError::UnknownKey(id) => write!(f, "unknown key id {id:#04x}"),
            OpenError::Replayed(Replay::Duplicate) => f.write_str("replayed counter"),
            OpenError::Replayed(Replay::TooOld) => f.write_str("counter older than the window"),
            OpenError::Auth => f.write_str("authentication tag does not verify"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Why a frame could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The buffer has no room for the trailer, or the frame is malformed.
    NoRoom,
    /// The counter reached its end: this key must not seal again.
    CounterExhausted,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::NoRoom => f.write_str("no room for the layer-key trailer"),
            SealError::CounterExhausted => f.write_str("frame counter exhausted"),
        }
    }
}

impl std::error::Error for SealError {}

/// Why keys could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The wall clock reads before [`MIN_WALL_CLOCK_NS`].
    ClockNotSet(u64),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::ClockNotSet(ns) => write!(
                f,
                "the wall clock reads {} s after 1970, before 2020: set it before using a layer key (frame counters start from it)",
                ns / 1_000_000_000
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// Frames refused by the layer key, by reason (`irm ipcp list` shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounters {
    /// Truncated, unknown key id, or bad tag.
    pub auth_fail: u64,
    /// Replayed or too old.
    pub replay: u64,
}

/// The keys of the layer: the first seals, every one opens.
pub struct Keyring {
    keys: Vec<LayerSecret>,
}

/// Keys accepted at once: the sending one, a next one (announced before a
/// change) and the previous one (kept after a change).
pub const MAX_KEYS: usize = 3;

impl Keyring {
    /// `send` seals and opens; each of `also` only opens (at most
    /// [`MAX_KEYS`] - 1 are kept, the first ones; repeats are dropped).
    pub fn new(mode: Mode, send: &LayerKey, also: &[&LayerKey]) -> Keyring {
        Keyring::on_vlan(mode, 0, send, also)
    }

    /// [`Keyring::new`] for a layer on VLAN `vlan` (0: untagged).
    pub fn on_vlan(mode: Mode, vlan: u16, send: &LayerKey, also: &[&LayerKey]) -> Keyring {
        let mut keys = vec![LayerSecret::new(send, mode, vlan)];
        let mut seen = vec![send];
        for &k in also {
            if keys.len() < MAX_KEYS && !seen.contains(&k) {
                keys.push(LayerSecret::new(k, mode, vlan));
                seen.push(k);
            }
        }
        Keyring { keys }
    }

    pub fn send_id(&self) -> u8 {
        self.keys[0].id()
    }

    /// Ids of the keys that open, the sending one first.
    pub fn ids(&self) -> Vec<u8> {
        self.keys.iter().map(|k| k.id()).collect()
    }
}

/// Frame keys derived for one sender, by keyring position.
type SenderKeys = [Option<SenderKey>; MAX_KEYS];

/// Seals frames we send and opens frames we receive.
pub struct LayerKeys {
    mode: Mode,
    ring: Keyring,
    /// Our own frame key (for the source MAC it was derived for).
    own: Option<(Mac, SenderKey)>,
    /// Counter of the next frame we seal.
    next: u64,
    /// Replay windows, and the frame keys derived for each sender.
    replay: ReplayTable<SenderKeys>,
    pub counters: KeyCounters,
}

impl LayerKeys {
    /// `wall_now_ns`: the wall clock now (ns since 1970). Our counter starts
    /// there and only grows by one per frame, so it stays below the wall
    /// clock (no link carries 10^9 frames a second) and a later run of this
    /// IPCP, starting from a later wall clock, never repeats a nonce.
    pub fn new(
        policy: &Policy,
        mode: Mode,
        ring: Keyring,
        wall_now_ns: u64,
    ) -> Result<LayerKeys, KeyError> {
        if wall_now_ns < MIN_WALL_CLOCK_NS {
            return Err(KeyError::ClockNotSet(wall_now_ns));
        }
        let skew = policy.max_clock_skew.as_nanos().min(u64::MAX as u128) as u64;
        Ok(LayerKeys {
            mode,
            ring,
            own: None,
            next: wall_now_ns,
            replay: ReplayTable::new(policy.max_senders, wall_now_ns.saturating_sub(skew), skew),
            counters: KeyCounters::default(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn keyring(&self) -> &Keyring {
        &self.ring
    }

    /// Use new keys from now on. Counters and replay windows go on: a
    /// counter is never reused, whatever the key.
    pub fn rekey(&mut self, ring: Keyring) {
        self.ring = ring;
        self.own = None;
        for keys in self.replay.extras_mut() {
            *keys = Default::default();
        }
    }

    /// Seal the frame in `buf[..len]` (Ethernet header, ethflow header,
    /// payload) in place, appending the trailer; returns the new length.
    pub fn seal(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SealError> {
        let layout = FrameLayout::of(&buf[..len.min(buf.len())]).map_err(|_| SealError::NoRoom)?;
        if layout.trailer != len || buf.len() < layout.end() {
            return Err(SealError::NoRoom);
        }
        if self.next == u64::MAX {
            return Err(SealError::CounterExhausted);
        }
        let counter = self.next;
        self.next += 1;
        let src = source(buf);
        let secret = &self.ring.keys[0];
        let key = match &self.own {
            Some((mac, k)) if *mac == src => k,
            _ => &self.own.insert((src, secret.sender_key(&src))).1,
        };
        {
            let mut t = Trailer::new_checked(&mut buf[layout.trailer..layout.end()])
                .map_err(|_| SealError::NoRoom)?;
            t.set_key_id(secret.id());
            t.set_counter(counter);
        }
        let tag = match self.mode {
            Mode::Authenticate => {
                key.seal(counter, &buf[..layout.trailer + TRAILER_AAD_LEN], &mut [])
            }
            Mode::Encrypt => {
                let mut aad = [0u8; AAD_ROOM];
                let n = encrypt_aad(&mut aad, buf, &layout);
                key.seal(counter, &aad[..n], &mut buf[layout.payload.clone()])
            }
        };
        Trailer::new_checked(&mut buf[layout.trailer..layout.end()])
            .map_err(|_| SealError::NoRoom)?
            .set_tag(&tag);
        Ok(layout.end())
    }

    /// Open a received frame in place: check its trailer, counter and tag,
    /// decrypt its payload (with `encrypt`), record the counter. Returns the
    /// frame's length without the trailer. On any error nothing changed but
    /// [`LayerKeys::counters`].
    pub fn open(&mut self, frame: &mut [u8]) -> Result<usize, OpenError> {
        let r = self.open_inner(frame);
        match r {
            Err(OpenError::Replayed(_)) => self.counters.replay += 1,
            Err(_) => self.counters.auth_fail += 1,
            Ok(_) => {}
        }
        r
    }

    fn open_inner(&mut self, frame: &mut [u8]) -> Result<usize, OpenError> {
        let layout = FrameLayout::of(frame)?;
        layout.check(frame.len())?;
        let t = TrailerRepr::parse(&Trailer::new_checked(&frame[layout.trailer..])?);
        let src = source(frame);
        if !self.ring.keys.iter().any(|k| k.id() == t.key_id) {
            return Err(OpenError::UnknownKey(t.key_id));
        }
        self.replay
            .check(&src, t.counter)
            .map_err(OpenError::Replayed)?;
        let mut aad_buf = [0u8; AAD_ROOM];
        let (aad, payload): (&[u8], &mut [u8]) = match self.mode {
            Mode::Authenticate => {
                let (head, _) = frame.split_at_mut(layout.trailer + TRAILER_AAD_LEN);
                (&*head, &mut [])
            }
            Mode::Encrypt => {
                let n = encrypt_aad(&mut aad_buf, frame, &layout);
                (&aad_buf[..n], &mut frame[layout.payload.clone()])
            }
        };
        // Keys derived for a sender are kept only once it authenticated;
        // until then (and for every forged frame) they are derived anew.
        let cached = self.replay.extra(&src);
        let mut fresh: Option<(usize, SenderKey)> = None;
        for (i, secret) in self.ring.keys.iter().enumerate() {
            if secret.id() != t.key_id {
                continue;
            }
            let ok = match cached.and_then(|c| c[i].as_ref()) {
                Some(k) => k.open(t.counter, aad, payload, &t.tag),
                None => {
                    let k = secret.sender_key(&src);
                    let ok = k.open(t.counter, aad, payload, &t.tag);
                    if ok {
                        fresh = Some((i, k));
                    }
                    ok
                }
            };
            if ok {
                let keys = self.replay.accept(&src, t.counter);
                if let Some((i, k)) = fresh {
                    keys[i] = Some(k);
                }
                return Ok(layout.trailer);
            }
        }
        Err(OpenError::Auth)
    }

    /// Senders whose windows are kept.
    pub fn senders(&self) -> usize {
        self.replay.len()
    }
}

fn source(frame: &[u8]) -> Mac {
    let mut src = [0u8; 6];
    src.copy_from_slice(&frame[6..12]);
    src
}

/// Largest authenticated data with `encrypt`: Ethernet header with two VLAN
/// tags, ethflow header, key id and counter.
const AAD_ROOM: usize = 22 + crate::wire::HEADER_LEN + TRAILER_AAD_LEN;

/// With `encrypt`, the authenticated data is the headers then the trailer's
/// key id and counter (the payload between them is the ciphertext).
fn encrypt_aad(out: &mut [u8; AAD_ROOM], frame: &[u8], layout: &FrameLayout) -> usize {
    let head = layout.payload.start;
    out[..head].copy_from_slice(&frame[..head]);
    out[head..head + TRAILER_AAD_LEN]
        .copy_from_slice(&frame[layout.trailer..layout.trailer + TRAILER_AAD_LEN]);
    head + TRAILER_AAD_LEN
}
