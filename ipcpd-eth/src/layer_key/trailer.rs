//! The layer-key trailer, after the payload of every frame of a keyed layer:
//!
//! ```text
//!  0        1                          9                                  25
//!  +--------+--------------------------+----------------------------------+
//!  | key id |  sender counter (u64 BE) |      AEAD tag (16 bytes)         |
//!  +--------+--------------------------+----------------------------------+
//! ```
//!
//! The header's payload length counts the payload only, so the trailer starts
//! right after it ([`FrameLayout`]); Ethernet padding may follow the trailer.

use super::OpenError;
use std::ops::Range;

mod field {
    use std::ops::Range;
    pub const KEY_ID: usize = 0;
    pub const COUNTER: Range<usize> = 1..9;
    pub const TAG: Range<usize> = 9..25;
}

/// Bytes of the trailer.
pub const TRAILER_LEN: usize = field::TAG.end;
/// Bytes of the trailer that are authenticated (key id and counter).
pub const TRAILER_AAD_LEN: usize = field::COUNTER.end;
/// Bytes of the tag.
pub const TAG_LEN: usize = field::TAG.end - field::TAG.start;

/// A checked view over the trailer's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Trailer<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Trailer<T> {
    /// Check that `buffer` holds a whole trailer (longer is fine).
    pub fn new_checked(buffer: T) -> Result<Trailer<T>, OpenError> {
        if buffer.as_ref().len() < TRAILER_LEN {
            return Err(OpenError::Truncated);
        }
        Ok(Trailer { buffer })
    }
    pub fn key_id(&self) -> u8 {
        self.buffer.as_ref()[field::KEY_ID]
    }
    pub fn counter(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::COUNTER]);
        u64::from_be_bytes(b)
    }
    pub fn tag(&self) -> [u8; TAG_LEN] {
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&self.buffer.as_ref()[field::TAG]);
        t
    }
    /// Key id and counter, as they enter the authenticated data.
    pub fn authenticated(&self) -> &[u8] {
        &self.buffer.as_ref()[..TRAILER_AAD_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Trailer<T> {
    pub fn set_key_id(&mut self, id: u8) {
        self.buffer.as_mut()[field::KEY_ID] = id;
    }
    pub fn set_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&counter.to_be_bytes());
    }
    pub fn set_tag(&mut self, tag: &[u8; TAG_LEN]) {
        self.buffer.as_mut()[field::TAG].copy_from_slice(tag);
    }
}

/// The trailer's fields as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerRepr {
    pub key_id: u8,
    pub counter: u64,
    pub tag: [u8; TAG_LEN],
}

impl TrailerRepr {
    pub fn parse<T: AsRef<[u8]>>(t: &Trailer<T>) -> TrailerRepr {
        TrailerRepr {
            key_id: t.key_id(),
            counter: t.counter(),
            tag: t.tag(),
        }
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, t: &mut Trailer<T>) {
        t.set_key_id(self.key_id);
        t.set_counter(self.counter);
        t.set_tag(&self.tag);
    }
}

/// ethflow header bytes (the trailer code reads only its length field).
const ETHFLOW_HEADER_LEN: usize = crate::wire::HEADER_LEN;
/// Where the ethflow header keeps the payload length.
const ETHFLOW_LEN: Range<usize> = 2..4;
/// 802.1Q and 802.1ad tag protocol identifiers.
const VLAN_TPIDS: [u16; 2] = [0x8100, 0x88a8];
/// At most this many VLAN tags are looked through (QinQ).
const MAX_TAGS: usize = 2;

/// Where the parts of a keyed frame lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLayout {
    /// Bytes of the Ethernet header, VLAN tags included.
    pub eth_len: usize,
    /// The payload (after the ethflow header).
    pub payload: Range<usize>,
    /// Where the trailer starts (= `payload.end`).
    pub trailer: usize,
}

impl FrameLayout {
    /// Find the parts of `frame` (a whole Ethernet frame) that has an ethflow
    /// header; the trailer need not be there yet (see [`FrameLayout::check`]).
    pub fn of(frame: &[u8]) -> Result<FrameLayout, OpenError> {
        let eth_len = eth_header_len(frame)?;
        let hdr = frame
            .get(eth_len..eth_len + ETHFLOW_HEADER_LEN)
            .ok_or(OpenError::Truncated)?;
        let len = u16::from_be_bytes([hdr[ETHFLOW_LEN.start], hdr[ETHFLOW_LEN.start + 1]]);
        let start = eth_len + ETHFLOW_HEADER_LEN;
        let end = start + len as usize;
        Ok(FrameLayout {
            eth_len,
            payload: start..end,
            trailer: end,
        })
    }

    /// The frame is long enough to hold the trailer.
    pub fn check(&self, frame_len: usize) -> Result<(), OpenError> {
        if frame_len < self.trailer + TRAILER_LEN {
            return Err(OpenError::Truncated);
        }
        Ok(())
    }

    /// End of the frame with its trailer.
    pub fn end(&self) -> usize {
        self.trailer + TRAILER_LEN
    }
}

/// Bytes of the Ethernet header: destination, source, up to two VLAN tags,
/// ethertype.
pub fn eth_header_len(frame: &[u8]) -> Result<usize, OpenError> {
    let mut at = 12;
    for _ in 0..=MAX_TAGS {
        let ty = frame.get(at..at + 2).ok_or(OpenError::Truncated)?;
        if !VLAN_TPIDS.contains(&u16::from_be_bytes([ty[0], ty[1]])) {
            return Ok(at + 2);
        }
        at += 4;
    }
    Err(OpenError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_round_trips_through_the_view() {
        let r = TrailerRepr {
            key_id: 0xa5,
            counter: 0x0102_0304_0506_0708,
            tag: [9; TAG_LEN],
        };
        let mut buf = [0u8; TRAILER_LEN];
        r.emit(&mut Trailer::new_checked(&mut buf[..]).unwrap());
        assert_eq!(buf[0], 0xa5);
        assert_eq!(&buf[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let v = Trailer::new_checked(&buf[..]).unwrap();
        assert_eq!(TrailerRepr::parse(&v), r);
        assert_eq!(v.authenticated(), &buf[..9]);
        assert_eq!(
            Trailer::new_checked(&buf[..TRAILER_LEN - 1]).unwrap_err(),
            OpenError::Truncated
        );
    }

    #[test]
    fn layout_finds_the_trailer_after_the_payload_also_behind_vlan_tags() {
        let mut f = vec![0u8; 14 + 20 + 5 + TRAILER_LEN + 3];
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        f[14 + 2..14 + 4].copy_from_slice(&5u16.to_be_bytes());
        let l = FrameLayout::of(&f).unwrap();
        assert_eq!((l.eth_len, l.payload.clone(), l.trailer), (14, 34..39, 39));
        l.check(f.len()).unwrap();
        assert_eq!(l.check(l.end() - 1), Err(OpenError::Truncated));
        let mut t = vec![0u8; 22 + 20];
        t[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        t[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
        t[20..22].copy_from_slice(&0x88b5u16.to_be_bytes());
        assert_eq!(FrameLayout::of(&t).unwrap().eth_len, 22);
        // Three tags are not looked through.
        let mut three = vec![0u8; 64];
        for at in [12, 16, 20] {
            three[at..at + 2].copy_from_slice(&0x8100u16.to_be_bytes());
        }
        assert_eq!(FrameLayout::of(&three), Err(OpenError::Truncated));
        assert_eq!(FrameLayout::of(&f[..33]), Err(OpenError::Truncated));
    }
}
