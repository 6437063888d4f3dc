//! Probes that need processes of their own: tracing a sibling, creating a user namespace, a fork
//! bomb against the pids limit, and an allocation past the memory limit. Every child is killed and
//! reaped before the probe returns; grandchildren die with their parent (`PR_SET_PDEATHSIG`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Host, Verdict};
use crate::process::{self, End, SIGKILL, Shared};
use crate::sys::{self, Errno};

/// How long a probe's child may run before it is killed.
const CHILD_LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` in a forked child and returns the errno it exits with (0: the call succeeded).
fn errno_in_child(f: impl FnOnce() -> sys::SysResult) -> Result<i32, String> {
    let pid = process::spawn(|| match f() {
        Ok(_) => 0,
        Err(e) => e.0.clamp(1, 254),
    })
    .map_err(|e| format!("fork: {e}"))?;
    match process::wait(pid, Duration::from_secs(5)) {
        End::Exited(code) => Ok(code),
        other => Err(format!("child {other:?}")),
    }
}

/// `ptrace_sibling`: child A attaches to its sibling B with `PTRACE_ATTACH`.
pub fn ptrace_sibling(_: &Host) -> Verdict {
    let b = match process::spawn(|| process::pause_forever()) {
        Ok(b) => b,
        Err(e) => return Verdict::unknown(format!("fork: {e}")),
    };
    let r = errno_in_child(|| sys::ptrace_attach(b));
    process::kill(b, SIGKILL);
    let _ = process::reap(b);
    match r {
        Ok(0) => Verdict::exposed(format!("attached to sibling pid {b}")),
        Ok(e) => Verdict::isolated(Errno(e).to_string()),
        Err(why) => Verdict::unknown(why),
    }
}

/// `unshare_user`: a new user namespace (in a child, so the probe keeps its own).
pub fn unshare_user(_: &Host) -> Verdict {
    match errno_in_child(|| sys::unshare(sys::CLONE_NEWUSER)) {
        Ok(0) => Verdict::exposed("created a user namespace"),
        Ok(e) => Verdict::isolated(Errno(e).to_string()),
        Err(why) => Verdict::unknown(why),
    }
}

/// `fork_bomb`: a child (leading its own process group) forks paused children until `fork` fails
/// or `--fork-limit` of them exist, reports the count through a shared page, then kills and reaps
/// them. Isolated when `fork` failed first.
pub fn fork_bomb(host: &Host) -> Verdict {
    let limit = host.fork_limit;
    let Ok(shared) = Shared::new() else {
        return Verdict::unknown("cannot map a shared page");
    };
    let (count, failed) = (shared.slot(0), shared.slot(1));
    let bomber = process::spawn(|| {
        let _ = process::set_process_group(0, 0);
        let me = sys::getpid() as i32;
        let mut kids = Vec::with_capacity(limit as usize);
        while kids.len() < limit as usize {
            match process::spawn(|| {
                process::die_with_parent(me);
                process::pause_forever()
            }) {
                Ok(k) => {
                    kids.push(k);
                    count.store(kids.len() as u64, Ordering::SeqCst);
                }
                Err(e) => {
                    failed.store(e.0 as u64, Ordering::SeqCst);
                    break;
                }
            }
        }
        for &k in &kids {
            process::kill(k, SIGKILL);
        }
        for &k in &kids {
            let _ = process::reap(k);
        }
        0
    });
    let bomber = match bomber {
        Ok(pid) => pid,
        Err(e) => return Verdict::unknown(format!("fork: {e}")),
    };
    // Also from this side, so the group exists before anything could need killing.
    let _ = process::set_process_group(bomber, bomber);
    let end = process::wait(bomber, CHILD_LIMIT);
    // Whatever is left of the group (the bomber died early): kill it, and reap any of it that was
    // reparented to us (as PID 1 of a pid namespace).
    process::kill(-bomber, SIGKILL);
    while process::reap(-bomber).is_ok() {}
    let n = count.load(Ordering::SeqCst);
    match (failed.load(Ordering::SeqCst), end) {
        (0, End::Exited(0)) if n >= u64::from(limit) => {
            Verdict::exposed(format!("reached the limit of {limit} children"))
        }
        (0, end) => Verdict::unknown(format!(
            "{n} children, then the forking child ended: {end:?}"
        )),
        (e, _) => Verdict::isolated(format!(
            "fork failed after {n} children: {}",
            Errno(e as i32)
        )),
    }
}

/// `memory_limit`: a child maps and touches (one byte per page) twice `--memory-mib`, or 256 MiB
/// without it, reporting progress through a shared page. Isolated when it is OOM-killed, its
/// `mmap` fails, or it stalls short of the total.
pub fn memory_limit(host: &Host) -> Verdict {
    const MIB: usize = 1 << 20;
    const PAGE: usize = 4096;
    let total = host.memory_mib.map_or(256, |m| m.saturating_mul(2)).max(1);
    let Ok(shared) = Shared::new() else {
        return Verdict::unknown("cannot map a shared page");
    };
    let (touched, map_errno) = (shared.slot(0), shared.slot(1));
    let child = process::spawn(|| {
        let len = total as usize * MIB;
        let flags = process::MAP_PRIVATE | process::MAP_ANONYMOUS | process::MAP_NORESERVE;
        let p = match process::map_anonymous(len, flags) {
            Ok(p) => p,
            Err(e) => {
                map_errno.store(e.0 as u64, Ordering::SeqCst);
                return 1;
            }
        };
        for page in 0..len / PAGE {
            // SAFETY: `page * PAGE < len`, inside the fresh private mapping; volatile so the page
            // is really faulted in.
            unsafe { p.add(page * PAGE).write_volatile(1) };
            if (page + 1) % (MIB / PAGE) == 0 {
                touched.store(((page + 1) * PAGE / MIB) as u64, Ordering::SeqCst);
            }
        }
        0
    });
    let child = match child {
        Ok(pid) => pid,
        Err(e) => return Verdict::unknown(format!("fork: {e}")),
    };
    let end = process::wait(child, CHILD_LIMIT);
    let got = touched.load(Ordering::SeqCst);
    match end {
        End::Exited(0) => Verdict::exposed(format!("touched all {total} MiB")),
        End::Exited(1) if map_errno.load(Ordering::SeqCst) != 0 => {
            let e = Errno(map_errno.load(Ordering::SeqCst) as i32);
            Verdict::isolated(format!("mmap of {total} MiB failed: {e}"))
        }
        End::Signaled(SIGKILL) => {
            Verdict::isolated(format!("killed by SIGKILL after {got} of {total} MiB"))
        }
        End::TimedOut if got < total => Verdict::isolated(format!(
            "stalled at {got} of {total} MiB for {} s (killed)",
            CHILD_LIMIT.as_secs()
        )),
        other => Verdict::unknown(format!("child {other:?} after {got} of {total} MiB")),
    }
}
