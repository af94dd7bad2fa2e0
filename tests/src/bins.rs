//! Where the ethflow programs under test are.
//!
//! Order: `$ETHFLOW_BIN_DIR`; the profile directory of the running test
//! executable (`target/<profile>/deps/x` → `target/<profile>`, so tests use
//! the binaries built with the same profile — `scripts/test.sh` builds them
//! first); then the workspace's `target/release` and `target/debug`.

use std::path::{Path, PathBuf};

/// Programs of this workspace (everything else is looked up on PATH).
pub const OURS: &[&str] = &[
    "irmd",
    "irm",
    "ipcpd-eth",
    "oecho",
    "oping",
    "operf",
    "flowtest",
    "forge",
    "rawflood",
    "hostileapp",
    "ctrlflood",
    "seqflood",
    "mtuprobe",
];

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("ETHFLOW_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        if dir.as_deref().and_then(Path::file_name) == Some("deps".as_ref()) {
            dir = dir.and_then(|d| d.parent().map(Path::to_path_buf));
        }
        dirs.extend(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target");
    dirs.push(workspace.join("release"));
    dirs.push(workspace.join("debug"));
    dirs
}

/// Full path of one of our programs; panics with a hint if it is not built.
pub fn path(program: &str) -> PathBuf {
    let dirs = candidate_dirs();
    for dir in &dirs {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "program {program:?} not found in {dirs:?}; build first (`cargo build --workspace`, \
         or run scripts/test.sh) or set ETHFLOW_BIN_DIR"
    );
}

/// What to exec for `program`: our build output, or the name itself (PATH).
pub fn resolve(program: &str) -> String {
    if OURS.contains(&program) {
        path(program).to_string_lossy().into_owned()
    } else {
        program.to_string()
    }
}

/// True when every directory above `p` lets others search it and `p` lets
/// others execute it: a test user can run it in place.
fn others_can_exec(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let searchable =
        |d: &Path| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    let Ok(full) = p.canonicalize() else {
        return false;
    };
    searchable(&full) && full.ancestors().skip(1).all(searchable)
}

/// [`resolve`] for a program a non-root test user runs. A checkout under a
/// private directory (such as `/root`) is out of that user's reach, so the
/// binary is copied once per test process into a root-owned directory that
/// others may read and search (under the sticky temporary directory, so no
/// other user can replace it).
pub fn resolve_for_others(program: &str) -> String {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    use std::sync::Mutex;
    if !OURS.contains(&program) {
        return program.to_string();
    }
    let src = path(program);
    if others_can_exec(&src) {
        return src.to_string_lossy().into_owned();
    }
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Beside the rigs' log directories (`$TMPDIR/ethflow-<pid>/`).
    let run_dir = std::env::temp_dir().join(format!("ethflow-{}", std::process::id()));
    let dir = run_dir.join("bin");
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        for d in [&run_dir, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", d.display()));
        }
    }
    let dst = dir.join(program);
    if !dst.is_file() {
        std::fs::copy(&src, &dst)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", src.display(), dst.display()));
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dst.display()));
    }
    dst.to_string_lossy().into_owned()
}
