//! The test users of the access tests, made idempotently: group `ethflow`,
//! `ethflow-member` (in it) and `ethflow-other` (not). A [`User`] runs
//! programs through `setpriv` with its uid, primary gid and groups.

use std::process::Command;
use std::sync::Mutex;

/// The group irmd's socket belongs to.
pub const GROUP: &str = "ethflow";
pub const MEMBER: &str = "ethflow-member";
pub const OTHER: &str = "ethflow-other";

/// Who a program runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    Root,
    /// `ethflow-member`.
    Member,
    /// `ethflow-other` with `ethflow` as an extra group for this process: a
    /// second member (another uid) without a third account.
    SecondMember,
    /// `ethflow-other` as it is: not in the group.
    NonMember,
    /// `ethflow-member` with CAP_NET_ADMIN (ambient, so it survives exec).
    MemberNetAdmin,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gid_of_group(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Create the group and both users if missing; put the member in the group.
pub fn ensure() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    if gid_of_group(GROUP).is_none() {
        run("groupadd", &["-r", GROUP]);
    }
    for (user, groups) in [(MEMBER, Some(GROUP)), (OTHER, None)] {
        if nix::unistd::User::from_name(user).ok().flatten().is_none() {
            let mut args = vec!["-r", "-M", "-s", "/usr/sbin/nologin", "-U"];
            if let Some(g) = groups {
                args.extend(["-G", g]);
            }
            args.push(user);
            run("useradd", &args);
        } else if let Some(g) = groups {
            run("usermod", &["-a", "-G", g, user]);
        }
    }
    *done = true;
}

impl User {
    /// The `setpriv` prefix that runs a program as this user (empty for root).
    pub fn prefix(self) -> Vec<String> {
        let (name, extra) = match self {
            User::Root => return Vec::new(),
            User::Member | User::MemberNetAdmin => (MEMBER, None),
            User::SecondMember => (OTHER, Some(GROUP)),
            User::NonMember => (OTHER, None),
        };
        ensure();
        let u = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {name} missing"));
        let mut v = vec![
            "setpriv".to_string(),
            format!("--reuid={}", u.uid.as_raw()),
            format!("--regid={}", u.gid.as_raw()),
        ];
        match extra {
            None => v.push("--init-groups".into()),
            Some(g) => {
                let gid = gid_of_group(g).expect("group exists");
                v.push(format!("--groups={gid}"));
            }
        }
        if self == User::MemberNetAdmin {
            v.push("--inh-caps=+net_admin".into());
            v.push("--ambient-caps=+net_admin".into());
        }
        v.push("--".into());
        v
    }

    pub fn uid(self) -> u32 {
        let name = match self {
            User::Root => return 0,
            User::Member | User::MemberNetAdmin => MEMBER,
            User::SecondMember | User::NonMember => OTHER,
        };
        ensure();
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .expect("user exists")
    }
}
