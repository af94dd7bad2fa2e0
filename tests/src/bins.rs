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
