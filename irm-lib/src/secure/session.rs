//! A secure flow's state inside [`crate::Flow`]: building the configuration
//! from the name's files, running the handshake over the flow's first SDUs,
//! and sealing/opening every SDU after it.

use super::frag::{self, Reassembly};
use super::handshake::{client_finish, server_respond, ClientHandshake, ClientNext, ServerNext};
use super::record::{Opener, Policy, Sealer, OVERHEAD};
use super::{
    load_certs, load_enc, load_key, ClientConfig, EncConfig, HandshakeError, Identity, Keys,
    ServerConfig,
};
use crate::error::{Error, Result};
use crate::proto::NameSecurity;
use crate::shm::AppEnd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a handshake may take when the caller gave no timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-flow record state.
pub struct Secure {
    seal: Mutex<(Sealer, Vec<u8>)>,
    open: Mutex<(Opener, Vec<u8>)>,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Secure {
    fn new(keys: Keys) -> Secure {
        let p = Policy::default();
        Secure {
            seal: Mutex::new((Sealer::new(keys.cipher, keys.tx, p), Vec::new())),
            open: Mutex::new((Opener::new(keys.cipher, keys.rx, p), Vec::new())),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records dropped: forged, tampered, replayed or too short.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Seal `sdu` and write the record.
    pub fn write(
        &self,
        end: &AppEnd,
        sdu: &[u8],
        deadline: Option<Instant>,
        nb: bool,
    ) -> Result<usize> {
        let mut g = lock(&self.seal);
        let (sealer, buf) = &mut *g;
        if sealer.seal(sdu, buf).is_none() {
            log::error!("secure flow: sequence numbers used up; refusing to reuse a nonce");
            return Err(Error::Crypt);
        }
        end.write(buf, deadline, nb)?;
        Ok(sdu.len())
    }

    /// Read records until one opens; others are dropped and counted.
    pub fn read(
        &self,
        end: &AppEnd,
        out: &mut [u8],
        max_record: usize,
        deadline: Option<Instant>,
        nb: bool,
    ) -> Result<usize> {
        let mut g = lock(&self.open);
        let (opener, buf) = &mut *g;
        buf.resize(max_record, 0);
        loop {
            let n = end.read(buf, deadline, nb)?;
            match opener.open(&mut buf[..n]) {
                Ok(m) => {
                    let k = m.min(out.len());
                    out[..k].copy_from_slice(&buf[super::record::SEQ_LEN..][..k]);
                    return Ok(k);
                }
                Err(why) => {
                    let d = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    log::debug!("secure flow: record dropped ({why:?}), {d} so far");
                }
            }
        }
    }
}

fn client_config(name: &str, sec: Option<&NameSecurity>) -> Result<ClientConfig> {
    let Some(ca) = sec.and_then(|s| s.cacrt.as_ref()) else {
        log::error!(
            "secure flow to {name}: no CA configured for it (cacrtpath) — cannot check the server"
        );
        return Err(Error::Auth);
    };
    let sec = sec.expect("has a CA");
    let identity = match (&sec.ccrt, &sec.ckey) {
        (Some(c), Some(k)) => Some(Identity {
            chain: load_certs(Path::new(c))?,
            key: load_key(Path::new(k))?,
        }),
        _ => None,
    };
    let enc = match &sec.cenc {
        Some(p) => load_enc(Path::new(p))?,
        None => EncConfig::default(),
    };
    Ok(ClientConfig {
        ca: load_certs(Path::new(ca))?,
        identity,
        ciphers: enc.ciphers,
        kex: enc.kex,
    })
}

fn server_config(sec: &NameSecurity) -> Result<ServerConfig> {
    let (Some(c), Some(k)) = (&sec.scrt, &sec.skey) else {
        return Err(Error::Auth);
    };
    let enc = match &sec.senc {
        Some(p) => load_enc(Path::new(p))?,
        None => EncConfig::default(),
    };
    Ok(ServerConfig {
        chain: load_certs(Path::new(c))?,
        key: load_key(Path::new(k))?,
        client_ca: match &sec.cacrt {
            Some(p) => Some(load_certs(Path::new(p))?),
            None => None,
        },
        ciphers: enc.ciphers,
        kex: enc.kex,
    })
}

/// Whether a client must run the handshake for a flow to `name`.
pub fn client_wants(sec: Option<&NameSecurity>, encrypt: bool) -> bool {
    encrypt || sec.is_some_and(|s| s.cacrt.is_some() || s.ccrt.is_some() || s.cenc.is_some())
}

/// Whether a server must run the handshake for a flow it accepted.
pub fn server_wants(sec: Option<&NameSecurity>) -> bool {
    sec.is_some_and(|s| s.scrt.is_some())
}

fn fail(side: &str, name: &str, e: HandshakeError) -> Error {
    log::error!("secure flow {side} {name}: {e}");
    e.to_error()
}

/// Read one handshake message: its fragments, until the last is in.
fn hs_read(
    end: &AppEnd,
    max: usize,
    deadline: Instant,
) -> std::result::Result<Vec<u8>, HandshakeError> {
    let mut buf = vec![0u8; max];
    let mut r = Reassembly::new(frag::Policy::default());
    loop {
        let until = r.poll_timeout().map_or(deadline, |t| t.min(deadline));
        let n = end
            .read(&mut buf, Some(until), false)
            .map_err(HandshakeError::Flow)?;
        if let Some(msg) = r
            .push(Instant::now(), &buf[..n])
            .map_err(HandshakeError::from)?
        {
            return Ok(msg);
        }
    }
}

/// Write one handshake message as fragments of at most `max` bytes.
fn hs_write(
    end: &AppEnd,
    msg: &[u8],
    max: usize,
    deadline: Instant,
) -> std::result::Result<(), HandshakeError> {
    for f in frag::fragment(msg, max, &frag::Policy::default()).map_err(HandshakeError::from)? {
        end.write(&f, Some(deadline), false)
            .map_err(HandshakeError::Flow)?;
    }
    Ok(())
}

/// The client's handshake on a freshly allocated flow.
pub fn client(
    end: &AppEnd,
    name: &str,
    sec: Option<&NameSecurity>,
    max_sdu: usize,
    timeout: Option<Duration>,
) -> Result<Secure> {
    let cfg = Arc::new(client_config(name, sec)?);
    let deadline = Instant::now() + timeout.unwrap_or(HANDSHAKE_TIMEOUT);
    let run = || -> std::result::Result<Keys, HandshakeError> {
        let (hs, hello) = ClientHandshake::start(cfg, name)?;
        hs_write(end, &hello, max_sdu, deadline)?;
        let reply = hs_read(end, max_sdu, deadline)?;
        match hs.on_server(&reply, SystemTime::now())? {
            ClientNext::Done(k) => Ok(k),
            ClientNext::Authenticate { send, keys } => {
                hs_write(end, &send, max_sdu, deadline)?;
                client_finish(&hs_read(end, max_sdu, deadline)?)?;
                Ok(keys)
            }
        }
    };
    let keys = run().map_err(|e| fail("to", name, e))?;
    log::info!(
        "secure flow to {name}: {}, {}",
        keys.cipher.name(),
        keys.kex.name()
    );
    Ok(Secure::new(keys))
}

/// The server's handshake on a flow it accepted for `name`.
pub fn server(
    end: &AppEnd,
    name: &str,
    sec: &NameSecurity,
    max_sdu: usize,
    timeout: Option<Duration>,
) -> Result<Secure> {
    let cfg = Arc::new(server_config(sec)?);
    let deadline = Instant::now() + timeout.unwrap_or(HANDSHAKE_TIMEOUT);
    let run = || -> std::result::Result<Keys, HandshakeError> {
        let hello = hs_read(end, max_sdu, deadline)?;
        let reply = server_respond(cfg, name, &hello);
        // The refusal goes out too, so the client can say why.
        hs_write(end, &reply.send, max_sdu, deadline)?;
        match reply.next? {
            ServerNext::Done(k) => Ok(k),
            ServerNext::AwaitClient(p) => {
                let msg = hs_read(end, max_sdu, deadline)?;
                let verdict = p.on_client(&msg, SystemTime::now());
                hs_write(end, &verdict.send, max_sdu, deadline)?;
                match verdict.next? {
                    ServerNext::Done(k) => Ok(k),
                    ServerNext::AwaitClient(_) => {
                        Err(HandshakeError::Garbage("second client round"))
                    }
                }
            }
        }
    };
    let keys = run().map_err(|e| fail("for", name, e))?;
    log::info!(
        "secure flow for {name}: {}, {}",
        keys.cipher.name(),
        keys.kex.name()
    );
    Ok(Secure::new(keys))
}

/// A secure flow's max SDU, given the plain flow's.
pub fn max_sdu(plain: usize) -> usize {
    plain.saturating_sub(OVERHEAD)
}
