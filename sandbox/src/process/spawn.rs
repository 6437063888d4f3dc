//! Starting a container process from a (possibly multithreaded) caller.
//!
//! 1. The caller prepares everything (plan, seccomp BPF, open namespace and `cgroup.procs`
//!    files) and `fork()`s through glibc, so malloc stays usable in the child.
//! 2. The child — the *intermediate*, single-threaded — resets signal dispositions and mask,
//!    puts the stdio descriptors on 0-2, joins the namespaces given by path (user namespace
//!    first), makes a new time namespace if asked, then clones the container's process with
//!    `CLONE_PARENT | CLONE_NEW*...` and no new stack (fork-like). On cgroup v2 that is
//!    `clone3(CLONE_INTO_CGROUP)`, which puts the process in its cgroup as it is born. The new
//!    process is **a direct child of the caller** (who can `waitpid` it; no subreaper needed) and
//!    pid 1 of a new pid namespace. The intermediate sends its host pid and exits; the caller
//!    reaps it.
//! 3. With a new user namespace, the caller writes `uid_map`/`gid_map` and says "go". On cgroup
//!    v1 the caller then writes the pid into every hierarchy's `cgroup.procs` — *while* the
//!    process sets up its rootfs: moving a task between cgroups waits for an RCU grace period
//!    (5-20 ms on a small VM), and this hides it behind the mounts. Either way the caller says
//!    "joined".
//! 4. The process runs [`init::setup`]: it waits for "joined" before it makes its cgroup
//!    namespace (so the namespace's root is its own cgroup) and before it drops privileges,
//!    says "ready", waits for its start signal, installs the seccomp filters and `execve`s
//!    ([`init::finish`]).
//!
//! Nothing runs between fork and exec in the caller's other threads' locks: the children use
//! no `tracing`, no `std::env`, no stdio locks — only the kernel, allocation and the plan.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::InitPlan;
use super::channel::{self, Channel, Msg, recv_msg, send_msg, send_raw};
use super::init::{self, Parent};
use crate::error::{Error, Result};
use crate::namespaces::{CLONE_NEWTIME, Join};
use crate::rootfs::StepResult;
use crate::syscall::{LinuxSyscall, cvt, cvt_long};

/// Where the container process's fds 0-2 come from.
#[derive(Debug)]
pub enum Stdio {
    /// The caller's own 0, 1 and 2.
    Inherit,
    /// These descriptors (already opened on `/dev/null` where the caller gave none).
    Fds([OwnedFd; 3]),
    /// A new terminal (`process.terminal`); the master goes to the target.
    Terminal(ConsoleTarget),
}

/// Who gets a terminal's master end.
#[derive(Debug)]
pub enum ConsoleTarget {
    /// Sent over this connected Unix socket with `SCM_RIGHTS` (runc's `--console-socket`).
    Socket(OwnedFd),
    /// Returned to the caller.
    Caller,
}

/// What the process waits for after "ready".
#[derive(Debug)]
pub enum StartSignal {
    /// Open `exec.fifo` (write-only, blocking) in this state directory, write a byte (init).
    Fifo(OwnedFd),
    /// A "go" message on the channel (a held exec).
    Hold,
    /// Nothing: exec at once.
    Immediate,
}

/// How the process gets into its cgroup.
#[derive(Debug, Default)]
pub struct CgroupJoin {
    /// Open (write-only) `cgroup.procs` files: the caller writes the pid into each (v1), or
    /// (v2, when `clone3(CLONE_INTO_CGROUP)` is refused) the intermediate writes `0`.
    pub procs: Vec<OwnedFd>,
    /// The cgroup v2 directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub into: Option<OwnedFd>,
}

/// Everything [`spawn`] needs.
#[derive(Debug)]
pub struct Request<'a> {
    /// The process's plan.
    pub plan: &'a InitPlan,
    /// Its cgroup.
    pub cgroup: CgroupJoin,
    /// Namespaces to join, user namespace first.
    pub joins: &'a [Join],
    /// `CLONE_NEW*` flags for the clone (time and cgroup excluded: the process unshares its cgroup
    /// namespace itself once it is in its cgroup, see [`InitPlan::new_cgroupns`]).
    pub clone_flags: libc::c_int,
    /// New time namespace with these offsets.
    pub new_time: Option<&'a str>,
    /// uid and gid maps to write for a new user namespace.
    pub id_maps: Option<(&'a str, &'a str)>,
    /// Stdio.
    pub stdio: Stdio,
    /// Start signal.
    pub start: StartSignal,
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    /// Host pid (a child of the caller).
    pub pid: i32,
    /// The terminal master, when returned to the caller.
    pub console: Option<OwnedFd>,
    /// The caller's end of the channel (close-on-exec on the other side: EOF means exec'd).
    pub channel: Channel,
}

