//! Layer key files: 32 random bytes, readable by their owner only.
//!
//! A layer key authenticates every frame of an Ethernet layer (see
//! `docs/security.md`, "With a layer key"). Whoever can read the file can
//! forge frames for the whole layer, and whoever can write it can make the
//! IPCP use a key of their choice, so [`load`] refuses a file unless:
//!
//! * it is a regular file (no symlink is followed, no FIFO or device is read),
//! * it is owned by the effective uid of the process that loads it (root for
//!   the IPCP, which runs as root: a root-owned file; a file owned by any other
//!   user is refused even with mode 0600, since that user can rewrite it),
//! * its mode has no group or other bits (0600 or 0400),
//! * it holds exactly [`KEY_LEN`] bytes.
//!
//! Every check is made on the opened descriptor (`fstat`), so the file cannot
//! be swapped between the check and the read. [`keygen`] writes a fresh key
//! from the operating system's random source, mode 0600, and never replaces
//! an existing file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// Bytes of a layer key.
pub const KEY_LEN: usize = 32;

/// A layer key. Its bytes are wiped when it is dropped and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct LayerKey([u8; KEY_LEN]);

impl LayerKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> LayerKey {
        LayerKey(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for LayerKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerKey(..)")
    }
}

/// Why a key file was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("key file {path} is a symbolic link; give the path of the file itself")]
    Symlink { path: PathBuf },
    #[error("key file {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error(
        "key file {path} is owned by uid {owner}, expected uid {expected} (the user that loads it)"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        expected: u32,
    },
    #[error("key file {path} has mode {mode:04o}: group and others must have no access (chmod 600 {path})")]
    Mode { path: PathBuf, mode: u32 },
    #[error("key file {path} holds {len} bytes, a layer key is exactly {KEY_LEN} (make one with `irm ipcp keygen`)")]
    Length { path: PathBuf, len: u64 },
    #[error("key file {path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Load a layer key, refusing any file that others could read or write.
pub fn load(path: &Path) -> Result<LayerKey, KeyFileError> {
    load_as(path, nix::unistd::geteuid().as_raw())
}

/// [`load`] with the expected owner given (tests use it).
fn load_as(path: &Path, expected_owner: u32) -> Result<LayerKey, KeyFileError> {
    let p = || path.to_path_buf();
    // O_NONBLOCK: opening a FIFO must not hang (it is refused just after).
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeyFileError::Symlink { path: p() })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.file_type().is_file() {
        return Err(KeyFileError::NotRegular { path: p() });
    }
    if meta.uid() != expected_owner {
        return Err(KeyFileError::Owner {
            path: p(),
            owner: meta.uid(),
            expected: expected_owner,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Mode { path: p(), mode });
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyFileError::Length {
            path: p(),
            len: meta.len(),
        });
    }
    let mut key = [0u8; KEY_LEN + 1];
    let mut got = 0;
    // Read one byte more than a key: a file that grew after fstat is refused.
    loop {
        match file.read(&mut key[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == key.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                key.zeroize();
                return Err(io_err(path)(e));
            }
        }
    }
    if got != KEY_LEN {
        key.zeroize();
        return Err(KeyFileError::Length {
            path: p(),
            len: got as u64,
        });
    }
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&key[..KEY_LEN]);
    key.zeroize();
    Ok(LayerKey(out))
}

/// Write a new layer key to `path`: 32 bytes from the operating system's
/// random source, mode 0600, owned by the caller. An existing file (or a
/// symlink at `path`) is never replaced.
pub fn keygen(path: &Path) -> Result<(), KeyFileError> {
    let mut key = [0u8; KEY_LEN];
    getrandom::getrandom(&mut key).map_err(|e| KeyFileError::Random(e.to_string()))?;
    let result = write_new(path, &key);
    key.zeroize();
    result
}

fn write_new(path: &Path, key: &[u8; KEY_LEN]) -> Result<(), KeyFileError> {
    // create_new is O_CREAT|O_EXCL: it fails on any existing name, symlinks
    // included, so nothing is overwritten and no link is followed.
    let mut file: File = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(KeyFileError::Exists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let written = file
        // The umask can only clear bits; set the mode outright all the same.
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| file.write_all(key))
        .and_then(|_| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(io_err(path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ethflow-keyfile-{}-{name}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn keygen_then_load_round_trips() {
        let dir = scratch("ok");
        let path = dir.join("layer.key");
        keygen(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let key = load(&path).unwrap();
        assert_eq!(&key.as_bytes()[..], &std::fs::read(&path).unwrap()[..]);
        assert_ne!(key.as_bytes(), &[0u8; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "LayerKey(..)");
        // Two keys from the random source differ.
        let other = dir.join("other.key");
        keygen(&other).unwrap();
        assert_ne!(load(&other).unwrap(), key);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keygen_never_overwrites() {
        let dir = scratch("exists");
        let path = dir.join("layer.key");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(keygen(&path), Err(KeyFileError::Exists { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        // Nor through a symlink, even a dangling one.
        let link = dir.join("link.key");
        symlink(dir.join("nowhere"), &link).unwrap();
        assert!(matches!(keygen(&link), Err(KeyFileError::Exists { .. })));
        assert!(!dir.join("nowhere").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn group_or_other_bits_are_refused_with_the_mode() {
        let dir = scratch("mode");
        let path = dir.join("layer.key");
        keygen(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load(&path).unwrap_err();
            assert!(
                matches!(e, KeyFileError::Mode { mode: m, .. } if m == mode),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            load(&path).unwrap();
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn another_owner_is_refused() {
        let dir = scratch("owner");
        let path = dir.join("layer.key");
        keygen(&path).unwrap();
        let e = load_as(&path, me().wrapping_add(1)).unwrap_err();
        assert!(
            matches!(e, KeyFileError::Owner { owner, .. } if owner == me()),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let dir = scratch("len");
        for len in [0usize, 1, 31, 33, 64] {
            let path = dir.join(format!("k{len}"));
            std::fs::write(&path, vec![7u8; len]).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = load(&path).unwrap_err();
            assert!(
                matches!(e, KeyFileError::Length { len: l, .. } if l == len as u64),
                "{e}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn symlinks_directories_fifos_and_missing_files_are_refused() {
        let dir = scratch("kind");
        let path = dir.join("layer.key");
        keygen(&path).unwrap();
        let link = dir.join("link.key");
        symlink(&path, &link).unwrap();
        assert!(matches!(load(&link), Err(KeyFileError::Symlink { .. })));
        assert!(matches!(load(&dir), Err(KeyFileError::NotRegular { .. })));
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(load(&fifo), Err(KeyFileError::NotRegular { .. })));
        let e = load(&dir.join("missing")).unwrap_err();
        assert!(matches!(e, KeyFileError::Io { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
