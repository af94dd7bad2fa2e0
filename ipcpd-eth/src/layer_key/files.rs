//! Where the IPCP's keys come from: the key file given at bootstrap
//! (`--key FILE`, the key frames are sealed with) and, when it exists,
//! `FILE.next` (a key announced for a change: accepted, not yet used to
//! seal). Re-read on SIGHUP; the key that sealed before a reload keeps being
//! accepted until the next reload, so a layer changes its key without
//! dropping a frame (`docs/security.md`, "Changing the key"):
//!
//! 1. put the new key at `FILE.next` on every host, SIGHUP every IPCP
//!    (each accepts old and new, seals with old);
//! 2. on every host move `FILE.next` over `FILE`, SIGHUP (each seals with
//!    new, still accepts old from hosts not yet done);
//! 3. once every host is done, SIGHUP every IPCP again (old is forgotten).
//!
//! Every file goes through [`irm::keyfile::load`]'s ownership and mode checks.

use super::{Keyring, Mode};
use irm::keyfile::{load, KeyFileError, LayerKey};
use std::path::{Path, PathBuf};

/// The key files of an IPCP and the keys last read from them.
pub struct KeyFiles {
    path: PathBuf,
    mode: Mode,
    vlan: u16,
    send: LayerKey,
    next: Option<LayerKey>,
    previous: Option<LayerKey>,
}

/// The path of the key announced for a change: `FILE.next`.
pub fn next_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".next");
    PathBuf::from(p)
}

fn load_next(path: &Path) -> Result<Option<LayerKey>, KeyFileError> {
    let next = next_path(path);
    match std::fs::symlink_metadata(&next) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => load(&next).map(Some),
    }
}

impl KeyFiles {
    /// Read `path` (and `path.next`, if there is one), for a layer on VLAN
    /// `vlan` (0: untagged).
    pub fn load(path: &Path, mode: Mode, vlan: u16) -> Result<KeyFiles, KeyFileError> {
        Ok(KeyFiles {
            path: path.to_path_buf(),
            mode,
            vlan,
            send: load(path)?,
            next: load_next(path)?,
            previous: None,
        })
    }

    /// Read the files again. On error the keys stay as they were.
    pub fn reload(&mut self) -> Result<(), KeyFileError> {
        let send = load(&self.path)?;
        let next = load_next(&self.path)?;
        self.previous = (send != self.send).then(|| self.send.clone());
        self.send = send;
        self.next = next;
        Ok(())
    }

    /// The keys as a keyring: seal with the key file's, also open with the
    /// next and the previous one.
    pub fn keyring(&self) -> Keyring {
        let also: Vec<&LayerKey> = self.next.iter().chain(self.previous.iter()).collect();
        Keyring::on_vlan(self.mode, self.vlan, &self.send, &also)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use irm::keyfile::keygen;

    #[test]
    fn reload_follows_the_three_steps_of_a_key_change() {
        let dir = std::env::temp_dir().join(format!(
            "ethflow-keyfiles-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("layer.key");
        keygen(&path).unwrap();
        let mut files = KeyFiles::load(&path, Mode::Authenticate, 0).unwrap();
        let old = files.keyring().ids();
        assert_eq!(old.len(), 1);
        // 1. announce
        keygen(&next_path(&path)).unwrap();
        files.reload().unwrap();
        let ids = files.keyring().ids();
        assert_eq!((ids.len(), ids[0]), (2, old[0]));
        let new = ids[1];
        // 2. switch
        std::fs::rename(next_path(&path), &path).unwrap();
        files.reload().unwrap();
        assert_eq!(files.keyring().ids(), vec![new, old[0]]);
        // 3. forget the old key
        files.reload().unwrap();
        assert_eq!(files.keyring().ids(), vec![new]);
        // A bad file leaves the keys as they were.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(matches!(files.reload(), Err(KeyFileError::Mode { .. })));
        assert_eq!(files.keyring().ids(), vec![new]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
