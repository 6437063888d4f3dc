//! The setup sequence a container process runs on itself, in this order (runc's, with seccomp
//! moved to the very end):
//!
//! 1. new user namespace: wait until the caller has written the id maps, become its root;
//! 2. `setsid`, a fresh session keyring, `oom_score_adj`, umask 0;
//! 3. init only: the rootfs (propagation, mounts, `/dev`, `pivot_root`) — meanwhile the caller
//!    moves the process into its cgroup (unless a `cgroup` mount needs the cgroup namespace
//!    first: then the wait of step 6 comes before the rootfs);
//! 4. terminal: a pty from the container's `/dev/ptmx`, bound on `/dev/console`, master handed
//!    over, slave made the controlling terminal and fds 0-2;
//! 5. init only: `/dev` and `/` read-only if asked, hostname, domainname, sysctls, read-only
//!    and masked paths;
//! 6. wait until in the cgroup, unshare the cgroup namespace if asked; personality, rlimits;
//! 7. credentials: keep-caps, bounding set, groups, gid, uid, capset, ambient caps;
//! 8. cwd, umask, `args[0]` looked up in `PATH`, every fd from 3 close-on-exec, `no_new_privs`;
//! 9. tell the caller "ready", wait for the start signal (exec FIFO or release);
//! 10. [`finish`]: install the spec's seccomp filter, then the extra filters, then `execve`.
//!
//! Nothing but `seccomp(2)` and `execve(2)` runs after the first filter is in, so a policy that
//! traps `openat` (the trace backend) sees the workload's first syscall, not ours. Without
//! `no_new_privs`, installing a filter needs CAP_SYS_ADMIN: step 7 then keeps it in the
//! effective and permitted sets until `execve`, which drops it again (it is in neither the
//! inheritable nor the ambient set, and for root the bounding set decides).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{ExecArgs, InitPlan};
use crate::rootfs::{self, StepResult};
use crate::syscall::Syscall;

/// The caller's side of the sequence, as the child sees it.
pub trait Parent {
    /// Blocks until the caller has written the user namespace's id maps.
    fn wait_id_maps(&mut self) -> StepResult;
    /// Blocks until the process is in its cgroup.
    fn wait_cgroup(&mut self) -> StepResult;
    /// Hands the terminal master over (console socket or the caller).
    fn send_console(&mut self, master: OwnedFd) -> StepResult;
    /// Reports that setup is done (the caller's `create`/`exec` may return).
    fn ready(&mut self) -> StepResult;
    /// Blocks until the process may run user code (`start`, or an exec's release).
    fn wait_start(&mut self) -> StepResult;
}

const CAP_SYS_ADMIN: u32 = 21;