/// Moves a descriptor to 3 or above (a caller with closed stdio may hand out 0-2), close-on-exec.
pub fn high(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor.
    let n = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) }).map_err(
        |source| Error::Io {
            context: "duplicating a descriptor".into(),
            source,
        },
    )?;
    // SAFETY: `n` was just created.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn kill_and_reap(pid: i32) {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Starts the process; returns once it reported "ready" (or failed, leaving no process behind).
pub fn spawn(mut req: Request<'_>) -> Result<Spawned> {
    let (ours, theirs) = channel::pair().map_err(|source| Error::Io {
        context: "socketpair".into(),
        source,
    })?;
    // Keep our fds away from 0-2 (the intermediate puts stdio there).
    let ours = Channel::from_fd(high(ours.into_fd())?);
    let theirs = Channel::from_fd(high(theirs.into_fd())?);
    req.cgroup.procs = req
        .cgroup
        .procs
        .into_iter()
        .map(high)
        .collect::<Result<_>>()?;
    req.cgroup.into = req.cgroup.into.map(high).transpose()?;
    if let StartSignal::Fifo(fd) = req.start {
        req.start = StartSignal::Fifo(high(fd)?);
    }
    if let Stdio::Terminal(ConsoleTarget::Socket(fd)) = req.stdio {
        req.stdio = Stdio::Terminal(ConsoleTarget::Socket(high(fd)?));
    }

    // SAFETY: the child only runs `intermediate`, which never returns and uses no locks other
    // threads may hold (see the module comment); glibc's fork keeps malloc usable.
    let fork = unsafe { nix::unistd::fork() }.map_err(|e| Error::Io {
        context: "fork".into(),
        source: e.into(),
    })?;
    let intermediate_pid = match fork {
        nix::unistd::ForkResult::Child => intermediate(&req, theirs.raw()),
        nix::unistd::ForkResult::Parent { child } => child.as_raw(),
    };
    drop(theirs);
    let parent_joins = req.cgroup.into.is_none();
    let procs = std::mem::take(&mut req.cgroup.procs);
    drop(req.cgroup.into.take());

    let first = ours.recv();
    // SAFETY: reaping the intermediate, our own child, by pid.
    unsafe { libc::waitpid(intermediate_pid, std::ptr::null_mut(), 0) };
    let pid = match first {
        Ok(Some(Msg::Pid(pid))) => pid,
        Ok(Some(Msg::Error(e))) => return Err(Error::Setup(e)),
        Ok(_) => {
            return Err(Error::Setup(
                "the intermediate process exited without starting the container".into(),
            ));
        }
        Err(source) => {
            return Err(Error::Io {
                context: "reading from the intermediate process".into(),
                source,
            });
        }
    };
    let join = if parent_joins { procs } else { Vec::new() };
    match finish_setup(pid, &ours, req.id_maps, &join) {
        Ok(console) => Ok(Spawned {
            pid,
            console,
            channel: ours,
        }),
        Err(e) => {
            kill_and_reap(pid);
            Err(e)
        }
    }
}

