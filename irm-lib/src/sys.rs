//! The few system calls the library and the daemons make that nix does not
//! offer as safe functions, each behind a safe, typed wrapper: SIGPIPE,
//! RLIMIT_NOFILE and RLIMIT_MEMLOCK, what a spawned child inherits or dies
//! with, and [`Mmap`], the one owner of shared mappings (flow
//! memory, the IPCP's AF_XDP rings). With `shm`'s accesses to flow memory
//! and the control socket's fd passing, this is where `irm`'s `unsafe` lives.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr::NonNull;

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

/// Lift RLIMIT_MEMLOCK (BPF maps and AF_XDP memory count against it on
/// older kernels). Needs CAP_SYS_RESOURCE to raise the hard limit.
pub fn set_memlock_unlimited() -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the live local it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Have the child that `cmd` starts get `fd` as fd number `target` (without
/// CLOEXEC), e.g. a channel it is to inherit. An `fd` that is not open by
/// then makes the spawn fail with EBADF.
pub fn pass_fd_as(cmd: &mut Command, fd: RawFd, target: RawFd) {
    // SAFETY: the closure runs in the forked child before exec; dup2 and
    // fcntl are async-signal-safe and touch only the child's fd table. dup2
    // leaves the new fd without CLOEXEC; when it already is `target`, clear
    // the flag instead.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Have the child that `cmd` starts be killed (SIGKILL) when the thread that
/// started it dies, so nothing outlives a test or daemon killed from outside.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec; prctl is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Have the child that `cmd` starts run as `uid`/`gid` with exactly the
/// supplementary `groups` (the user's, from `nix::unistd::getgrouplist`,
/// looked up before the fork). `Command::uid` alone drops every
/// supplementary group, which would lock a program out of a socket its user
/// reaches through a group (irmd's `ethflow` group). The list is copied into
/// the closure, so the child makes system calls only.
pub fn run_as(cmd: &mut Command, uid: u32, gid: u32, groups: Vec<u32>) {
    let groups: Vec<libc::gid_t> = groups.into_iter().collect();
    // SAFETY: runs in the forked child before exec; setgroups, setgid and
    // setuid are async-signal-safe system calls; `groups` is owned by the
    // closure and only read. Order: groups and gid while still privileged,
    // uid last.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A shared read-write mapping of a file or socket, unmapped on drop. It
/// hands out only a raw pointer: what the memory holds, and who else writes
/// it, is for the code that reads through the pointer to handle.
#[derive(Debug)]
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the value owns the mapping and gives out only raw pointers; any
// thread may hold it or unmap it (on drop).
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` only reads the pointer and the length.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Map `len` bytes of `fd` from byte `offset` (a multiple of the page
    /// size), MAP_SHARED, read and write; `populate` asks for MAP_POPULATE.
    /// The pointer is valid for `len` bytes until drop; accesses past the end
    /// of a shorter file fault, so callers check the file's size first.
    pub fn shared(fd: BorrowedFd<'_>, len: usize, offset: u64, populate: bool) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a new mapping at an address the kernel picks: it overlaps
        // no memory this process uses, so creating it invalidates nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave address 0"))?;
        Ok(Mmap { ptr, len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_non_null(&self) -> NonNull<u8> {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned; the owners of pointers into
        // it (ShmMap, the rings) drop them with this value.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_mapping_sees_the_file_and_is_refused_when_empty() {
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
            .unwrap();
        nix::unistd::ftruncate(&fd, 8192).unwrap();
        assert!(Mmap::shared(fd.as_fd(), 0, 0, false).is_err());
        assert!(
            Mmap::shared(fd.as_fd(), 4096, 100, false).is_err(),
            "unaligned offset"
        );
        let m = Mmap::shared(fd.as_fd(), 4096, 4096, true).unwrap();
        assert_eq!(m.len(), 4096);
        nix::sys::uio::pwrite(&fd, b"hi", 4096).unwrap();
        // SAFETY: two bytes inside the live mapping, read with volatile loads.
        let got = unsafe {
            [
                m.as_ptr().read_volatile(),
                m.as_ptr().add(1).read_volatile(),
            ]
        };
        assert_eq!(&got, b"hi");
    }

    use std::os::fd::AsFd;

    #[test]
    fn a_child_gets_the_fd_passed_to_it_and_a_bad_fd_fails_the_spawn() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo passed >&7"]);
        pass_fd_as(&mut cmd, w.as_raw_fd(), 7);
        die_with_parent(&mut cmd);
        assert!(cmd.status().unwrap().success());
        drop(w);
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"passed\n");
        let mut bad = Command::new("true");
        pass_fd_as(&mut bad, 987_654, 7);
        assert!(bad.status().is_err());
    }

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
