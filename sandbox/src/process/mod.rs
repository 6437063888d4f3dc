//! The container's processes: what they are told to do ([`ProcessPlan`], [`InitPlan`]), how they
//! are started ([`spawn`]) and the setup sequence they run ([`init`]).

use std::ffi::CString;
use std::path::PathBuf;

use seccompiler::BpfProgram;

use crate::caps;
use crate::rootfs::RootfsPlan;
use crate::seccomp::Filter;

pub mod channel;
pub mod init;
#[cfg(test)]
mod init_tests;
pub mod spawn;

/// `execve(2)`'s arguments, with the pointer arrays built ahead (so nothing allocates between
/// installing the seccomp filters and the exec).
pub struct ExecArgs {
    pub(crate) path: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecArgs {
    /// Prepares `path`, `argv` and `envp`.
    pub fn new(path: CString, argv: Vec<CString>, envp: Vec<CString>) -> ExecArgs {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let (a, e) = (ptrs(&argv), ptrs(&envp));
        ExecArgs {
            path,
            _argv: argv,
            _envp: envp,
            argv: a,
            envp: e,
        }
    }

    /// NULL-terminated `argv`.
    pub(crate) fn argv_ptrs(&self) -> *const *const libc::c_char {
        self.argv.as_ptr()
    }

    /// NULL-terminated `envp`.
    pub(crate) fn envp_ptrs(&self) -> *const *const libc::c_char {
        self.envp.as_ptr()
    }
}

/// What a container process does to itself before `execve` (init and exec'd processes alike).
#[derive(Clone, Debug, Default)]
pub struct ProcessPlan {
    /// `process.args`.
    pub args: Vec<CString>,
    /// `process.env`.
    pub env: Vec<CString>,
    /// The `PATH` of `env` (for finding `args[0]`).
    pub path_env: Option<String>,
    /// `process.cwd`.
    pub cwd: PathBuf,
    /// `process.user.uid`.
    pub uid: u32,
    /// `process.user.gid`.
    pub gid: u32,
    /// `process.user.additionalGids`.
    pub additional_gids: Vec<u32>,
    /// `process.user.umask` (default 0022).
    pub umask: libc::mode_t,
    /// `process.capabilities` (`None`: left as they are, as runc does).
    pub caps: Option<caps::Sets>,
    /// The highest capability this kernel knows (`/proc/sys/kernel/cap_last_cap`).
    pub cap_last: u32,
    /// `process.noNewPrivileges`.
    pub no_new_privs: bool,
    /// `process.rlimits` as (resource, soft, hard).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `process.terminal`.
    pub terminal: bool,
    /// `process.consoleSize` as (rows, cols).
    pub console_size: Option<(u16, u16)>,
    /// The spec's seccomp profile, compiled.
    pub seccomp: Option<Filter>,
    /// Filters installed after the spec's, right before `execve` (the trace backend's).
    pub extra_seccomp: Vec<BpfProgram>,
    /// `linux.personality` as `personality(2)`'s argument.
    pub personality: Option<libc::c_ulong>,
}

/// What the container's init does (an exec'd process uses only `process`).
#[derive(Clone, Debug, Default)]
pub struct InitPlan {
    /// The process part.
    pub process: ProcessPlan,
    /// The file system (init only).
    pub rootfs: Option<RootfsPlan>,
    /// The init made a new user namespace: wait for the caller to write its id maps.
    pub new_userns: bool,
    /// Unshare a new cgroup namespace once in the cgroup (`clone` would root it in the caller's).
    pub new_cgroupns: bool,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `domainname`.
    pub domainname: Option<String>,
    /// `linux.sysctl` as (`/proc/sys/...` path, value).
    pub sysctls: Vec<(PathBuf, String)>,
}
