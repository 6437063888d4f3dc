//! The supervisor: the ptrace event loop over every thread of the workload.
//!
//! One thread of one process traces everything (ptrace ties a tracee to the tracer *thread*). It
//! seizes the first process before it runs user code, and every thread and child after that is
//! traced from birth (`PTRACE_O_TRACECLONE/FORK/VFORK`). Stops are handled as ptrace(2) says:
//! - seccomp stops: the policed call is decided ([`call`]) and the tracee resumed with
//!   `PTRACE_CONT`, so a policed call costs exactly one stop;
//! - signal-delivery stops: the signal is re-injected unchanged;
//! - group-stops (`PTRACE_EVENT_STOP` with a stopping signal): `PTRACE_LISTEN`, so the tracee stays
//!   stopped like an untraced one until `SIGCONT`;
//! - exec: the former thread id is forgotten (a non-leader's exec takes the leader's id) and the
//!   new image gets a fresh pinned-argument region ([`crate::region`]);
//! - exits: the thread's slot is freed; the tracer's `waitpid` releases the zombie to its real
//!   parent, which reaps it as usual, so exit statuses and signals reach the parent unchanged.
//!
//! If the supervisor dies, `PTRACE_O_EXITKILL` has the kernel kill every tracee.

mod args;
mod call;
mod paths;

use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use crate::audit::Decision;
use crate::policy::Policy;
use crate::ptrace::{self, Stop};
use crate::region::Region;
use crate::resolve::{View, Who};
use crate::sys;

/// A supervisor error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `PTRACE_SEIZE` failed.
    #[error(
        "cannot trace process {pid}: {source} (the trace backend needs ptrace of its children: \
             root, and Yama ptrace_scope <= 2)"
    )]
    Seize {
        /// The process.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel lacks something the supervisor needs to be sound.
    #[error("{0}")]
    Unsupported(String),
    /// `waitpid` failed.
    #[error("waiting for tracees: {0}")]
    Wait(#[source] io::Error),
}

/// A `Result` with the supervisor [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// One traced thread.
#[derive(Debug)]
struct Thread {
    tgid: i32,
    /// False until its first stop has been seen (a new tracee must not be resumed before).
    started: bool,
    /// Its slot in its process's region, once it has had a checked call.
    slot: Option<(Rc<Region>, u32)>,
    /// Its (pid, tid) in its pid namespace, once asked for.
    ns: Option<(i32, i32)>,
}

/// One traced process (thread group).
#[derive(Debug)]
struct Proc {
    /// Where checked arguments are pinned; `None` before the first exec, or if it was lost.
    region: Option<Rc<Region>>,
    /// True from seize to its first exec: moat's own runtime code, single-threaded, whose
    /// memory no workload thread can touch, so its calls need no pinning.
    trusted: bool,
    /// Its file-system view, once needed.
    view: Option<Rc<View>>,
    threads: usize,
}

/// The supervisor.
pub struct Supervisor {
    policy: Policy,
    threads: HashMap<i32, Thread>,
    procs: HashMap<i32, Proc>,
    /// New tracees whose first stop came before their creator's clone event.
    early: HashMap<i32, Stop>,
    /// How the processes passed to [`Supervisor::seize`] ended (their own children only).
    exits: HashMap<i32, Stop>,
    audit: Box<dyn FnMut(Decision)>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("threads", &self.threads.len())
            .field("procs", &self.procs.len())
            .finish()
    }
}

/// Checks that this kernel has what the supervisor relies on: `mseal` (Linux 6.10) for the
/// pinned-argument regions. Fails with what is missing.
pub fn probe() -> Result<()> {
    // mseal of an empty range: 0 where supported, ENOSYS where not.
    // SAFETY: mseal(NULL, 0, 0) touches no memory.
    let rc = unsafe { libc::syscall(libc::SYS_mseal, 0usize, 0usize, 0usize) };
    if rc < 0 && sys::errno() == libc::ENOSYS {
        return Err(Error::Unsupported(
            "this kernel has no mseal(2) (Linux >= 6.10): the trace backend cannot make checked \
             arguments unwritable, so it refuses to run"
                .into(),
        ));
    }
    Ok(())
}

