//! One seccomp stop: read the call, decide, and leave the tracee set up to run it (possibly on
//! pinned copies of its arguments), to fail with an errno, or to die.

// An `Outcome` is the error of the checks too (a denial is an outcome); it is built once per
// stop, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::rc::Rc;

use super::{Supervisor, paths};
use crate::audit::{Decision, quote};
use crate::bpf::TRACE_DATA;
use crate::policy::{Action, Policy, Rights};
use crate::ptrace;
use crate::region::Region;
use crate::resolve::{Errno, View, Who};
use crate::sys;
use crate::syscalls::{self, Kind, NS_FLAGS};

/// Register changes that make the tracee run the (possibly rewritten) call.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Edits {
    /// A different call number.
    pub nr: Option<u64>,
    /// New argument values.
    pub args: [Option<u64>; 6],
}

/// What happens to the stopped call.
#[derive(Clone, Copy, Debug)]
pub(super) enum Verdict {
    /// It runs, after these edits.
    Run(Edits),
    /// It fails with this errno without running.
    Deny(Errno),
    /// The whole process is killed.
    Kill,
}

/// A decision and what the log line needs.
#[derive(Debug)]
pub(super) struct Outcome {
    pub verdict: Verdict,
    /// The arguments as text.
    pub args: String,
    /// The rule that decided, if a rule did.
    pub rule: Option<String>,
    /// True if the rule asks for every decision to be logged.
    pub log: bool,
}

impl Outcome {
    /// Runs unchanged.
    pub(super) fn run() -> Outcome {
        Outcome::edit(Edits::default())
    }

    /// Runs after `edits`.
    pub(super) fn edit(edits: Edits) -> Outcome {
        Outcome {
            verdict: Verdict::Run(edits),
            args: String::new(),
            rule: None,
            log: false,
        }
    }

    /// Fails with `errno`, without a log line: the kernel would have failed it the same way
    /// (bad pointer, missing file), no rule decided.
    pub(super) fn fail(errno: Errno) -> Outcome {
        Outcome {
            verdict: Verdict::Deny(errno),
            args: String::new(),
            rule: None,
            log: false,
        }
    }

    /// Denied by `rule`, with `errno`.
    pub(super) fn deny(errno: Errno, rule: String) -> Outcome {
        Outcome {
            verdict: Verdict::Deny(errno),
            args: String::new(),
            rule: Some(rule),
            log: true,
        }
    }

    /// Sets the arguments text.
    pub(super) fn with_args(mut self, args: String) -> Outcome {
        if self.args.is_empty() {
            self.args = args;
        }
        self
    }
}

/// Where a call's checked arguments go.
#[derive(Debug)]
pub(super) enum Pin {
    /// Nowhere: the process is moat's own runtime code before its first exec.
    Trusted,
    /// This slot of this region.
    Slot(Rc<Region>, u32),
    /// The process has no region (it was lost across fork), or no slot is free.
    Missing(&'static str),
}

/// Everything a path decision needs about the caller.
pub(super) struct Ctx<'a> {
    pub policy: &'a Policy,
    pub who: Who,
    pub view: Rc<View>,
    pub pin: Pin,
    pub args: [u64; 6],
}

/// The rule text for a path rule (or for no rule).
pub(super) fn path_rule(policy: &Policy, path: &[u8]) -> String {
    match policy.rule_for(path) {
        Some(r) => format!("[[paths]] {} ({})", r.pattern, r.origin),
        None => "no [[paths]] rule covers it".to_string(),
    }
}

/// Checks that `path` has `need`; on failure, the errno and the rule.
pub(super) fn check(policy: &Policy, path: &[u8], need: Rights) -> Result<bool, Outcome> {
    match policy.rule_for(path) {
        None => Err(Outcome::deny(libc::EACCES, path_rule(policy, path))),
        Some(r) if !r.rights.contains(need) => Err(Outcome::deny(r.errno, path_rule(policy, path))),
        Some(r) => Ok(r.log),
    }
}

