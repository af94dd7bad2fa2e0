//! `fset_t` and `fqueue_t` over [`irm::FlowSet`].
//!
//! A set may be changed from one thread while another waits in `fevent` on
//! it (the model's oping server accepts and adds flows beside its event
//! loop). So `fevent` waits in short slices and lets go of the set between
//! them; `fset_add`/`fset_del` apply at once when the set is free and are
//! queued for the next slice otherwise. `fset_has` answers from the
//! membership as the caller last changed it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use irm::{EventKind, FlowEvent, FlowSet};

use crate::abi::*;
use crate::table::{errno, lock, table, Entry, Ret};

/// Longest a waiting `fevent` holds the set before it looks at queued changes.
pub const FEVENT_SLICE: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct Inner {
    set: FlowSet,
    /// irm flow id → descriptor, for the events.
    fds: BTreeMap<u32, i32>,
}

#[derive(Debug)]
enum Change {
    Add(i32, Arc<Entry>),
    Del(i32),
    Zero,
}

#[derive(Debug, Default)]
struct Pending {
    changes: Vec<Change>,
    /// What `fset_has` reports: the descriptors as the callers left them.
    members: BTreeSet<i32>,
}

#[derive(Debug)]
pub struct FSet {
    inner: Mutex<Inner>,
    pending: Mutex<Pending>,
}

impl FSet {
    pub fn new() -> Result<FSet, irm::Error> {
        Ok(FSet {
            inner: Mutex::new(Inner {
                set: FlowSet::new()?,
                fds: BTreeMap::new(),
            }),
            pending: Mutex::new(Pending::default()),
        })
    }

    pub fn add(&self, fd: i32) -> Ret {
        let entry = match table().get(fd) {
            Ok(e) => e,
            Err(r) => return r,
        };
        let mut p = lock(&self.pending);
        if p.members.contains(&fd) {
            return 0;
        }
        match self.inner.try_lock() {
            Ok(mut inner) => {
                apply_pending(&mut inner, &mut p.changes);
                let r = inner.add(fd, &entry);
                if r == 0 {
                    p.members.insert(fd);
                }
                r
            }
            Err(_) => {
                // A thread waits in fevent: the change applies in its next slice.
                p.changes.push(Change::Add(fd, entry));
                p.members.insert(fd);
                0
            }
        }
    }

    pub fn del(&self, fd: i32) {
        let mut p = lock(&self.pending);
        if !p.members.remove(&fd) {
            return;
        }
        match self.inner.try_lock() {
            Ok(mut inner) => {
                apply_pending(&mut inner, &mut p.changes);
                inner.del(fd);
            }
            Err(_) => p.changes.push(Change::Del(fd)),
        }
    }

    pub fn zero(&self) {
        let mut p = lock(&self.pending);
        p.members.clear();
        match self.inner.try_lock() {
            Ok(mut inner) => {
                p.changes.clear();
                inner.zero();
            }
            Err(_) => p.changes.push(Change::Zero),
        }
    }

    pub fn has(&self, fd: i32) -> bool {
        lock(&self.pending).members.contains(&fd)
    }

    /// One slice of `fevent`: wait at most `slice` (capped at
    /// [`FEVENT_SLICE`]) for events and put them in `fq`. Some(count) when
    /// there were events (or an error), None when the slice passed quietly.
    pub fn wait_slice(&self, fq: &FQueue, slice: Duration) -> Option<Ret> {
        let mut events: Vec<FlowEvent> = Vec::new();
        let mut out = VecDeque::new();
        let mut inner = lock(&self.inner);
        {
            let mut p = lock(&self.pending);
            apply_pending(&mut inner, &mut p.changes);
        }
        if let Err(e) = inner
            .set
            .wait_into(&mut events, Some(slice.min(FEVENT_SLICE)))
        {
            return Some(crate::table::err(&e));
        }
        for ev in &events {
            let Some(&fd) = inner.fds.get(&ev.flow_id) else {
                continue;
            };
            let kind = match ev.kind {
                EventKind::Pkt => FLOW_PKT,
                EventKind::Down => FLOW_DOWN,
                EventKind::Up => FLOW_UP,
                EventKind::Peer => FLOW_PEER,
                EventKind::Dealloc => FLOW_DEALLOC,
            };
            if ev.kind == EventKind::Dealloc {
                // The set let go of the flow; its descriptor is free.
                inner.fds.remove(&ev.flow_id);
                lock(&self.pending).members.remove(&fd);
            }
            out.push_back((fd, kind));
        }
        drop(inner);
        if out.is_empty() {
            return None;
        }
        let n = out.len();
        fq.fill(out);
        Some(n as Ret)
    }