/// Reads what the process reports first (a setup error explains a failed cgroup write better).
fn early_error(ch: &Channel) -> Option<Error> {
    let mut fds = [libc::pollfd {
        fd: ch.raw(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: polling one live descriptor for up to 100 ms.
    if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } <= 0 {
        return None;
    }
    match ch.recv() {
        Ok(Some(Msg::Error(e))) => Some(Error::Setup(e)),
        _ => None,
    }
}

fn finish_setup(
    pid: i32,
    ch: &Channel,
    id_maps: Option<(&str, &str)>,
    join: &[OwnedFd],
) -> Result<Option<OwnedFd>> {
    if let Some((uid, gid)) = id_maps {
        for (file, map) in [("uid_map", uid), ("gid_map", gid)] {
            let path = format!("/proc/{pid}/{file}");
            fs::write(&path, map).map_err(|source| Error::Io {
                context: format!("writing the user namespace's {file} ({path}): are linux.uidMappings/gidMappings valid host ids?"),
                source,
            })?;
        }
        ch.send(&Msg::Go).map_err(|source| Error::Io {
            context: "signalling the container process".into(),
            source,
        })?;
    }
    let pid_text = pid.to_string();
    for fd in join {
        // SAFETY: writing a live buffer to an open cgroup.procs.
        let n = unsafe { libc::write(fd.as_raw_fd(), pid_text.as_ptr().cast(), pid_text.len()) };
        if n != pid_text.len() as isize {
            let source = std::io::Error::last_os_error();
            return Err(early_error(ch).unwrap_or(Error::Io {
                context: format!("moving process {pid} into its cgroup"),
                source,
            }));
        }
    }
    ch.send(&Msg::Joined).map_err(|source| Error::Io {
        context: "signalling the container process".into(),
        source,
    })?;
    let mut console = None;
    loop {
        match ch.recv() {
            Ok(Some(Msg::Console(fd))) => console = Some(fd),
            Ok(Some(Msg::Ready)) => return Ok(console),
            Ok(Some(Msg::Error(e))) => return Err(Error::Setup(e)),
            Ok(Some(other)) => return Err(Error::Setup(format!("unexpected message {other:?}"))),
            Ok(None) => {
                return Err(Error::Setup(
                    "the container process exited during setup".into(),
                ));
            }
            Err(source) => {
                return Err(Error::Io {
                    context: "reading from the container process".into(),
                    source,
                });
            }
        }
    }
}

/// The intermediate process (forked child). Never returns.
fn intermediate(req: &Request<'_>, sock: RawFd) -> ! {
    let result = (|| -> std::result::Result<i32, String> {
        reset_signals();
        if let Stdio::Fds(fds) = &req.stdio {
            put_stdio(fds).map_err(|e| format!("setting up stdio: {e}"))?;
        }
        for j in req.joins {
            // SAFETY: setns on an open namespace descriptor.
            cvt(unsafe { libc::setns(j.fd.as_raw_fd(), j.flag) })
                .map_err(|e| format!("joining namespace (flag {:#x}): {e}", j.flag))?;
        }
        if let Some(offsets) = req.new_time {
            // SAFETY: unshare with a flag.
            cvt(unsafe { libc::unshare(CLONE_NEWTIME) })
                .map_err(|e| format!("creating the time namespace: {e}"))?;
            if !offsets.is_empty() {
                fs::write("/proc/self/timens_offsets", offsets).map_err(|e| {
                    format!("linux.timeOffsets: writing /proc/self/timens_offsets: {e}")
                })?;
            }
        }
        let pid = clone_container(req)?;
        if pid == 0 {
            container_process(req, sock);
        }
        Ok(pid as i32)
    })();
    let msg = match result {
        Ok(pid) => Msg::Pid(pid),
        Err(e) => Msg::Error(e),
    };
    let _ = send_msg(sock, &msg);
    // SAFETY: leaving the forked child without running the caller's atexit handlers.
    unsafe { libc::_exit(0) }
}

/// `clone3` arguments (linux/sched.h, version 2: with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones the container's process (fork-like, as a sibling of this intermediate): into its v2
/// cgroup with `clone3` when possible, else after joining through `cgroup.procs`.
fn clone_container(req: &Request<'_>) -> std::result::Result<libc::c_long, String> {
    let flags = (libc::CLONE_PARENT | req.clone_flags) as u64;
    if let Some(dir) = &req.cgroup.into {
        let args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..Default::default()
        };
        // SAFETY: fork-like clone3 (no new stack: the child continues on a copy of this stack)
        // with a valid, fully initialised clone_args of the size given.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if r >= 0 {
            return Ok(r);
        }
        // Older kernel or a cgroup that refuses it: join by writing 0, then clone.
        for fd in &req.cgroup.procs {
            // SAFETY: writing one byte from a static buffer to an open descriptor.
            if unsafe { libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) } != 1 {
                return Err(format!(
                    "joining the container's cgroup: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    let flags = flags | libc::SIGCHLD as u64;
    // SAFETY: fork-like clone (no new stack): the child continues on a copy of this stack.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    })
    .map_err(|e| format!("clone(CLONE_PARENT|{:#x}): {e}", req.clone_flags))
}

fn reset_signals() {
    // SAFETY: resetting dispositions and the mask of this single-threaded process.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn put_stdio(fds: &[OwnedFd; 3]) -> std::io::Result<()> {
    // First copy them above 2 (a source may itself be 0, 1 or 2), then onto 0-2.
    let mut high = [0; 3];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC on an open descriptor.
        high[i] = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    }
    for (target, fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto the standard descriptors (clears close-on-exec), then close the copy.
        unsafe {
            cvt(libc::dup2(*fd, target as libc::c_int))?;
            libc::close(*fd);
        }
    }
    Ok(())
}

/// The caller's side as the container process sees it.
struct Link<'a> {
    sock: RawFd,
    req: &'a Request<'a>,
    ready_sent: bool,
}

impl Parent for Link<'_> {
    fn wait_cgroup(&mut self) -> StepResult {
        match recv_msg(self.sock) {
            Ok(Some(Msg::Joined)) => Ok(()),
            other => Err(format!("waiting to be moved into the cgroup: {other:?}")),
        }
    }

    fn wait_id_maps(&mut self) -> StepResult {
        match recv_msg(self.sock) {
            Ok(Some(Msg::Go)) => Ok(()),
            other => Err(format!("waiting for the id maps: {other:?}")),
        }
    }

    fn send_console(&mut self, master: OwnedFd) -> StepResult {
        let r = match &self.req.stdio {
            Stdio::Terminal(ConsoleTarget::Socket(sock)) => {
                send_raw(sock.as_raw_fd(), b"/dev/ptmx", Some(master.as_raw_fd()))
            }
            _ => send_msg(self.sock, &Msg::Console(master)),
        };
        r.map_err(|e| format!("sending the terminal master: {e}"))
    }

    fn ready(&mut self) -> StepResult {
        self.ready_sent = true;
        send_msg(self.sock, &Msg::Ready).map_err(|e| format!("reporting ready: {e}"))
    }

    fn wait_start(&mut self) -> StepResult {
        match &self.req.start {
            StartSignal::Immediate => Ok(()),
            StartSignal::Hold => match recv_msg(self.sock) {
                Ok(Some(Msg::Go)) => Ok(()),
                _ => Err("released without a start signal".into()),
            },
            StartSignal::Fifo(dir) => {
                let fd = loop {
                    // SAFETY: openat relative to the open state directory; blocks until `start`
                    // opens the FIFO for reading.
                    let fd = unsafe {
                        libc::openat(
                            dir.as_raw_fd(),
                            c"exec.fifo".as_ptr(),
                            libc::O_WRONLY | libc::O_CLOEXEC,
                        )
                    };
                    if fd >= 0 {
                        break fd;
                    }
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EINTR) {
                        return Err(format!("opening the exec FIFO: {e}"));
                    }
                };
                // SAFETY: writing one byte to the FIFO we opened, then closing it.
                let n = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
                // SAFETY: as above.
                unsafe { libc::close(fd) };
                if n != 1 {
                    return Err(format!(
                        "writing the exec FIFO: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                // SAFETY: closing our handle on the state directory before exec.
                unsafe { libc::close(dir.as_raw_fd()) };
                Ok(())
            }
        }
    }
}

/// The container process (cloned child). Never returns.
fn container_process(req: &Request<'_>, sock: RawFd) -> ! {
    let sys = LinuxSyscall;
    let mut link = Link {
        sock,
        req,
        ready_sent: false,
    };
    let (msg, code) = match init::setup(&sys, req.plan, &mut link) {
        Ok(exec) => init::finish(&sys, req.plan, &exec),
        Err(e) => (e, 1),
    };
    // Before "ready" the caller reads this; after it (exec failed), an exec'd process's caller
    // still waits on the channel, and the container's stderr gets it too.
    let _ = send_msg(sock, &Msg::Error(msg.clone()));
    if link.ready_sent {
        let line = format!("moat: {msg}\n");
        // SAFETY: writing a buffer to fd 2.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    }
    // SAFETY: leaving without the caller's atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Opens `path` (a `cgroup.procs`) write-only, close-on-exec.
pub fn open_procs(path: &Path) -> Result<OwnedFd> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::Io {
            context: format!("opening {}", path.display()),
            source,
        })
}
