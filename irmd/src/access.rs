//! Who can reach the control socket: a root-owned directory nobody else can
//! write, the socket mode 0660 and group `ethflow` (`--socket-group`). If the
//! group does not exist irmd still starts, root-only (socket group root), and
//! says how to open it up — the same choice dockerd makes for its group.

use irm::ctrl::CtrlListener;
use log::warn;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Socket file mode: owner and group read/write, nobody else.
pub const SOCKET_MODE: u32 = 0o660;

/// Why the socket cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("socket path {0} has no directory")]
    NoDir(String),
    #[error(
        "directory {dir} is writable by {who} (mode {mode:o}): another user could replace the \
         socket; use a directory only root can write, e.g. /run/ethflow"
    )]
    Writable {
        dir: String,
        who: &'static str,
        mode: u32,
    },
    #[error("directory {dir} belongs to uid {uid}, not root: that user could replace the socket")]
    Owner { dir: String, uid: u32 },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Listen(irm::Error),
}

/// Check one directory's owner and mode. `last` is the socket's own
/// directory: it must not be writable by group or others at all; an
/// ancestor may be if it is sticky (like /tmp: nobody renames another's entry).
pub fn check_dir(dir: &Path, uid: u32, mode: u32, last: bool) -> Result<(), AccessError> {
    let me = nix::unistd::geteuid().as_raw();
    let d = dir.display().to_string();
    if uid != 0 && uid != me {
        return Err(AccessError::Owner { dir: d, uid });
    }
    let sticky = mode & 0o1000 != 0;
    let who = if mode & 0o002 != 0 {
        Some("everyone")
    } else if mode & 0o020 != 0 {
        Some("its group")
    } else {
        None
    };
    match who {
        Some(who) if last || !sticky => Err(AccessError::Writable {
            dir: d,
            who,
            mode: mode & 0o7777,
        }),
        _ => Ok(()),
    }
}

/// Make the socket's directory if missing (root-owned, 0755) and check it and
/// every ancestor.
pub fn prepare_dir(path: &str) -> Result<(), AccessError> {
    let dir = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| AccessError::NoDir(path.to_string()))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| AccessError::Io(dir.display().to_string(), e))?;
        // The umask may have taken bits away; set exactly 0755.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| AccessError::Io(dir.display().to_string(), e))?;
    }
    let dir = dir
        .canonicalize()
        .map_err(|e| AccessError::Io(dir.display().to_string(), e))?;
    let mut last = true;
    for d in dir.ancestors() {
        let m = std::fs::metadata(d).map_err(|e| AccessError::Io(d.display().to_string(), e))?;
        check_dir(d, m.uid(), m.mode(), last)?;
        last = false;
    }
    Ok(())
}

/// Bind the control socket with mode 0660 and the access group.
pub fn listen(path: &str, group: &str) -> Result<CtrlListener, AccessError> {
    prepare_dir(path)?;
    let gid = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => g.gid.as_raw(),
        _ => {
            warn!(
                "group {group} does not exist: only root can use irmd. Create it \
                 (groupadd -r {group}) and restart irmd to let its members in."
            );
            0
        }
    };
    CtrlListener::bind_with(path, Some(SOCKET_MODE), Some(gid)).map_err(AccessError::Listen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_rules() {
        let p = Path::new("/x");
        assert!(check_dir(p, 0, 0o40755, true).is_ok());
        // /tmp itself: world-writable, sticky: fine as an ancestor, not as the socket's directory.
        assert!(check_dir(p, 0, 0o41777, false).is_ok());
        let e = check_dir(p, 0, 0o41777, true).unwrap_err().to_string();
        assert!(e.contains("writable by everyone"), "{e}");
        assert!(check_dir(p, 0, 0o40775, true)
            .unwrap_err()
            .to_string()
            .contains("its group"));
        assert!(check_dir(p, 0, 0o40777, false).is_err(), "not sticky");
        assert!(check_dir(p, 4242, 0o40755, true)
            .unwrap_err()
            .to_string()
            .contains("uid 4242"));
    }

    #[test]
    fn tmp_itself_is_refused() {
        let e = prepare_dir("/tmp/irmd.sock").unwrap_err().to_string();
        assert!(e.contains("/tmp") && e.contains("writable"), "{e}");
    }
}