impl Supervisor {
    /// A supervisor enforcing `policy`; `audit` receives every decision that denies, kills or
    /// logs.
    pub fn new(policy: Policy, audit: impl FnMut(Decision) + 'static) -> Result<Supervisor> {
        probe()?;
        Ok(Supervisor {
            policy,
            threads: HashMap::new(),
            procs: HashMap::new(),
            early: HashMap::new(),
            exits: HashMap::new(),
            audit: Box::new(audit),
        })
    }

    /// Seizes process `pid` (single-threaded, not yet running user code: blocked before its
    /// `execve`, with the filter installed or about to be). Its calls until that `execve` are
    /// trusted.
    pub fn seize(&mut self, pid: i32) -> Result<()> {
        ptrace::seize(pid).map_err(|source| Error::Seize { pid, source })?;
        self.threads.insert(
            pid,
            Thread {
                tgid: pid,
                started: true,
                slot: None,
                ns: None,
            },
        );
        self.exits.insert(pid, Stop::EventStop);
        self.procs.insert(
            pid,
            Proc {
                region: None,
                trusted: true,
                view: None,
                threads: 1,
            },
        );
        Ok(())
    }

    /// How seized process `pid` ended, once it has (and only if it is this process's child:
    /// otherwise its parent collects the status).
    pub fn exit_of(&self, pid: i32) -> Option<Stop> {
        self.exits
            .get(&pid)
            .copied()
            .filter(|s| matches!(s, Stop::Exited(_) | Stop::Signaled(_)))
    }

    /// Handles stops until no tracee is left.
    pub fn run(&mut self) -> Result<()> {
        loop {
            match ptrace::wait(-1) {
                Ok((tid, stop)) => self.handle(tid, stop),
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(()),
                Err(e) => return Err(Error::Wait(e)),
            }
            if self.threads.is_empty() && self.early.is_empty() {
                return Ok(());
            }
        }
    }

