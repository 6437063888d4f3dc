//! Starting supervised processes: `moat-trace run` (a plain child, no namespaces: tests,
//! benchmarks, trying a policy) and `moat-trace attach` (a process another program created and
//! holds before its `execve`, e.g. a container's init from the trace backend).

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use crate::audit::Decision;
use crate::bpf::Filter;
use crate::policy::Policy;
use crate::supervisor::{self, Supervisor};
use crate::sys;

/// A launch error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The supervisor could not start or trace.
    #[error(transparent)]
    Supervisor(#[from] supervisor::Error),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command line is empty or has a NUL byte.
    #[error("bad command: {0}")]
    Command(String),
}

/// How the supervised command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// Ends this process the same way: the same exit code, or the same signal (re-raised with
    /// its default action and no core dump; 128+N if it does not kill).
    pub fn mirror(self) -> ! {
        match self {
            Exit::Code(c) => std::process::exit(c),
            Exit::Signal(s) => {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: plain calls on this process: no core file, default action, unblock,
                // then raise.
                unsafe {
                    libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                    libc::signal(s, libc::SIG_DFL);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, s);
                    libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                    libc::raise(s);
                }
                std::process::exit(128 + s)
            }
        }
    }
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Runs `argv` as a supervised child of this process (no namespaces) and returns how it ended.
pub fn run_command(
    policy: Policy,
    argv: &[OsString],
    audit: impl FnMut(Decision) + 'static,
) -> Result<Exit, Error> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| Error::Command(format!("{a:?} has a NUL"))))
        .collect::<Result<_, _>>()?;
    if args.is_empty() {
        return Err(Error::Command("nothing to run".into()));
    }
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let filter = Filter::new(&policy);
    let mut sup = Supervisor::new(policy, audit)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds`.
    sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)
        .map_err(io_err("creating the start pipe"))?;
    let [go_r, go_w] = fds;
    // SAFETY: fork; the child only makes async-signal-safe calls (prctl, read, seccomp, execvp,
    // write, _exit) on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Io {
            context: "fork",
            source: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: see above; `ptrs` is a NULL-terminated array of C strings that outlive exec.
        unsafe {
            libc::close(go_w);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let mut b = 0u8;
            // Wait until the supervisor has seized us.
            if libc::read(go_r, (&mut b as *mut u8).cast(), 1) != 1 {
                libc::_exit(126);
            }
            let prog = libc::sock_fprog {
                len: filter.instructions().len() as u16,
                filter: filter.instructions().as_ptr().cast_mut(),
            };
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                libc::_exit(126);
            }
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let msg = b"moat-trace: cannot execute the command\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copy of the child's end.
    unsafe { libc::close(go_r) };
    let seized = sup.seize(pid);
    // SAFETY: one byte to the child (or, on failure, closing makes its read fail).
    unsafe {
        if seized.is_ok() {
            libc::write(go_w, [1u8].as_ptr().cast(), 1);
        }
        libc::close(go_w);
    }
    if let Err(e) = seized {
        let mut st = 0;
        // SAFETY: reaping our own child, which exits because the pipe closed.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        return Err(e.into());
    }
    sup.run()?;
    Ok(match sup.exit_of(pid) {
        Some(crate::ptrace::Stop::Exited(c)) => Exit::Code(c),
        Some(crate::ptrace::Stop::Signaled(s)) => Exit::Signal(s),
        _ => Exit::Signal(libc::SIGKILL),
    })
}

/// Supervises process `pid`, which another program created and holds before its `execve` (with
/// this policy's filter installed last, or about to be). Calls `ready` once `pid` is seized; the
/// caller may then let it run. Returns when every tracee has exited.
pub fn attach(
    policy: Policy,
    pid: i32,
    ready: impl FnOnce(),
    audit: impl FnMut(Decision) + 'static,
) -> Result<(), Error> {
    let mut sup = Supervisor::new(policy, audit)?;
    sup.seize(pid)?;
    ready();
    sup.run()?;
    Ok(())
}