const USER_REGS: [usize; 6] = [
    std::mem::offset_of!(libc::user_regs_struct, rdi),
    std::mem::offset_of!(libc::user_regs_struct, rsi),
    std::mem::offset_of!(libc::user_regs_struct, rdx),
    std::mem::offset_of!(libc::user_regs_struct, r10),
    std::mem::offset_of!(libc::user_regs_struct, r8),
    std::mem::offset_of!(libc::user_regs_struct, r9),
];

fn apply(tid: i32, e: &Edits) {
    let n = e.args.iter().filter(|a| a.is_some()).count();
    if e.nr.is_none() && n == 0 {
        return;
    }
    if e.nr.is_none() && n == 1 {
        if let Some((i, Some(v))) = e.args.iter().enumerate().find(|(_, a)| a.is_some()) {
            let _ = ptrace::poke_user(tid, USER_REGS[i], *v);
        }
        return;
    }
    let Ok(mut r) = ptrace::regs(tid) else {
        return;
    };
    if let Some(nr) = e.nr {
        r.orig_rax = nr;
    }
    let regs = [
        &mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.r10, &mut r.r8, &mut r.r9,
    ];
    for (slot, v) in regs.into_iter().zip(e.args) {
        if let Some(v) = v {
            *slot = v;
        }
    }
    let _ = ptrace::set_regs(tid, &r);
}

fn skip(tid: i32, errno: Errno) {
    let _ = ptrace::poke_user(
        tid,
        std::mem::offset_of!(libc::user_regs_struct, orig_rax),
        u64::MAX,
    );
    let _ = ptrace::poke_user(
        tid,
        std::mem::offset_of!(libc::user_regs_struct, rax),
        (-(errno as i64)) as u64,
    );
}

