//! Where irmd's log goes: stderr with times in a terminal; the journal's
//! level prefixes (`<3>`…`<7>`, which journald reads from a stream it set up,
//! seen as `JOURNAL_STREAM`) under systemd; syslog (`/dev/log`, facility
//! daemon) with `--syslog`. Levels are filtered as always with `RUST_LOG`
//! (default `info`).

use log::Level;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Terminal,
    Journal,
    Syslog,
}

impl Sink {
    /// `--syslog` wins; else the journal when systemd connected stderr to it.
    pub fn choose(syslog: bool) -> Sink {
        if syslog {
            Sink::Syslog
        } else if stderr_is_journal() {
            Sink::Journal
        } else {
            Sink::Terminal
        }
    }
}

/// `JOURNAL_STREAM` is `device:inode` of the stream systemd connected; it
/// counts only if stderr is still that stream (a child run from a unit's
/// shell in a terminal inherits the variable, not the stream).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    v.to_str() == Some(&format!("{}:{}", m.dev(), m.ino()))
}

/// syslog(3)/sd-daemon(3) severity of a log level.
pub fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One syslog datagram (RFC 3164 style, as glibc's syslog(3) sends to
/// /dev/log): facility daemon (3).
pub fn syslog_line(level: Level, pid: u32, msg: &str) -> String {
    format!("<{}>irmd[{pid}]: {msg}", 3 * 8 + u32::from(severity(level)))
}

pub fn init(sink: Sink) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match sink {
        Sink::Terminal => {}
        Sink::Journal => {
            // The journal adds time and unit; only the level is ours to say.
            b.format(|f, r| writeln!(f, "<{}>{}", severity(r.level()), r.args()));
        }
        Sink::Syslog => {
            let sock = UnixDatagram::unbound().ok();
            let sock = Mutex::new(sock);
            let pid = std::process::id();
            b.format(move |f, r| {
                let line = syslog_line(r.level(), pid, &r.args().to_string());
                let sent = sock
                    .lock()
                    .ok()
                    .and_then(|s| s.as_ref().map(|s| s.send_to(line.as_bytes(), "/dev/log")))
                    .is_some_and(|r| r.is_ok());
                if sent {
                    Ok(())
                } else {
                    // No syslog daemon: do not lose the line.
                    writeln!(f, "{}", r.args())
                }
            });
        }
    }
    b.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_severities() {
        assert_eq!(severity(Level::Error), 3);
        assert_eq!(severity(Level::Warn), 4);
        assert_eq!(severity(Level::Info), 6);
        assert_eq!(severity(Level::Debug), 7);
        assert_eq!(
            syslog_line(Level::Warn, 42, "Flow 3 down."),
            "<28>irmd[42]: Flow 3 down."
        );
    }
}
