//! The few system calls the library and the daemons make that nix does not
//! offer as safe functions, each behind a safe, typed wrapper. With
//! `shm`'s mapping code and the control socket's fd passing, this is where
//! `irm`'s `unsafe` lives.
#![allow(unsafe_code)]

use std::io;

/// Ignore SIGPIPE in this process: a write to a pipe or socket whose reader
/// is gone then fails with EPIPE instead of killing it. The daemons call this
/// first thing — a dying application must never take them with it.
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: installing SIG_IGN runs no handler code, so none of signal()'s
    // handler preconditions apply.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A resource limit: soft (`cur`) and hard (`max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub cur: u64,
    pub max: u64,
}

/// RLIMIT_NOFILE of this process.
pub fn nofile_limit() -> io::Result<Limit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live local it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Limit {
        cur: lim.rlim_cur,
        max: lim.rlim_max,
    })
}

/// Set RLIMIT_NOFILE (raising the hard limit needs CAP_SYS_RESOURCE).
pub fn set_nofile_limit(l: Limit) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: l.cur,
        rlim_max: l.max,
    };
    // SAFETY: setrlimit only reads the live local it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigpipe_ignored_makes_a_broken_pipe_an_error() {
        ignore_sigpipe().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        assert_eq!(nix::unistd::write(&w, b"x"), Err(nix::errno::Errno::EPIPE));
    }

    #[test]
    fn the_nofile_limit_reads_back_what_was_set() {
        let now = nofile_limit().unwrap();
        assert!(now.cur <= now.max);
        set_nofile_limit(now).unwrap();
        assert_eq!(nofile_limit().unwrap(), now);
        // Above the hard limit is refused unless privileged; never a panic.
        let _ = set_nofile_limit(Limit {
            cur: now.max.saturating_add(1),
            max: now.max.saturating_add(1),
        });
    }
}
