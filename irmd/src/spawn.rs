//! Starting `ipcpd-eth` processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `ipcpd-eth` next to our own executable, else whatever `PATH` finds.
pub fn ipcpd_path() -> PathBuf {
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let p = dir.join("ipcpd-eth");
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("ipcpd-eth")
}

pub struct IpcpArgs<'a> {
    pub name: &'a str,
    pub layer: &'a str,
    pub dev: &'a str,
    pub ethertype: u16,
    pub backend: &'a str,
    pub busy_poll_us: u32,
}

/// Spawn the IPCP; it inherits `IRM_SOCKET` and our stderr (its log lines show
/// beside irmd's).
pub fn spawn_ipcp(a: &IpcpArgs) -> std::io::Result<Child> {
    Command::new(ipcpd_path())
        .arg("--name")
        .arg(a.name)
        .arg("--layer")
        .arg(a.layer)
        .arg("--dev")
        .arg(a.dev)
        .arg("--ethertype")
        .arg(format!("0x{:04x}", a.ethertype))
        .arg("--backend")
        .arg(a.backend)
        .arg("--busy-poll")
        .arg(a.busy_poll_us.to_string())
        .env("IRM_SOCKET", irm::proto::socket_path())
        .stdin(Stdio::null())
        .spawn()
}