fn step(r: std::io::Result<()>, what: impl FnOnce() -> String) -> StepResult {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Runs steps 1-9; returns what to `execve`.
pub fn setup<S: Syscall, P: Parent>(
    sys: &S,
    plan: &InitPlan,
    parent: &mut P,
) -> Result<ExecArgs, String> {
    let p = &plan.process;
    if plan.new_userns {
        parent.wait_id_maps()?;
        step(sys.setresgid(0), || {
            "becoming gid 0 in the new user namespace".into()
        })?;
        step(sys.setresuid(0), || {
            "becoming uid 0 in the new user namespace (is container uid 0 mapped?)".into()
        })?;
    }
    step(sys.setsid(), || "setsid".into())?;
    step(sys.join_session_keyring(), || {
        "joining a new session keyring".into()
    })?;
    if let Some(adj) = p.oom_score_adj {
        step(
            sys.write_file(Path::new("/proc/self/oom_score_adj"), &adj.to_string()),
            || format!("process.oomScoreAdj: setting {adj} (lowering it needs CAP_SYS_RESOURCE)"),
        )?;
    }
    sys.umask(0);
    let cgroup_mount = plan
        .rootfs
        .as_ref()
        .is_some_and(|r| r.mounts.iter().any(|m| m.kind == rootfs::MountKind::Cgroup));
    let mut joined = false;
    if plan.new_cgroupns && cgroup_mount {
        join_cgroup(sys, plan, parent)?;
        joined = true;
    }
    if let Some(r) = &plan.rootfs {
        rootfs::prepare(sys, r)?;
    }
    if p.terminal {
        let (master, slave) = step_val(sys.open_pty(), || {
            "opening /dev/ptmx for the terminal".into()
        })?;
        if plan.rootfs.is_some() {
            let console = Path::new("/dev/console");
            step(rootfs::paths::touch(console), || {
                "creating /dev/console".into()
            })?;
            step(
                sys.mount(Some(&slave), console, None, libc::MS_BIND, None),
                || "bind-mounting the terminal on /dev/console".into(),
            )?;
        }
        parent.send_console(master)?;
        step(sys.attach_terminal(&slave, p.console_size), || {
            format!("making {} the controlling terminal", slave.display())
        })?;
    }
    if let Some(r) = &plan.rootfs {
        rootfs::finalize(sys, r)?;
    }
    if let Some(h) = &plan.hostname {
        step(sys.sethostname(h), || format!("hostname: setting {h:?}"))?;
    }
    if let Some(d) = &plan.domainname {
        step(sys.setdomainname(d), || {
            format!("domainname: setting {d:?}")
        })?;
    }
    for (path, value) in &plan.sysctls {
        step(sys.write_file(path, value), || {
            format!("linux.sysctl: writing {value:?} to {}", path.display())
        })?;
    }
    if let Some(r) = &plan.rootfs {
        rootfs::restrict_paths(sys, r)?;
    }
    if !joined {
        join_cgroup(sys, plan, parent)?;
    }
    if let Some(persona) = p.personality {
        step(sys.personality(persona), || "linux.personality".into())?;
    }
    for &(resource, soft, hard) in &p.rlimits {
        sys.setrlimit(resource, soft, hard)
            .map_err(|e| rlimit_error(resource, soft, hard, e))?;
    }
    credentials(sys, plan)?;
    step(sys.chdir(&p.cwd), || {
        format!("process.cwd: changing to {}", p.cwd.display())
    })?;
    sys.umask(p.umask);
    let exec = exec_args(plan)?;
    step(sys.cloexec_from(3), || {
        "marking descriptors close-on-exec".into()
    })?;
    if p.no_new_privs {
        step(sys.set_no_new_privs(), || "process.noNewPrivileges".into())?;
    }
    parent.ready()?;
    parent.wait_start()?;
    Ok(exec)
}

fn join_cgroup<S: Syscall, P: Parent>(sys: &S, plan: &InitPlan, parent: &mut P) -> StepResult {
    parent.wait_cgroup()?;
    if plan.new_cgroupns {
        step(sys.unshare(libc::CLONE_NEWCGROUP), || {
            "creating the cgroup namespace".into()
        })?;
    }
    Ok(())
}

fn step_val<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn credentials<S: Syscall>(sys: &S, plan: &InitPlan) -> StepResult {
    let p = &plan.process;
    let filters = p.seccomp.is_some() || !p.extra_seccomp.is_empty();
    if let Some(c) = &p.caps {
        step(sys.set_keepcaps(true), || "prctl(PR_SET_KEEPCAPS)".into())?;
        for cap in 0..=p.cap_last {
            if c.bounding & (1 << cap) == 0 {
                step(sys.drop_bounding_cap(cap), || {
                    format!(
                        "process.capabilities.bounding: dropping {}",
                        crate::caps::name(cap)
                    )
                })?;
            }
        }
    }
    step(sys.setgroups(&p.additional_gids), || {
        "process.user.additionalGids: setgroups".into()
    })?;
    step(sys.setresgid(p.gid), || {
        format!("process.user.gid: setting {}", p.gid)
    })?;
    step(sys.setresuid(p.uid), || {
        format!("process.user.uid: setting {}", p.uid)
    })?;
    if let Some(c) = &p.caps {
        step(sys.set_keepcaps(false), || "prctl(PR_SET_KEEPCAPS)".into())?;
        let admin = if filters && !p.no_new_privs {
            1u64 << CAP_SYS_ADMIN
        } else {
            0
        };
        let sets = crate::syscall::CapSets {
            effective: c.effective | admin,
            permitted: c.permitted | c.effective | admin,
            inheritable: c.inheritable,
        };
        step(sys.capset(sets), || "process.capabilities: capset".into())?;
        for cap in 0..=p.cap_last {
            if c.ambient & (1 << cap) != 0 {
                step(sys.raise_ambient_cap(cap), || {
                    format!(
                        "process.capabilities.ambient: raising {} (it must be in permitted and inheritable too)",
                        crate::caps::name(cap)
                    )
                })?;
            }
        }
    }
    Ok(())
}

fn rlimit_error(resource: u32, soft: u64, hard: u64, e: std::io::Error) -> String {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a local rlimit.
    unsafe { libc::getrlimit(resource, &mut cur) };
    let name = crate::config::rlimit_name(resource);
    if e.raw_os_error() == Some(libc::EPERM) && hard > cur.rlim_max {
        format!(
            "process.rlimits: {name} hard limit {hard} is above the current {}, and raising it needs \
             CAP_SYS_RESOURCE, which this process lacks (not in the host's bounding set?): lower it",
            cur.rlim_max
        )
    } else {
        format!("process.rlimits: setting {name} to {soft}/{hard}: {e}")
    }
}

fn cstring(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| "a path contains a NUL byte".to_string())
}

