//! Per-thread seccomp filters. The filters are data: `resources/seccomp/x86_64.json` lists, per
//! thread kind (`vmm` event loop, `vcpu`, `api`), every syscall it may make with a comment saying
//! why; `build.rs` compiles them to BPF. A thread installs its own filter as it starts, after which
//! any other syscall traps: the VMM prints which one and exits with status 1.

use seccompiler::{BpfProgram, sock_filter};

/// The compiled filters (see `build.rs` for the format).
static COMPILED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp.bin"));

/// Errors installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No filter of that name.
    #[error("no seccomp filter named '{0}' was compiled in")]
    Missing(String),
    /// The kernel refused it.
    #[error("cannot install the '{name}' seccomp filter: {reason}")]
    Install {
        /// Filter name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The thread kinds that have filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread once it runs the device event loop.
    Vmm,
    /// A vCPU thread.
    Vcpu,
    /// The control API thread.
    Api,
}

impl ThreadKind {
    /// The filter's name in the JSON file.
    pub fn name(&self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Api => "api",
        }
    }
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// The compiled program for `name`.
pub fn program(name: &str) -> Option<BpfProgram> {
    let b = COMPILED;
    let mut o = 0usize;
    while o < b.len() {
        let nlen = u32_at(b, o)? as usize;
        let n = b.get(o + 4..o + 4 + nlen)?;
        let count = u32_at(b, o + 4 + nlen)? as usize;
        let start = o + 8 + nlen;
        let end = start + count * 8;
        if n == name.as_bytes() {
            let prog = b
                .get(start..end)?
                .chunks_exact(8)
                .map(|c| sock_filter {
                    code: u16::from_le_bytes([c[0], c[1]]),
                    jt: c[2],
                    jf: c[3],
                    k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                })
                .collect();
            return Some(prog);
        }
        o = end;
    }
    None
}

/// Installs the filter for `kind` on the calling thread.
pub fn apply(kind: ThreadKind) -> Result<(), Error> {
    let prog = program(kind.name()).ok_or_else(|| Error::Missing(kind.name().into()))?;
    seccompiler::apply_filter(&prog).map_err(|e| Error::Install {
        name: kind.name().into(),
        reason: e.to_string(),
    })
}

/// Offset of `si_syscall` in `siginfo_t` on x86_64 (after signo, errno, code, padding and the
/// faulting address).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work here: format the number by hand, write(2), _exit(2).
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS; si_syscall is an int at this
    // offset on x86_64.
    let nr = unsafe {
        std::ptr::read_unaligned((info as *const u8).add(SI_SYSCALL_OFFSET) as *const i32)
    };
    let mut msg = *b"moat-vmm: seccomp filter blocked syscall           \n";
    let mut n = nr.unsigned_abs();
    let mut i = msg.len() - 2;
    loop {
        msg[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 41 {
            break;
        }
        i -= 1;
    }
    // SAFETY: writing a valid buffer to stderr, then ending the process without unwinding.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        libc::_exit(1);
    }
}

/// Installs the SIGSYS handler that reports a blocked syscall (process-wide, before any filter).
pub fn install_sigsys_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_kind_has_a_filter() {
        for k in [ThreadKind::Vmm, ThreadKind::Vcpu, ThreadKind::Api] {
            let p = program(k.name()).unwrap();
            assert!(p.len() > 10, "{} filter is too short", k.name());
        }
        assert!(program("nope").is_none());
    }
}
