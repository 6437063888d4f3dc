//! Processes: forking a child that runs a closure, waiting with a deadline, killing, process
//! groups, a page shared with children, and signal handlers. Through glibc's wrappers (its `fork`
//! keeps its own state consistent in the child).

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::sys::{EINTR, Errno};

unsafe extern "C" {
    fn fork() -> i32;
    fn _exit(code: i32) -> !;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    #[link_name = "kill"]
    fn kill_raw(pid: i32, sig: i32) -> i32;
    #[link_name = "pause"]
    fn pause_raw() -> i32;
    fn setpgid(pid: i32, pgid: i32) -> i32;
    fn getppid() -> i32;
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
    fn sigaction(sig: i32, act: *const SigAction, old: *mut SigAction) -> i32;
}

/// `SIGINT`.
pub const SIGINT: i32 = 2;
/// `SIGKILL`.
pub const SIGKILL: i32 = 9;
/// `SIGTERM`.
pub const SIGTERM: i32 = 15;
/// `WNOHANG`.
const WNOHANG: i32 = 1;
/// `PR_SET_PDEATHSIG`.
const PR_SET_PDEATHSIG: i32 = 1;
/// `PROT_READ | PROT_WRITE`.
pub const PROT_RW: i32 = 0x1 | 0x2;
/// `MAP_SHARED`.
const MAP_SHARED: i32 = 0x01;
/// `MAP_PRIVATE`.
pub const MAP_PRIVATE: i32 = 0x02;
/// `MAP_ANONYMOUS`.
pub const MAP_ANONYMOUS: i32 = 0x20;
/// `MAP_NORESERVE`.
pub const MAP_NORESERVE: i32 = 0x4000;
/// `SA_RESTART`.
const SA_RESTART: i32 = 0x1000_0000;

/// Exits the process at once: no destructors, no stdio flush (a forked child must not flush the
/// parent's buffered output a second time).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process; nothing runs after it.
    unsafe { _exit(code) }
}

/// Forks; the child runs `f` and exits with what it returns (255 if it panicked), never returning
/// into the caller. The parent gets the child's pid.
pub fn spawn(f: impl FnOnce() -> i32) -> Result<i32, Errno> {
    // SAFETY: the probe is single-threaded, so the child may allocate; it never returns from here.
    let pid = unsafe { fork() };
    match pid {
        -1 => Err(Errno::last()),
        0 => exit_now(panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(255)),
        pid => Ok(pid),
    }
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It outlived the deadline and was killed with SIGKILL.
    TimedOut,
    /// `waitpid` failed (it was not our child).
    Lost(Errno),
}

/// Decodes a `waitpid` status.
fn decode(status: i32) -> End {
    match status & 0x7f {
        0 => End::Exited((status >> 8) & 0xff),
        sig => End::Signaled(sig),
    }
}

/// Waits for child `pid` at most `limit`; kills and reaps it past that.
pub fn wait(pid: i32, limit: Duration) -> End {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_micros(100);
    loop {
        let mut status = 0;
        // SAFETY: `status` is a writable i32.
        match unsafe { waitpid(pid, &mut status, WNOHANG) } {
            0 if Instant::now() >= deadline => {
                kill(pid, SIGKILL);
                let _ = reap(pid);
                return End::TimedOut;
            }
            0 => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(10));
            }
            -1 if Errno::last() == EINTR => {}
            -1 => return End::Lost(Errno::last()),
            _ => return decode(status),
        }
    }
}

/// Blocks until child `pid` (or, with a negative pid, any child in that process group) ends.
pub fn reap(pid: i32) -> Result<End, Errno> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a writable i32.
        match unsafe { waitpid(pid, &mut status, 0) } {
            -1 if Errno::last() == EINTR => {}
            -1 => return Err(Errno::last()),
            _ => return Ok(decode(status)),
        }
    }
}

/// Reaps every child that has already ended, without blocking; returns how many.
pub fn reap_ended() -> usize {
    let mut n = 0;
    let mut status = 0;
    // SAFETY: `status` is a writable i32.
    while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {
        n += 1;
    }
    n
}

/// `kill(pid, sig)`; a negative pid signals the process group.
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: integer arguments only.
    unsafe { kill_raw(pid, sig) == 0 }
}

/// Sleeps until a signal arrives, forever.
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: pause takes no arguments.
        unsafe { pause_raw() };
    }
}

/// `setpgid(pid, pgid)` (0 for the caller / its own pid).
pub fn set_process_group(pid: i32, pgid: i32) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    match unsafe { setpgid(pid, pgid) } {
        0 => Ok(()),
        _ => Err(Errno::last()),
    }
}

/// Asks for SIGKILL when the parent dies, and dies at once if it already has (the parent being
/// `parent` no longer): a child that must not outlive its parent.
pub fn die_with_parent(parent: i32) {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; the other arguments are unused.
    unsafe { prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0) };
    // SAFETY: getppid takes no arguments.
    if unsafe { getppid() } != parent {
        exit_now(0);
    }
}

/// `mmap(NULL, len, prot, flags, -1, 0)` of anonymous memory.
pub fn map_anonymous(len: usize, flags: i32) -> Result<*mut u8, Errno> {
    // SAFETY: a fresh anonymous mapping chosen by the kernel; no existing memory is touched.
    let p = unsafe { mmap(std::ptr::null_mut(), len, PROT_RW, flags, -1, 0) };
    if p as isize == -1 {
        Err(Errno::last())
    } else {
        Ok(p)
    }
}

/// One page of counters shared with forked children (`MAP_SHARED`): what they report back.
pub struct Shared {
    /// The page.
    page: *mut AtomicU64,
}

/// The number of counters in a [`Shared`] page.
const SLOTS: usize = 4096 / 8;

impl Shared {
    /// Maps a zeroed shared page.
    pub fn new() -> Result<Self, Errno> {
        let page = map_anonymous(4096, MAP_SHARED | MAP_ANONYMOUS)?;
        Ok(Shared { page: page.cast() })
    }

    /// Counter `i` (`i < 512`).
    pub fn slot(&self, i: usize) -> &AtomicU64 {
        assert!(i < SLOTS, "shared slot {i} out of range");
        // SAFETY: the page is mapped for our lifetime, 8-byte aligned, zero-initialised (a valid
        // AtomicU64), and `i` is in range.
        unsafe { &*self.page.add(i) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in `new`; no reference to it outlives `self`.
        unsafe { munmap(self.page.cast(), 4096) };
    }
}

/// glibc's x86-64 `struct sigaction`.
#[repr(C)]
struct SigAction {
    /// `sa_handler`.
    handler: usize,
    /// `sa_mask` (1024 bits).
    mask: [u64; 16],
    /// `sa_flags`.
    flags: i32,
    /// `sa_restorer` (glibc fills it in).
    restorer: usize,
}

/// Installs `handler` for `sig` (with `SA_RESTART`, nothing masked).
pub fn on_signal(sig: i32, handler: extern "C" fn(i32)) -> Result<(), Errno> {
    let act = SigAction {
        handler: handler as usize,
        mask: [0; 16],
        flags: SA_RESTART,
        restorer: 0,
    };
    // SAFETY: `act` is a valid glibc `struct sigaction`; the old action is not asked for.
    match unsafe { sigaction(sig, &act, std::ptr::null_mut()) } {
        0 => Ok(()),
        _ => Err(Errno::last()),
    }
}