fn executable(path: &Path) -> bool {
    let Ok(c) = crate::syscall::cpath(path) else {
        return false;
    };
    // SAFETY: a valid path.
    path.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// `args[0]` resolved like `execvp` (and runc's `LookPath`), with the argument arrays.
fn exec_args(plan: &InitPlan) -> Result<ExecArgs, String> {
    let p = &plan.process;
    let arg0 = p.args.first().ok_or("process.args is empty")?;
    let name = Path::new(std::ffi::OsStr::from_bytes(arg0.as_bytes()));
    let found: Option<PathBuf> = if arg0.as_bytes().contains(&b'/') {
        executable(name).then(|| name.to_path_buf())
    } else {
        let path = p.path_env.as_deref().unwrap_or(crate::config::DEFAULT_PATH);
        path.split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
            .find(|c| executable(c))
    };
    let Some(found) = found else {
        return Err(if arg0.as_bytes().contains(&b'/') {
            format!("exec: {:?}: no such executable file in the container", name)
        } else {
            format!("exec: {:?}: executable file not found in $PATH", name)
        });
    };
    Ok(ExecArgs::new(
        cstring(found.as_os_str().as_bytes())?,
        p.args.clone(),
        p.env.clone(),
    ))
}

/// Step 10: the filters, then `execve`. Returns only on failure, with the message and the exit
/// code a shell would use (127 not found, 126 not executable).
pub fn finish<S: Syscall>(sys: &S, plan: &InitPlan, exec: &ExecArgs) -> (String, i32) {
    let p = &plan.process;
    if let Some(f) = &p.seccomp
        && let Err(e) = sys.install_seccomp(&f.program, f.flags)
    {
        return (format!("installing the seccomp profile: {e}"), 1);
    }
    for (i, prog) in p.extra_seccomp.iter().enumerate() {
        if let Err(e) = sys.install_seccomp(prog, 0) {
            return (
                format!(
                    "installing extra seccomp filter {i}: {e} (does the spec's profile allow seccomp(2)?)"
                ),
                1,
            );
        }
    }
    let e = sys.execve(exec);
    let code = if e.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    (format!("exec {:?}: {e}", exec.path), code)
}
