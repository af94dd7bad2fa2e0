//! Auto-start (`irm bind program P name N auto -- ARGS`): when a flow request
//! arrives for N and no process of a program bound to N runs, irmd starts
//! `P ARGS` as the uid that made the binding, and the request waits (the
//! usual incoming deadline) for it to accept. A binding starts its program at
//! most once per incoming deadline, so a stream of requests from the segment
//! cannot fork a process per frame.

use super::admin::CliResult;
use super::{Cred, Output, Registry};
use std::collections::BTreeMap;
use std::time::Instant;

/// (name, program, uid) of a binding.
type Key = (String, String, u32);

#[derive(Default)]
pub(super) struct AutoStart {
    /// Path and arguments to start each auto binding's program with.
    args: BTreeMap<Key, (String, Vec<String>)>,
    /// When each was last started.
    last: BTreeMap<Key, Instant>,
}

impl Registry {
    pub(super) fn bind_auto(
        &mut self,
        now: Instant,
        cred: Cred,
        prog: String,
        name: String,
        exec: String,
        args: Vec<String>,
    ) -> CliResult {
        if !exec.starts_with('/') {
            return Err(irm::Error::Invalid(format!(
                "program path {exec} is not absolute"
            )));
        }
        let r = self.bind(now, cred, prog.clone(), name.clone())?;
        log::info!(
            "Program {prog} starts on demand for {name} (as uid {}).",
            cred.uid
        );
        self.auto.args.insert((name, prog, cred.uid), (exec, args));
        Ok(r)
    }

    /// Start the auto-start programs bound to `name` (none running); whether
    /// one was started (or is starting) so a flow request should wait.
    pub(super) fn auto_start(&mut self, now: Instant, name: &str) -> bool {
        let Some(entry) = self.names.get(name) else {
            return false;
        };
        // Only bindings that still exist (an unbind leaves the arguments).
        let keys: Vec<Key> = self
            .auto
            .args
            .keys()
            .filter(|(n, p, u)| n == name && entry.bindings.contains(&(p.clone(), *u)))
            .cloned()
            .collect();
        let mut waiting = false;
        for key in keys {
            let recent = self
                .auto
                .last
                .get(&key)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.policy.incoming_wait);
            waiting = true;
            if recent {
                continue;
            }
            self.auto.last.insert(key.clone(), now);
            log::info!("Starting {} for a flow to {name}.", key.1);
            let (exec, args) = self.auto.args[&key].clone();
            self.out.push_back(Output::StartProgram {
                exec,
                args,
                uid: key.2,
            });
        }
        waiting
    }
}
