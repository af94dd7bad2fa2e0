//! Child processes with bounded waits and output kept in files.
//!
//! Output goes to files rather than pipes: nothing can deadlock on a full pipe,
//! a test can poll for a line while the process runs, and the files are still
//! there to print when a test fails.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often bounded waits poll.
pub const POLL: Duration = Duration::from_millis(2);

/// A child shared between its [`Proc`] handle and the rig that must reap it.
pub type SharedChild = Arc<Mutex<Child>>;

/// A running (or finished) child process.
pub struct Proc {
    label: String,
    pid: i32,
    child: SharedChild,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

/// What a finished process left behind.
#[derive(Debug, Clone)]
pub struct Finished {
    pub label: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to the moment the exit was seen (polled every [`POLL`]).
    pub elapsed: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Exit code, or `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the full output unless the process exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "{} failed: {}", self.label, self.describe());
        self
    }

    /// Panics with the full output unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "{}: stdout lacks {needle:?}: {}",
            self.label,
            self.describe()
        );
        self
    }

    /// Status and output, for assertion messages.
    pub fn describe(&self) -> String {
        let how = match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        };
        format!(
            "{how} after {:.3} s\n--- stdout ---\n{}--- stderr ---\n{}",
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Locks a child even if a panicking thread poisoned the lock: cleanup must go on.
fn lock(child: &SharedChild) -> MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proc {
    /// Starts `cmd` with stdout/stderr in `<dir>/<label>.out|.err`.
    ///
    /// The child gets SIGKILL if the spawning thread dies, so a test process
    /// killed from outside does not leave daemons running.
    pub fn spawn(mut cmd: Command, dir: &Path, label: &str) -> Proc {
        let stdout = dir.join(format!("{label}.out"));
        let stderr = dir.join(format!("{label}.err"));
        let out = File::create(&stdout).unwrap_or_else(|e| panic!("create {stdout:?}: {e}"));
        let err = File::create(&stderr).unwrap_or_else(|e| panic!("create {stderr:?}: {e}"));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        irm::sys::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        Proc {
            label: label.to_string(),
            pid: child.id() as i32,
            child: Arc::new(Mutex::new(child)),
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The child, for a rig that reaps whatever its tests leave running.
    pub fn shared(&self) -> SharedChild {
        Arc::clone(&self.child)
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        matches!(lock(&self.child).try_wait(), Ok(None))
    }

    /// Sends `sig` (SIGSTOP, SIGKILL, ...) to this process only.
    pub fn signal(&self, sig: Signal) {
        if self.is_running() {
            kill(Pid::from_raw(self.pid), sig)
                .unwrap_or_else(|e| panic!("kill -{sig} {} ({}): {e}", self.pid, self.label));
        }
    }

    /// Waits at most `timeout` for the exit; `None` if still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Finished> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = lock(&self.child).try_wait().expect("try_wait");
            if let Some(status) = status {
                return Some(self.finished(status));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits at most `timeout` for the exit; on timeout kills the process and
    /// panics with what it printed.
    pub fn wait(&self, timeout: Duration) -> Finished {
        if let Some(done) = self.wait_timeout(timeout) {
            return done;
        }
        let done = self.kill();
        panic!(
            "{} did not finish within {:.1} s (killed): {}",
            self.label,
            timeout.as_secs_f64(),
            done.describe()
        );
    }

    /// SIGKILL and reap (no-op if already finished).
    pub fn kill(&self) -> Finished {
        let status = kill_and_reap(&self.child);
        self.finished(status.unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL)))
    }

    /// Waits until a line of stdout contains `needle`; returns that line.
    /// Panics (with the output) after `timeout` or if the process exits first.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stdout().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            let exited = !self.is_running();
            if exited || Instant::now() >= deadline {
                // One last look: the line may have landed just before the exit.
                if let Some(line) = self.stdout().lines().find(|l| l.contains(needle)) {
                    return line.to_string();
                }
                let why = if exited { "exited" } else { "timed out" };
                let done = self.kill();
                panic!(
                    "{} {why} before printing {needle:?}: {}",
                    self.label,
                    done.describe()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn finished(&self, status: ExitStatus) -> Finished {
        Finished {
            label: self.label.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_and_reap(&self.child);
    }
}

/// SIGKILL (also works on a stopped process) and reap within a bounded time.
/// Returns the exit status if the child was reaped.
pub fn kill_and_reap(child: &SharedChild) -> Option<ExitStatus> {
    let mut child = lock(child);
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(POLL);
    }
    eprintln!(
        "warning: pid {} did not die within 5 s of SIGKILL",
        child.id()
    );
    None
}

/// Runs `cmd` to completion within `timeout` (killed and reported on timeout).
pub fn run(cmd: Command, dir: &Path, label: &str, timeout: Duration) -> Finished {
    Proc::spawn(cmd, dir, label).wait(timeout)
}

/// The last `max_lines` lines of a file, for failure reports.
pub fn tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(max_lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!(
            "[... {skip} earlier lines in {}]\n",
            path.display()
        ));
    }
    for l in &lines[skip..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory per test, removed when the guard drops.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ethflow-proc-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    #[test]
    fn run_collects_output_and_status() {
        let dir = scratch("run_collects_output_and_status");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let done = run(cmd, &dir.0, "sh-exit3", Duration::from_secs(5));
        assert_eq!(done.code(), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
    }

    #[test]
    fn wait_is_bounded_and_kills() {
        let dir = scratch("wait_is_bounded_and_kills");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = Proc::spawn(cmd, &dir.0, "sleep30");
        let t = Instant::now();
        assert!(p.wait_timeout(Duration::from_millis(50)).is_none());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.wait(Duration::from_millis(50));
        }));
        assert!(r.is_err(), "wait past its timeout must panic");
        assert!(!p.is_running());
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn waits_for_a_line() {
        let dir = scratch("waits_for_a_line");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 0.05; echo ready 42; sleep 30"]);
        let p = Proc::spawn(cmd, &dir.0, "ready-line");
        assert_eq!(
            p.wait_for_stdout("ready", Duration::from_secs(5)),
            "ready 42"
        );
        drop(p);
    }

    #[test]
    fn tail_keeps_the_end() {
        let dir = scratch("tail_keeps_the_end");
        let f = dir.0.join("tail.txt");
        std::fs::write(&f, "1\n2\n3\n").unwrap();
        assert!(tail(&f, 2).ends_with("2\n3\n"));
        assert!(tail(&f, 2).contains("1 earlier lines"));
    }
}
