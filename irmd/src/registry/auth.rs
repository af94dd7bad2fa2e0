//! Who a client is, and what it may do.
//!
//! Identity is what the kernel recorded when the client connected
//! (SO_PEERCRED: uid, gid, pid), never what the client says. Admin actions
//! (IPCPs, daemon settings) need root or CAP_NET_ADMIN; names and bindings
//! belong to the uid that made them (that uid or root may change them); a
//! process sees and touches only its own flows, and a uid's flow list shows
//! only its flows (root and admins see all).

use irm::Error;

/// A client's credentials, fixed at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// uid 0 or CAP_NET_ADMIN in the process's effective set at connect.
    pub admin: bool,
}

impl Cred {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Held to the per-uid limits.
    pub fn limited(&self) -> bool {
        !self.is_root()
    }

    /// Bootstrapping/destroying IPCPs and daemon settings.
    pub fn check_admin(&self, what: &str) -> Result<(), Error> {
        if self.admin {
            Ok(())
        } else {
            Err(Error::Perm(format!(
                "{what} needs root or CAP_NET_ADMIN (you are uid {})",
                self.uid
            )))
        }
    }

    /// Changing something uid `owner` made.
    pub fn check_owner(&self, owner: u32, what: &str) -> Result<(), Error> {
        if self.is_root() || self.uid == owner {
            Ok(())
        } else {
            Err(Error::Perm(format!(
                "{what} belongs to uid {owner}, not to uid {}",
                self.uid
            )))
        }
    }

    /// May see flows of uid `owner` in a list.
    pub fn sees_flows_of(&self, owner: u32) -> bool {
        self.admin || self.uid == owner
    }
}
