//! The ptrace requests the supervisor uses, and `waitpid` statuses decoded into [`Stop`]s.

use std::io;

use crate::sys::check;

/// The options every tracee gets: seccomp stops, every new thread and child traced from birth,
/// exec reported, and every tracee killed if the supervisor goes away.
pub const OPTIONS: i32 = libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_EXITKILL;

fn req(request: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes a request whose addr/data are integers or point at memory
    // valid for that request.
    check(unsafe { libc::ptrace(request, tid, addr, data) })
}

/// `PTRACE_SEIZE` with [`OPTIONS`].
pub fn seize(tid: i32) -> io::Result<()> {
    req(libc::PTRACE_SEIZE, tid, 0, OPTIONS as usize).map(drop)
}

/// Resumes a stopped tracee, delivering `sig` (0 for none) if it was a signal-delivery stop.
pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// Stops tracing `tid`, delivering `sig` (0 for none).
pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// The `si_code` of the signal a tracee is stopped for (signal-delivery stop).
pub fn sig_code(tid: i32) -> io::Result<i32> {
    // SAFETY: an all-zero siginfo is a valid value for the kernel to fill in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    req(
        libc::PTRACE_GETSIGINFO,
        tid,
        0,
        &mut info as *mut libc::siginfo_t as usize,
    )?;
    Ok(info.si_code)
}

/// Leaves a tracee in group-stop but lets it report the stop's end (`PTRACE_LISTEN`).
pub fn listen(tid: i32) -> io::Result<()> {
    req(libc::PTRACE_LISTEN, tid, 0, 0).map(drop)
}

/// Executes one instruction.
pub fn singlestep(tid: i32) -> io::Result<()> {
    req(libc::PTRACE_SINGLESTEP, tid, 0, 0).map(drop)
}

/// The event message of the last event stop (new tid, former tid).
pub fn event_msg(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    req(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

/// The registers.
pub fn regs(tid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: an all-zero register set is a valid value for the kernel to fill in.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    req(
        libc::PTRACE_GETREGS,
        tid,
        0,
        &mut r as *mut libc::user_regs_struct as usize,
    )?;
    Ok(r)
}

/// Sets the registers.
pub fn set_regs(tid: i32, r: &libc::user_regs_struct) -> io::Result<()> {
    req(
        libc::PTRACE_SETREGS,
        tid,
        0,
        r as *const libc::user_regs_struct as usize,
    )
    .map(drop)
}

/// Sets one register (`offset` into `user_regs_struct`).
pub fn poke_user(tid: i32, offset: usize, value: u64) -> io::Result<()> {
    req(libc::PTRACE_POKEUSER, tid, offset, value as usize).map(drop)
}

/// Reads one word of the tracee's memory.
pub fn peek(tid: i32, addr: u64) -> io::Result<u64> {
    // PEEKDATA returns the word, so -1 is ambiguous: clear errno first.
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: PEEKDATA reads the tracee's memory; addr is just a number to us.
    let v = unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, tid, addr as usize, 0usize) };
    // SAFETY: as above.
    let e = unsafe { *libc::__errno_location() };
    if v == -1 && e != 0 {
        return Err(io::Error::from_raw_os_error(e));
    }
    Ok(v as u64)
}

/// Writes one word of the tracee's memory (even read-only text, copy-on-write).
pub fn poke(tid: i32, addr: u64, value: u64) -> io::Result<()> {
    req(libc::PTRACE_POKEDATA, tid, addr as usize, value as usize).map(drop)
}

/// A seccomp stop's system call.
#[derive(Clone, Copy, Debug)]
pub struct SyscallInfo {
    /// The call number.
    pub nr: u64,
    /// Its six arguments.
    pub args: [u64; 6],
    /// The filter's `SECCOMP_RET_DATA`.
    pub data: u32,
    /// The architecture.
    pub arch: u32,
}

/// `PTRACE_GET_SYSCALL_INFO` at a seccomp stop; `None` if the tracee is not in one.
pub fn syscall_info(tid: i32) -> io::Result<Option<SyscallInfo>> {
    // SAFETY: an all-zero info is a valid value for the kernel to fill in.
    let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
    req(
        libc::PTRACE_GET_SYSCALL_INFO,
        tid,
        std::mem::size_of::<libc::ptrace_syscall_info>(),
        &mut info as *mut libc::ptrace_syscall_info as usize,
    )?;
    if info.op != libc::PTRACE_SYSCALL_INFO_SECCOMP {
        return Ok(None);
    }
    // SAFETY: op says the seccomp member is the one the kernel filled in.
    let s = unsafe { info.u.seccomp };
    Ok(Some(SyscallInfo {
        nr: s.nr,
        args: s.args,
        data: s.ret_data,
        arch: info.arch,
    }))
}

/// What `waitpid` reported about a tracee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
    /// A seccomp stop (`PTRACE_EVENT_SECCOMP`).
    Seccomp,
    /// It created a thread or process (`PTRACE_EVENT_CLONE/FORK/VFORK`).
    Clone(i32),
    /// It called `execve` successfully.
    Exec,
    /// A group-stop (stopping signal under `PTRACE_SEIZE`).
    GroupStop(i32),
    /// `PTRACE_EVENT_STOP` that is not a group-stop: a new tracee's first stop, or the end of a
    /// listened group-stop.
    EventStop,
    /// A signal is about to be delivered.
    Signal(i32),
    /// Any other event (exit, vfork-done); resumed without a signal.
    OtherEvent(i32),
}

/// Decodes a wait status.
pub fn decode(status: i32) -> Stop {
    if libc::WIFEXITED(status) {
        return Stop::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        return Stop::Signaled(libc::WTERMSIG(status));
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    match event {
        0 => Stop::Signal(sig),
        libc::PTRACE_EVENT_SECCOMP => Stop::Seccomp,
        libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
            Stop::Clone(event)
        }
        libc::PTRACE_EVENT_EXEC => Stop::Exec,
        libc::PTRACE_EVENT_STOP => match sig {
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Stop::GroupStop(sig),
            _ => Stop::EventStop,
        },
        e => Stop::OtherEvent(e),
    }
}

/// `waitpid(pid, __WALL)` (`pid` = -1 for any), retrying on `EINTR`.
pub fn wait(pid: i32) -> io::Result<(i32, Stop)> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid fills `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok((rc, decode(status)));
    }
}
