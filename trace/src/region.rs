//! The pinned-argument region: memory in each traced process that the workload can read but never
//! write, replace or unmap, where the supervisor copies every pointer argument it has checked.
//!
//! Why: a checked path must be the path the kernel then uses. If the supervisor checked the
//! workload's own buffer, another thread (or another process sharing that memory) could rewrite it
//! between the check and the kernel's copy. So the supervisor copies the checked bytes into a slot
//! of this region and points the argument register at the copy.
//!
//! How it is made unwritable, right after every `execve` (the process then has one thread and a
//! private descriptor table), by calls injected into the stopped tracee:
//! 1. the tracee creates a memfd; the supervisor takes a duplicate (`pidfd_getfd`), maps it
//!    read-write for itself, then seals it (`F_SEAL_FUTURE_WRITE | SHRINK | GROW | SEAL`): no
//!    later `write()` or writable shared mapping of it can exist, and it cannot shrink;
//! 2. the tracee maps it `PROT_READ`, `MAP_SHARED` (so `mprotect` cannot add write, and
//!    `/proc/self/mem` cannot force a write: that only works on private mappings);
//! 3. the tracee `mseal`s that mapping (Linux >= 6.10): it can no longer be unmapped, remapped,
//!    mapped over or `mprotect`ed;
//! 4. the tracee closes its memfd descriptor.
//!
//! Children made by `fork` inherit the mapping; the supervisor checks that they really did (a
//! workload could `madvise(MADV_DONTFORK)` it) before trusting it in the child.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::ptrace;
use crate::sys;

/// One slot: two paths and a small struct (`open_how`, a socket address).
pub const SLOT_SIZE: u64 = 3 * 4096;
/// Offset of the second path in a slot.
pub const SLOT_PATH2: u64 = 4096;
/// Offset of the small struct in a slot.
pub const SLOT_MISC: u64 = 8192;
/// Slots per region: one per thread that has a checked call in flight.
pub const SLOTS: u64 = 1024;
const SIZE: u64 = SLOT_SIZE * SLOTS;

/// Why a region could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tracee died meanwhile.
    #[error("the process exited while its pinned-argument region was set up")]
    Gone,
    /// A call injected into the tracee failed.
    #[error("{call} in the tracee failed: {}", io::Error::from_raw_os_error(*.errno))]
    Tracee {
        /// Which call.
        call: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// A call of the supervisor's own failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// A region: the supervisor's writable view and where the tracees see it.
#[derive(Debug)]
pub struct Region {
    memfd: OwnedFd,
    local: *mut u8,
    /// The address of the region in the tracees that share it.
    pub remote: u64,
    free: RefCell<Vec<u32>>,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this Region made and owns.
        unsafe { libc::munmap(self.local.cast(), SIZE as usize) };
    }
}

impl Region {
    /// Takes a free slot, if any.
    pub fn take_slot(&self) -> Option<u32> {
        self.free.borrow_mut().pop()
    }

    /// Gives a slot back.
    pub fn put_slot(&self, slot: u32) {
        self.free.borrow_mut().push(slot);
    }

    /// Copies `bytes` into `slot` at `offset` and returns the tracee's address of the copy.
    /// `bytes` must fit (paths are at most `PATH_MAX`, including the NUL).
    pub fn pin(&self, slot: u32, offset: u64, bytes: &[u8]) -> u64 {
        let limit = if offset == SLOT_MISC {
            SLOT_SIZE - SLOT_MISC
        } else {
            4096
        };
        let n = bytes.len().min(limit as usize);
        let at = u64::from(slot) * SLOT_SIZE + offset;
        // SAFETY: `at + n` lies inside our SIZE-byte mapping (slot < SLOTS, n <= the space left
        // in the slot part), which stays mapped while self lives.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.local.add(at as usize), n);
        }
        self.remote + at
    }

    /// True if process `pid` still has this region mapped where it should be (a child made by
    /// `fork` normally does).
    pub fn mapped_in(&self, pid: i32) -> bool {
        let path = format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.remote,
            self.remote + SIZE
        );
        let (Ok(theirs), Ok(ours)) = (std::fs::metadata(&path), sys::fstat(self.memfd.as_raw_fd()))
        else {
            return false;
        };
        use std::os::unix::fs::MetadataExt;
        theirs.ino() == ours.st_ino && theirs.dev() == ours.st_dev
    }

    /// Sets up a region in `tid`, which must be stopped, be its process's only thread, and have a
    /// private descriptor table (true right after `execve`).
    pub fn create(tid: i32) -> Result<Region, Error> {
        let mut inj = Injection::begin(tid)?;
        let made = make(&mut inj, tid);
        let ended = inj.end();
        let region = made?;
        ended?;
        Ok(region)
    }
}

