//! Shared bits of the ethflow tools.

use irm::Error;

/// `flow down (EFLOWDOWN, -1005)` and the like: what happened, the model's
/// errno name and the value a C caller would see.
/// Send the library's log lines (such as which certificate check failed on
/// a secure flow) to stderr: warnings and errors unless `RUST_LOG` says more.
pub fn init_log() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
}

pub fn describe(e: &Error) -> String {
    match e {
        Error::FlowDown => "flow down (EFLOWDOWN, -1005)".into(),
        Error::FlowPeer => "peer unresponsive (EFLOWPEER, -1006)".into(),
        Error::TimedOut => format!("timed out (ETIMEDOUT, -{})", libc::ETIMEDOUT),
        other => format!("{other} (-{})", other.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_liveness_errors_like_the_model() {
        assert_eq!(describe(&Error::FlowDown), "flow down (EFLOWDOWN, -1005)");
        assert_eq!(
            describe(&Error::FlowPeer),
            "peer unresponsive (EFLOWPEER, -1006)"
        );
        assert!(describe(&Error::Name("x".into())).ends_with("(-1007)"));
    }
}