    /// Handles one `waitpid` report.
    pub fn handle(&mut self, tid: i32, stop: Stop) {
        if !self.threads.contains_key(&tid) {
            match stop {
                Stop::Exited(_) | Stop::Signaled(_) => {
                    self.early.remove(&tid);
                }
                // A new tracee announcing itself before its creator's event: wait for that.
                _ => {
                    self.early.insert(tid, stop);
                }
            }
            return;
        }
        match stop {
            Stop::Exited(_) | Stop::Signaled(_) => {
                if let Some(e) = self.exits.get_mut(&tid) {
                    *e = stop;
                }
                self.gone(tid)
            }
            Stop::Seccomp => {
                self.on_syscall(tid);
                resume(tid, 0);
            }
            Stop::Clone(event) => {
                if let Ok(new) = ptrace::event_msg(tid) {
                    self.on_clone(tid, new as i32, event);
                }
                resume(tid, 0);
            }
            Stop::Exec => {
                self.on_exec(tid);
                resume(tid, 0);
            }
            Stop::GroupStop(_) => {
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.started = true;
                }
                // Stay stopped as the signal asked; SIGCONT ends it (reported as an EventStop).
                let _ = ptrace::listen(tid);
            }
            Stop::EventStop => {
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.started = true;
                }
                resume(tid, 0);
            }
            Stop::Signal(sig) => self.on_signal(tid, sig),
            Stop::OtherEvent(_) => resume(tid, 0),
        }
    }

    /// A signal-delivery stop: the signal is passed on unchanged, with one exception. A fault
    /// (SIGSEGV, SIGBUS, ...) in a pid namespace's init kills it only because the kernel clears
    /// the init's "unkillable" flag when it forces the signal, and it does not for a ptraced
    /// task: re-injected, the signal would be dropped and the fault repeat forever. So a
    /// container init that faults with no handler is detached: it re-executes the faulting
    /// instruction untraced and dies of the fault as it would natively. (Were it not to fault
    /// again, it would run on without a tracer, where every policed call fails with ENOSYS.)
    fn on_signal(&mut self, tid: i32, sig: i32) {
        let fault = matches!(
            sig,
            libc::SIGSEGV
                | libc::SIGBUS
                | libc::SIGILL
                | libc::SIGFPE
                | libc::SIGSYS
                | libc::SIGTRAP
        );
        if fault
            && self.who(tid).ns_pid == 1
            && ptrace::sig_code(tid).is_ok_and(|c| c > 0)
            && !catches(tid, sig)
        {
            let _ = ptrace::detach(tid, 0);
            self.gone(tid);
            return;
        }
        resume(tid, sig);
    }

    fn gone(&mut self, tid: i32) {
        let Some(t) = self.threads.remove(&tid) else {
            return;
        };
        if let Some((region, slot)) = t.slot {
            region.put_slot(slot);
        }
        if let Some(p) = self.procs.get_mut(&t.tgid) {
            p.threads = p.threads.saturating_sub(1);
            if p.threads == 0 {
                self.procs.remove(&t.tgid);
            }
        }
    }

    fn on_clone(&mut self, parent: i32, new: i32, event: i32) {
        let Some(ptgid) = self.threads.get(&parent).map(|t| t.tgid) else {
            return;
        };
        let thread = event == libc::PTRACE_EVENT_CLONE && tgid_of(new) == Some(ptgid);
        let tgid = if thread {
            ptgid
        } else {
            let (region, trusted, view) = match self.procs.get(&ptgid) {
                Some(p) => (p.region.clone(), p.trusted, p.view.clone()),
                None => (None, false, None),
            };
            // A child normally inherits the region; verify it (MADV_DONTFORK would drop it).
            let region = region.filter(|r| r.mapped_in(new));
            self.procs.insert(
                new,
                Proc {
                    region,
                    trusted,
                    view,
                    threads: 0,
                },
            );
            new
        };
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.threads += 1;
        }
        let first = self.early.remove(&new);
        self.threads.insert(
            new,
            Thread {
                tgid,
                started: first.is_some(),
                slot: None,
                ns: None,
            },
        );
        match first {
            Some(Stop::GroupStop(_)) => {
                let _ = ptrace::listen(new);
            }
            Some(_) => resume(new, 0),
            None => {}
        }
    }

    fn on_exec(&mut self, tid: i32) {
        // A non-leader's exec: it now has the leader's id; its former id is gone.
        if let Ok(former) = ptrace::event_msg(tid)
            && former as i32 != tid
            && let Some(t) = self.threads.remove(&(former as i32))
        {
            if let Some((r, s)) = t.slot {
                r.put_slot(s);
            }
            if let Some(p) = self.procs.get_mut(&t.tgid) {
                p.threads = p.threads.saturating_sub(1);
            }
        }
        let Some(t) = self.threads.get_mut(&tid) else {
            return;
        };
        if let Some((r, s)) = t.slot.take() {
            r.put_slot(s);
        }
        t.started = true;
        let tgid = t.tgid;
        let region = Region::create(tid);
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        p.trusted = false;
        match region {
            Ok(r) => p.region = Some(Rc::new(r)),
            Err(e) => {
                p.region = None;
                // Fail closed: a process whose checked arguments cannot be pinned does not run.
                let _ = sys::kill(tgid, libc::SIGKILL);
                (self.audit)(Decision {
                    pid: tgid,
                    host_tid: tid,
                    syscall: "execve".into(),
                    args: String::new(),
                    rule: format!("built in: no pinned-argument region ({e})"),
                    action: "killed".into(),
                });
            }
        }
    }

    /// Who `tid` is, in its pid namespace.
    fn who(&mut self, tid: i32) -> Who {
        let t = self.threads.get_mut(&tid);
        let ns = match t.as_ref().and_then(|t| t.ns) {
            Some(ns) => ns,
            None => {
                let ns = ns_ids(tid).unwrap_or((tid, tid));
                if let Some(t) = t {
                    t.ns = Some(ns);
                }
                ns
            }
        };
        Who {
            tid,
            ns_pid: ns.0,
            ns_tid: ns.1,
        }
    }
}

/// Resumes a tracee; one that died meanwhile reports its exit later.
fn resume(tid: i32, sig: i32) {
    let _ = ptrace::cont(tid, sig);
}

/// True if thread `tid`'s process has a handler for `sig` (`SigCgt` in procfs).
fn catches(tid: i32, sig: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_none_or(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// The thread group of `tid`, from procfs.
fn tgid_of(tid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// (pid, tid) of host thread `tid` in its own (innermost) pid namespace.
fn ns_ids(tid: i32) -> Option<(i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let last = |key: &str| -> Option<i32> {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    Some((last("NStgid:")?, last("NSpid:")?))
}
