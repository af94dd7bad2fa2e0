//! Starting `ipcpd-eth` processes.
//!
//! irmd starts only the `ipcpd-eth` installed next to its own executable (never
//! one found through `PATH`, which a user could steer), and talks to it over a
//! socketpair made here: the child's end becomes its fd 3 (`--ctrl-fd 3`), so
//! the IPCP never uses the public socket and nothing else can speak as it
//! (decision 0009).

use irm::ctrl::CtrlSocket;
use irm::proto::BootstrapSpec;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The fd number the IPCP finds its channel on.
pub const CHILD_CTRL_FD: RawFd = 3;

/// Why an IPCP could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot find irmd's own executable: {0}")]
    NoSelf(std::io::Error),
    #[error("{0} is missing: install ipcpd-eth next to irmd")]
    Missing(PathBuf),
    #[error("cannot create the IPCP's channel: {0}")]
    Channel(irm::Error),
    #[error("cannot start {path}: {err}")]
    Exec { path: PathBuf, err: std::io::Error },
}

/// `ipcpd-eth` next to our own executable; nothing else.
pub fn ipcpd_path() -> Result<PathBuf, SpawnError> {
    let me = std::env::current_exe().map_err(SpawnError::NoSelf)?;
    let dir = me.parent().unwrap_or(Path::new("/"));
    let p = dir.join("ipcpd-eth");
    if p.is_file() {
        Ok(p)
    } else {
        Err(SpawnError::Missing(p))
    }
}

/// The command line for an IPCP (without the program).
pub fn ipcp_args(spec: &BootstrapSpec, max_remote_timeout_ms: Option<u64>) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--ctrl-fd".into(),
        CHILD_CTRL_FD.to_string(),
        "--name".into(),
        spec.name.clone(),
        "--layer".into(),
        spec.layer.clone(),
        "--dev".into(),
        spec.dev.clone(),
        "--ethertype".into(),
        format!("0x{:04x}", spec.ethertype),
        "--backend".into(),
        spec.backend.clone(),
        "--busy-poll".into(),
        spec.busy_poll_us.to_string(),
    ];
    if let Some(v) = spec.vlan {
        a.push("--vlan".into());
        a.push(v.to_string());
    }
    if let Some(k) = &spec.key {
        a.push("--key".into());
        a.push(k.clone());
    }
    if spec.encrypt {
        a.push("--encrypt".into());
    }
    if let Some(q) = spec.queues {
        a.push("--queues".into());
        a.push(q.to_string());
    }
    if let Some(t) = max_remote_timeout_ms {
        a.push("--max-remote-timeout".into());
        a.push(t.to_string());
    }
    a
}

/// Spawn the IPCP with its end of a fresh channel as fd 3; returns the child
/// and irmd's end. It inherits our stderr (its log lines show beside irmd's).
pub fn spawn_ipcp(
    spec: &BootstrapSpec,
    max_remote_timeout_ms: Option<u64>,
) -> Result<(Child, CtrlSocket), SpawnError> {
    let path = ipcpd_path()?;
    let (ours, theirs) = CtrlSocket::pair().map_err(SpawnError::Channel)?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&path);
    cmd.args(ipcp_args(spec, max_remote_timeout_ms))
        .env_remove("IRM_SOCKET")
        .stdin(Stdio::null());
    irm::sys::pass_fd_as(&mut cmd, fd, CHILD_CTRL_FD);
    let child = cmd.spawn().map_err(|err| SpawnError::Exec {
        path: path.clone(),
        err,
    })?;
    drop(theirs);
    Ok((child, ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ipcpd_next_to_irmd_is_used() {
        // This test runs from target/<profile>/deps, where no ipcpd-eth is.
        let me = std::env::current_exe().unwrap();
        let want = me.parent().unwrap().join("ipcpd-eth");
        if want.exists() {
            return assert_eq!(ipcpd_path().unwrap(), want);
        }
        let e = ipcpd_path().unwrap_err().to_string();
        assert!(e.contains(&want.display().to_string()), "{e}");
        assert!(e.contains("install ipcpd-eth next to irmd"), "{e}");
    }

    #[test]
    fn new_keywords_reach_the_command_line() {
        let spec = BootstrapSpec {
            name: "eth-a".into(),
            layer: "eth".into(),
            dev: "veth0".into(),
            ethertype: 0x88b5,
            backend: "raw".into(),
            busy_poll_us: 0,
            vlan: Some(12),
            key: Some("/etc/ethflow/k".into()),
            encrypt: true,
            queues: Some(4),
        };
        let a = ipcp_args(&spec, Some(5000)).join(" ");
        assert!(a.starts_with("--ctrl-fd 3 "), "{a}");
        assert!(a.contains("--vlan 12"), "{a}");
        assert!(a.contains("--key /etc/ethflow/k"), "{a}");
        assert!(a.contains("--encrypt"), "{a}");
        assert!(a.contains("--max-remote-timeout 5000"), "{a}");
        assert!(a.contains("--queues 4"), "{a}");
        let plain = BootstrapSpec {
            vlan: None,
            key: None,
            encrypt: false,
            queues: None,
            ..spec
        };
        let a = ipcp_args(&plain, None).join(" ");
        assert!(!a.contains("--vlan") && !a.contains("--key") && !a.contains("--encrypt"));
        assert!(!a.contains("--queues"), "{a}");
        assert!(!a.contains("--max-remote-timeout"));
    }
}