    /// `fevent` without thread cancellation: wait for events (None: for
    /// ever), put them in `fq`; returns how many, or -ETIMEDOUT.
    pub fn wait(&self, fq: &FQueue, timeout: Option<Duration>) -> Ret {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let left = deadline.map_or(FEVENT_SLICE, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if let Some(r) = self.wait_slice(fq, left) {
                return r;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return errno(libc::ETIMEDOUT);
            }
        }
    }
}

impl Inner {
    fn add(&mut self, fd: i32, entry: &Entry) -> Ret {
        match self.set.add(&entry.flow) {
            Ok(()) => {
                self.fds.insert(entry.flow.flow_id(), fd);
                0
            }
            // In another set already: a flow is in at most one set here.
            Err(irm::Error::Invalid(_)) => errno(libc::EPERM),
            Err(e) => crate::table::err(&e),
        }
    }

    fn del(&mut self, fd: i32) {
        let ids: Vec<u32> = self
            .fds
            .iter()
            .filter(|(_, &f)| f == fd)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.set.remove(id);
            self.fds.remove(&id);
        }
    }

    fn zero(&mut self) {
        for id in std::mem::take(&mut self.fds).into_keys() {
            self.set.remove(id);
        }
    }
}

fn apply_pending(inner: &mut Inner, changes: &mut Vec<Change>) {
    for c in changes.drain(..) {
        match c {
            Change::Add(fd, entry) => {
                // Errors here reach nobody: the flow is simply not watched
                // (fset_add already returned 0); see docs/capi.md.
                let _ = inner.add(fd, &entry);
            }
            Change::Del(fd) => inner.del(fd),
            Change::Zero => inner.zero(),
        }
    }
}

/// `fqueue_t`: the events of the last `fevent`, taken one by one.
#[derive(Debug, Default)]
pub struct FQueue {
    state: Mutex<FqState>,
}

#[derive(Debug, Default)]
struct FqState {
    events: VecDeque<(i32, i32)>,
    /// Type of the event `fqueue_next` returned last.
    current: i32,
}

impl FQueue {
    fn fill(&self, events: VecDeque<(i32, i32)>) {
        let mut s = lock(&self.state);
        s.events = events;
        s.current = 0;
    }

    /// The next event's descriptor, or -EPERM when none is left.
    pub fn next(&self) -> Ret {
        let mut s = lock(&self.state);
        match s.events.pop_front() {
            Some((fd, kind)) => {
                s.current = kind;
                fd as Ret
            }
            None => errno(libc::EPERM),
        }
    }

    /// Type of the event `next` returned last (0 before any).
    pub fn kind(&self) -> i32 {
        lock(&self.state).current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_queue_says_eperm() {
        let q = FQueue::default();
        assert_eq!(q.next(), -(libc::EPERM as Ret));
        q.fill(VecDeque::from([(70, FLOW_PKT), (71, FLOW_DOWN)]));
        assert_eq!((q.next(), q.kind()), (70, FLOW_PKT));
        assert_eq!((q.next(), q.kind()), (71, FLOW_DOWN));
        assert_eq!(q.next(), -(libc::EPERM as Ret));
    }

    #[test]
    fn an_empty_set_times_out() {
        let s = FSet::new().unwrap();
        let q = FQueue::default();
        assert_eq!(
            s.wait(&q, Some(Duration::from_millis(1))),
            -(libc::ETIMEDOUT as Ret)
        );
        assert_eq!(s.add(5), -(libc::EBADF as Ret));
        assert!(!s.has(5));
    }
}
