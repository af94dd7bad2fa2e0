//! Unique names for namespaces and interfaces.
//!
//! Every rig gets a tag `ef<pid>x<counter>`; its namespaces and interfaces are
//! the tag plus a short suffix. The pid makes names unique across concurrent
//! test processes, the counter across rigs in one process, and the fixed
//! prefix lets a later run recognise (and sweep) what a dead run left behind.

use std::sync::atomic::{AtomicU32, Ordering};

/// Linux limit for interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Longest suffix any rig appends to its tag (`a` + `p` for a bridge port).
const SUFFIX_MAX: usize = 2;

static RIG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh tag for one rig, short enough that tag + suffix fits an interface name.
pub fn rig_tag() -> String {
    let n = RIG_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag = format!("ef{}x{}", std::process::id(), n);
    if tag.len() + SUFFIX_MAX <= IFNAME_MAX {
        tag
    } else {
        // Only reachable with very long pids and thousands of rigs in one process.
        format!("ef{}x{}", std::process::id() % 100_000, n % 1000)
    }
}

/// `name` if it is a valid interface name, else a panic saying why.
pub fn ifname(name: String) -> String {
    assert!(
        !name.is_empty() && name.len() <= IFNAME_MAX,
        "interface name {name:?} is longer than {IFNAME_MAX} characters"
    );
    name
}

/// The pid encoded in a tag-prefixed name (`ef1234x5a` → 1234), if it has one.
pub fn tag_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("ef")?;
    let (pid, after) = rest.split_once('x')?;
    if pid.is_empty() || !after.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_and_fit_interface_names() {
        let a = rig_tag();
        let b = rig_tag();
        assert_ne!(a, b);
        assert!(a.len() + SUFFIX_MAX <= IFNAME_MAX, "{a}");
        assert_eq!(tag_pid(&format!("{a}a")), Some(std::process::id()));
    }

    #[test]
    fn foreign_names_have_no_pid() {
        assert_eq!(tag_pid("eth0"), None);
        assert_eq!(tag_pid("efx1"), None);
        assert_eq!(tag_pid("ef12xa"), None);
        assert_eq!(tag_pid("ef12x3s"), Some(12));
    }

    #[test]
    #[should_panic(expected = "longer than 15")]
    fn long_interface_names_are_refused() {
        ifname("a-very-long-interface".into());
    }
}