fn make(inj: &mut Injection, tid: i32) -> Result<Region, Error> {
    // The memfd's name, written below the stack's red zone.
    let name_at = (inj.saved.rsp - 512) & !15;
    sys::write_mem(tid, name_at, b"moat-trace\0").map_err(io_err("writing the memfd name"))?;
    let fd = inj.call(
        "memfd_create",
        libc::SYS_memfd_create,
        [
            name_at,
            u64::from(libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING),
            0,
            0,
            0,
            0,
        ],
    )?;
    let result = share(inj, tid, fd);
    // Close the tracee's descriptor whatever happened.
    let closed = inj.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
    let region = result?;
    closed?;
    Ok(region)
}

fn share(inj: &mut Injection, tid: i32, fd: u64) -> Result<Region, Error> {
    let pidfd = sys::pidfd_open(tid).map_err(io_err("opening a pidfd for the tracee"))?;
    let memfd =
        sys::pidfd_getfd(pidfd.as_fd(), fd as i32).map_err(io_err("taking the tracee's memfd"))?;
    // SAFETY: ftruncate on our own descriptor.
    sys::check(unsafe { libc::ftruncate(memfd.as_raw_fd(), SIZE as i64) } as libc::c_long)
        .map_err(io_err("sizing the memfd"))?;
    // SAFETY: a fresh shared mapping of our memfd; we own it until Region drops it.
    let local = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            memfd.as_raw_fd(),
            0,
        )
    };
    if local == libc::MAP_FAILED {
        return Err(Error::Io {
            context: "mapping the memfd",
            source: io::Error::last_os_error(),
        });
    }
    let mut region = Region {
        memfd,
        local: local.cast(),
        remote: 0,
        free: RefCell::new((0..SLOTS as u32).rev().collect()),
    };
    let seals =
        libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own descriptor.
    let rc = unsafe { libc::fcntl(region.memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    sys::check(rc as libc::c_long).map_err(io_err("sealing the memfd"))?;
    let base = inj.call(
        "mmap",
        libc::SYS_mmap,
        [
            0,
            SIZE,
            libc::PROT_READ as u64,
            libc::MAP_SHARED as u64,
            fd,
            0,
        ],
    )?;
    region.remote = base;
    inj.call("mseal", libc::SYS_mseal, [base, SIZE, 0, 0, 0, 0])?;
    Ok(region)
}

/// One single-step of `tid`, to its `SIGTRAP`; signals that arrive meanwhile are held back in
/// `signals`, seccomp stops (a call the policy names) passed through.
fn step(tid: i32, signals: &mut Vec<i32>) -> Result<(), Error> {
    loop {
        ptrace::singlestep(tid).map_err(|_| Error::Gone)?;
        let (_, stop) = ptrace::wait(tid).map_err(|_| Error::Gone)?;
        match stop {
            ptrace::Stop::Signal(libc::SIGTRAP) => return Ok(()),
            ptrace::Stop::Signal(sig) => signals.push(sig),
            ptrace::Stop::Exited(_) | ptrace::Stop::Signaled(_) => return Err(Error::Gone),
            _ => {}
        }
    }
}

/// System calls run inside a stopped tracee: its registers and the word at its instruction
/// pointer are saved, a `syscall` instruction is written there, and each call is one single-step.
struct Injection {
    tid: i32,
    saved: libc::user_regs_struct,
    word: u64,
    /// Signals that arrived meanwhile, sent again at the end.
    signals: Vec<i32>,
}

impl Injection {
    fn begin(tid: i32) -> Result<Injection, Error> {
        // The tracee is stopped inside execve (its exec event): one single-step lets that call
        // return, which the kernel reports as a step at the user-mode boundary, before the new
        // program's first instruction. Its registers then are the program's starting state.
        let mut signals = Vec::new();
        step(tid, &mut signals)?;
        let saved = ptrace::regs(tid).map_err(io_err("reading the tracee's registers"))?;
        let word = ptrace::peek(tid, saved.rip).map_err(io_err("reading the tracee's code"))?;
        // 0f 05 = syscall.
        ptrace::poke(tid, saved.rip, (word & !0xffff) | 0x050f)
            .map_err(io_err("writing a syscall instruction"))?;
        Ok(Injection {
            tid,
            saved,
            word,
            signals,
        })
    }

    fn call(&mut self, name: &'static str, nr: i64, args: [u64; 6]) -> Result<u64, Error> {
        let mut r = self.saved;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        ptrace::set_regs(self.tid, &r).map_err(io_err("setting the tracee's registers"))?;
        step(self.tid, &mut self.signals)?;
        let r = ptrace::regs(self.tid).map_err(io_err("reading the tracee's registers"))?;
        let rc = r.rax as i64;
        if (-4095..0).contains(&rc) {
            return Err(Error::Tracee {
                call: name,
                errno: -rc as i32,
            });
        }
        Ok(r.rax)
    }

    fn end(self) -> Result<(), Error> {
        ptrace::poke(self.tid, self.saved.rip, self.word)
            .map_err(io_err("restoring the tracee's code"))?;
        ptrace::set_regs(self.tid, &self.saved)
            .map_err(io_err("restoring the tracee's registers"))?;
        for sig in self.signals {
            // The original sender is lost; the signal itself is not.
            let _ = sys::tgkill(self.tid, self.tid, sig);
        }
        Ok(())
    }
}