fn hex_args(a: &[u64; 6]) -> String {
    a.iter()
        .map(|v| format!("{v:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Supervisor {
    /// Handles a seccomp stop of `tid`.
    pub(super) fn on_syscall(&mut self, tid: i32) {
        let info = match ptrace::syscall_info(tid) {
            Ok(Some(i)) => i,
            _ => return,
        };
        let nr = info.nr as u32;
        let name = syscalls::name(nr).map_or_else(|| format!("syscall_{nr}"), str::to_string);
        let ours = info.data == u32::from(TRACE_DATA);
        let kind = syscalls::kind(nr);
        let explicit = self.policy.action(nr).cloned();
        if !ours && kind.is_none() && explicit.is_none() {
            // The workload's own filter asked for a tracer: answer as if there were none.
            skip(tid, libc::ENOSYS);
            return;
        }
        let mut log_rule = None;
        if let Some(r) = &explicit {
            let rule = format!("[syscalls] {} ({})", r.name, r.origin);
            match r.action {
                Action::Errno(e) => {
                    let o = Outcome::deny(e, rule).with_args(hex_args(&info.args));
                    return self.finish(tid, &name, o);
                }
                Action::Kill => {
                    let o = Outcome {
                        verdict: Verdict::Kill,
                        args: hex_args(&info.args),
                        rule: Some(rule),
                        log: true,
                    };
                    return self.finish(tid, &name, o);
                }
                Action::Log => log_rule = Some(rule),
                Action::Allow => {}
            }
        }
        let mut o = match kind {
            None => Outcome::run(),
            Some(k) => self.decide(tid, k, &info.args),
        };
        if o.args.is_empty() {
            o.args = hex_args(&info.args);
        }
        if let Some(rule) = log_rule
            && matches!(o.verdict, Verdict::Run(_))
        {
            o.rule = Some(o.rule.map_or(rule.clone(), |r| format!("{rule}; {r}")));
            o.log = true;
        }
        if !ours && matches!(o.verdict, Verdict::Run(_)) {
            o.verdict = Verdict::Deny(libc::ENOSYS);
        }
        self.finish(tid, &name, o);
    }

    fn finish(&mut self, tid: i32, name: &str, o: Outcome) {
        let tgid = self.threads.get(&tid).map_or(tid, |t| t.tgid);
        let action = match o.verdict {
            Verdict::Run(e) => {
                apply(tid, &e);
                "allowed".to_string()
            }
            Verdict::Deny(errno) => {
                skip(tid, errno);
                format!("denied {}", crate::policy::errno::name(errno))
            }
            Verdict::Kill => {
                skip(tid, libc::EPERM);
                let _ = sys::kill(tgid, libc::SIGKILL);
                "killed".to_string()
            }
        };
        if o.log {
            let who = self.who(tid);
            (self.audit)(Decision {
                pid: who.ns_pid,
                host_tid: tid,
                syscall: name.to_string(),
                args: o.args,
                rule: o.rule.unwrap_or_default(),
                action,
            });
        }
    }

    fn decide(&mut self, tid: i32, kind: Kind, a: &[u64; 6]) -> Outcome {
        match kind {
            Kind::Fixed { errno, why } => Outcome::deny(errno, format!("built in: {why}")),
            Kind::Clone => Outcome::deny(
                libc::EPERM,
                "built in: no new namespaces under the trace backend".into(),
            )
            .with_args(format!("flags={:#x}", a[0])),
            Kind::Unshare if a[0] & NS_FLAGS != 0 => Outcome::deny(
                libc::EPERM,
                "built in: no new namespaces under the trace backend".into(),
            )
            .with_args(format!("flags={:#x}", a[0])),
            Kind::Unshare => Outcome::run(),
            Kind::Seccomp
                if a[0] == u64::from(libc::SECCOMP_SET_MODE_FILTER)
                    && a[1] & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 =>
            {
                Outcome::deny(
                    libc::EPERM,
                    "built in: a seccomp listener would take calls away from the supervisor".into(),
                )
                .with_args(format!("op={}, flags={:#x}", a[0], a[1]))
            }
            Kind::Seccomp => Outcome::run(),
            Kind::Socket | Kind::SocketPair => {
                let (family, ty) = (a[0] as i32, a[1] as i32);
                let args = format!("family={family}, type={ty:#x}");
                if self.policy.network.allows(family, ty) {
                    Outcome::run().with_args(args)
                } else {
                    let raw = family == libc::AF_PACKET || (ty & 0xf) == libc::SOCK_RAW;
                    let errno = if raw { libc::EPERM } else { libc::EAFNOSUPPORT };
                    Outcome::deny(errno, format!("[network] ({})", self.policy.network.origin))
                        .with_args(args)
                }
            }
            k => match self.ctx(tid, a) {
                Ok(ctx) => paths::decide(&ctx, k),
                Err(errno) => Outcome::fail(errno),
            },
        }
    }

    /// The caller's view and slot, for a path decision.
    fn ctx(&mut self, tid: i32, a: &[u64; 6]) -> Result<Ctx<'_>, Errno> {
        let who = self.who(tid);
        let tgid = self.threads.get(&tid).map_or(tid, |t| t.tgid);
        let proc = self.procs.get_mut(&tgid).ok_or(libc::ESRCH)?;
        let view = match &proc.view {
            Some(v) => v.clone(),
            None => {
                let v = Rc::new(View::of(tid)?);
                proc.view = Some(v.clone());
                v
            }
        };
        let pin = if proc.trusted {
            Pin::Trusted
        } else {
            match (&proc.region, self.threads.get_mut(&tid)) {
                (None, _) => Pin::Missing("the process has no pinned-argument region"),
                (Some(_), None) => Pin::Missing("unknown thread"),
                (Some(region), Some(t)) => match &t.slot {
                    Some((r, s)) if Rc::ptr_eq(r, region) => Pin::Slot(r.clone(), *s),
                    _ => match region.take_slot() {
                        Some(s) => {
                            if let Some((old, os)) = t.slot.replace((region.clone(), s)) {
                                old.put_slot(os);
                            }
                            Pin::Slot(region.clone(), s)
                        }
                        None => Pin::Missing("every pinned-argument slot is in use"),
                    },
                },
            }
        };
        Ok(Ctx {
            policy: &self.policy,
            who,
            view,
            pin,
            args: *a,
        })
    }
}

/// Quotes a path for the log.
pub(super) fn q(b: &[u8]) -> String {
    quote(b)
}
