//! The layer key in the IPCP's event loop: the key files, re-read on
//! SIGHUP (through a signal fd the loop polls), the sealing and opening
//! state, and the few calls the loop makes on each frame. The decisions are
//! in [`LayerKeys`]; this module only does the file and signal IO around it.

use super::{KeyCounters, KeyFiles, LayerKeys, Mode, SealError, TRAILER_LEN};
use crate::wire::{EthHeader, Mac, HEADER_LEN};
use log::{debug, info, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// Bytes a frame carries besides its SDU and Ethernet header: the ethflow
/// header, and the layer-key trailer when keyed.
pub fn overhead(keyed: bool) -> usize {
    HEADER_LEN + if keyed { TRAILER_LEN } else { 0 }
}

/// Why a keyed IPCP cannot start.
#[derive(Debug)]
pub enum KeyedError {
    File(irm::keyfile::KeyFileError),
    Key(super::KeyError),
    Signal(nix::Error),
}

impl std::fmt::Display for KeyedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyedError::File(e) => e.fmt(f),
            KeyedError::Key(e) => e.fmt(f),
            KeyedError::Signal(e) => write!(f, "cannot watch SIGHUP for key reloads: {e}"),
        }
    }
}

impl std::error::Error for KeyedError {}

/// The layer key of a keyed IPCP: the files it re-reads on SIGHUP, the
/// sealing and opening state, and the signal fd that says "re-read".
pub struct Keyed {
    files: KeyFiles,
    keys: LayerKeys,
    sighup: SignalFd,
}

impl Keyed {
    /// Load `path` (and `path.next`) for a layer on `vlan`. SIGHUP must be
    /// blocked in every thread already (`main` does it before any other
    /// starts), so it arrives only through [`Keyed::signal_fd`].
    pub fn open(path: &Path, encrypt: bool, vlan: Option<u16>) -> Result<Keyed, KeyedError> {
        let mode = if encrypt {
            Mode::Encrypt
        } else {
            Mode::Authenticate
        };
        let files = KeyFiles::load(path, mode, vlan.unwrap_or(0)).map_err(KeyedError::File)?;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
        let keys = LayerKeys::new(&super::Policy::default(), mode, files.keyring(), wall)
            .map_err(KeyedError::Key)?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGHUP);
        let sighup = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(KeyedError::Signal)?;
        Ok(Keyed {
            files,
            keys,
            sighup,
        })
    }

    /// Readable when a SIGHUP waits: then call [`Keyed::reload`].
    pub fn signal_fd(&self) -> BorrowedFd<'_> {
        self.sighup.as_fd()
    }

    pub fn counters(&self) -> KeyCounters {
        self.keys.counters
    }

    /// For the log: file, mode, key ids.
    pub fn describe(&self) -> String {
        let ids: Vec<String> = self
            .keys
            .keyring()
            .ids()
            .iter()
            .map(|i| format!("{i:#04x}"))
            .collect();
        format!(
            "layer key {} ({}; sealing with key id {}, accepting {})",
            self.files.path().display(),
            match self.keys.mode() {
                Mode::Encrypt => "authenticated and encrypted",
                Mode::Authenticate => "authenticated",
            },
            ids[0],
            ids.join(", ")
        )
    }

    /// SIGHUP: re-read the key files; a bad file keeps the keys in use.
    pub fn reload(&mut self) {
        while let Ok(Some(_)) = self.sighup.read_signal() {}
        match self.files.reload() {
            Ok(()) => {
                self.keys.rekey(self.files.keyring());
                info!("Reloaded the {}.", self.describe());
            }
            Err(e) => warn!("cannot reload the layer key, keeping the keys in use: {e}"),
        }
    }

    /// Seal one frame (see [`LayerKeys::seal`]).
    pub fn seal(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SealError> {
        self.keys.seal(buf, len)
    }

    /// Seal the frames `bufs[i][..lens[i]]`; a frame that cannot be sealed
    /// is dropped. Returns how many frames remain, moved up to the front
    /// (copied, not swapped: the buffers may be a transmit ring's slots,
    /// which must stay in order).
    pub fn seal_batch<B: AsMut<[u8]>>(&mut self, bufs: &mut [B], lens: &mut [usize]) -> usize {
        let mut kept = 0;
        for i in 0..lens.len() {
            match self.keys.seal(bufs[i].as_mut(), lens[i]) {
                Ok(n) => {
                    if kept != i {
                        let (front, back) = bufs.split_at_mut(i);
                        front[kept].as_mut()[..n].copy_from_slice(&back[0].as_mut()[..n]);
                    }
                    lens[kept] = n;
                    kept += 1;
                }
                Err(e) => warn!("frame not sent: {e}"),
            }
        }
        kept
    }

    /// Verify (and with `encrypt`, decrypt) a received frame in place;
    /// returns its length without the trailer, or `None` when it failed
    /// (counted). Frames the IPCP ignores anyway (its own, other ethertypes)
    /// pass unverified, for the parser to drop.
    pub fn open_frame(&mut self, frame: &mut [u8], my_mac: Mac, ethertype: u16) -> Option<usize> {
        match EthHeader::parse(frame) {
            Ok((eth, _)) if eth.src == my_mac || eth.ethertype != ethertype => Some(frame.len()),
            _ => match self.keys.open(frame) {
                Ok(len) => Some(len),
                Err(e) => {
                    debug!("frame refused by the layer key: {e}");
                    None
                }
            },
        }
    }
}
