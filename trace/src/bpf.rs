//! The seccomp filter the workload runs under: classic BPF, built from the policy.
//!
//! It returns `SECCOMP_RET_TRACE` (with [`TRACE_DATA`]) for the calls the supervisor polices and
//! `SECCOMP_RET_ALLOW` for the rest, so unpoliced calls never stop. A binary search over the
//! policed numbers keeps the cost of an allowed call at a dozen instructions. It also answers, on
//! its own and without a stop: `ENOSYS` for other architectures' calls (i386 `int 0x80`, x32),
//! for numbers newer than moat's table (a call moat does not know could take a path it cannot
//! check), and for `clone3` (its flags live in memory the filter cannot read; libc falls back to
//! `clone`, whose namespace flags the filter traps).

use std::io;

use crate::policy::{Action, Policy};
use crate::syscalls::{self, Kind, MAX_NR, NS_FLAGS};

/// The `SECCOMP_RET_DATA` our filter puts on its traps, to tell them from a workload filter's.
pub const TRACE_DATA: u16 = 0x6d74;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_BIT: u32 = 0x4000_0000;

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGT_K: u16 = 0x05 | 0x20;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_TRACE: u32 = libc::SECCOMP_RET_TRACE | TRACE_DATA as u32;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// What the filter does with one policed number.
#[derive(Clone, Copy, Debug)]
enum Block {
    /// Stop for the supervisor.
    Trace,
    /// Stop only if arg 0 has namespace flags (`clone`).
    TraceIfNsFlags,
}

/// A compiled filter program.
#[derive(Clone)]
pub struct Filter(Vec<libc::sock_filter>);

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({} instructions)", self.0.len())
    }
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The numbers the filter traps for `policy`, and how.
fn traps(policy: &Policy) -> Vec<(u32, Block)> {
    let mut out: Vec<(u32, Block)> = Vec::new();
    for (nr, kind) in syscalls::policed() {
        let block = match kind {
            Kind::Clone => Block::TraceIfNsFlags,
            Kind::Socket | Kind::SocketPair if !policy.network.restricts() => continue,
            _ => Block::Trace,
        };
        out.push((nr, block));
    }
    for (nr, rule) in &policy.syscalls {
        if rule.action == Action::Allow {
            continue;
        }
        match out.iter_mut().find(|(n, _)| n == nr) {
            // An explicit action applies to every call, not only those the kind would trap.
            Some(e) => e.1 = Block::Trace,
            None => out.push((*nr, Block::Trace)),
        }
    }
    out.retain(|(nr, _)| Some(*nr) != syscalls::nr("clone3"));
    out.sort_by_key(|(nr, _)| *nr);
    out.dedup_by_key(|(nr, _)| *nr);
    out
}

struct Asm {
    prog: Vec<libc::sock_filter>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn emit(&mut self, i: libc::sock_filter) {
        self.prog.push(i);
    }

    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.prog.len());
    }

    fn ja(&mut self, l: usize) {
        self.fixups.push((self.prog.len(), l));
        self.emit(ins(BPF_JMP_JA, 0, 0, 0));
    }

    fn block(b: Block) -> Vec<libc::sock_filter> {
        match b {
            Block::Trace => vec![ins(BPF_RET_K, 0, 0, RET_TRACE)],
            Block::TraceIfNsFlags => vec![
                ins(BPF_LD_W_ABS, 0, 0, off_arg_lo(0)),
                ins(BPF_JSET_K, 0, 1, NS_FLAGS as u32),
                ins(BPF_RET_K, 0, 0, RET_TRACE),
                ins(BPF_RET_K, 0, 0, RET_ALLOW),
            ],
        }
    }

    /// A binary search over sorted `entries`; the accumulator holds the call number.
    fn tree(&mut self, entries: &[(u32, Block)]) {
        if entries.len() <= 4 {
            for (nr, b) in entries {
                let body = Self::block(*b);
                self.emit(ins(BPF_JEQ_K, 0, body.len() as u8, *nr));
                self.prog.extend(body);
            }
            self.emit(ins(BPF_RET_K, 0, 0, RET_ALLOW));
            return;
        }
        let mid = entries.len() / 2;
        let right = self.label();
        self.emit(ins(BPF_JGE_K, 0, 1, entries[mid].0));
        self.ja(right);
        self.tree(&entries[..mid]);
        self.bind(right);
        self.tree(&entries[mid..]);
    }

    fn finish(mut self) -> Vec<libc::sock_filter> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l].unwrap_or(at + 1);
            self.prog[at].k = (target - at - 1) as u32;
        }
        self.prog
    }
}

impl Filter {
    /// Builds the filter for `policy`.
    pub fn new(policy: &Policy) -> Filter {
        let mut a = Asm {
            prog: Vec::new(),
            labels: Vec::new(),
            fixups: Vec::new(),
        };
        a.emit(ins(BPF_LD_W_ABS, 0, 0, OFF_ARCH));
        a.emit(ins(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64));
        a.emit(ins(BPF_RET_K, 0, 0, RET_ENOSYS));
        a.emit(ins(BPF_LD_W_ABS, 0, 0, OFF_NR));
        a.emit(ins(BPF_JGE_K, 0, 1, X32_BIT));
        a.emit(ins(BPF_RET_K, 0, 0, RET_ENOSYS));
        a.emit(ins(BPF_JGT_K, 0, 1, MAX_NR));
        a.emit(ins(BPF_RET_K, 0, 0, RET_ENOSYS));
        if let Some(clone3) = syscalls::nr("clone3") {
            a.emit(ins(BPF_JEQ_K, 0, 1, clone3));
            a.emit(ins(BPF_RET_K, 0, 0, RET_ENOSYS));
        }
        a.tree(&traps(policy));
        Filter(a.finish())
    }

    /// The instructions, for a sandbox that installs filters itself.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.0
    }

    /// Installs the filter on the calling thread (`no_new_privs` or `CAP_SYS_ADMIN` required).
    pub fn install(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.0.len() as u16,
            filter: self.0.as_ptr().cast_mut(),
        };
        // SAFETY: seccomp(SET_MODE_FILTER) reads `prog`, which points at our instructions; both
        // outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs the program on one call, as the kernel would (for tests and `moat check`).
    pub fn run(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = arch;
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = *a as u32;
            data[5 + 2 * i] = (*a >> 32) as u32;
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        while let Some(i) = self.0.get(pc) {
            pc += 1;
            let cond = |c: bool| if c { i.jt as usize } else { i.jf as usize };
            match i.code {
                BPF_LD_W_ABS => acc = data.get(i.k as usize / 4).copied().unwrap_or(0),
                BPF_JMP_JA => pc += i.k as usize,
                BPF_JEQ_K => pc += cond(acc == i.k),
                BPF_JGT_K => pc += cond(acc > i.k),
                BPF_JGE_K => pc += cond(acc >= i.k),
                BPF_JSET_K => pc += cond(acc & i.k != 0),
                BPF_RET_K => return i.k,
                _ => return libc::SECCOMP_RET_KILL_PROCESS,
            }
        }
        libc::SECCOMP_RET_KILL_PROCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(n: &str) -> u32 {
        syscalls::nr(n).unwrap()
    }

    #[test]
    fn decisions() {
        let p = Policy::builtin().unwrap();
        let f = Filter::new(&p);
        assert!(f.instructions().len() < 400, "{f:?}");
        let run = |n: &str, a0: u64| f.run(AUDIT_ARCH_X86_64, nr(n), [a0, 0, 0, 0, 0, 0]);
        assert_eq!(run("getpid", 0), RET_ALLOW);
        assert_eq!(run("read", 0), RET_ALLOW);
        assert_eq!(run("openat", 0), RET_TRACE);
        assert_eq!(run("execve", 0), RET_TRACE);
        assert_eq!(run("ptrace", 0), RET_TRACE);
        assert_eq!(run("keyctl", 0), RET_TRACE);
        assert_eq!(run("socket", 0), RET_TRACE);
        assert_eq!(run("clone", libc::SIGCHLD as u64), RET_ALLOW);
        assert_eq!(run("clone", libc::CLONE_NEWNS as u64), RET_TRACE);
        assert_eq!(run("clone3", 0), RET_ENOSYS);
        assert_eq!(f.run(AUDIT_ARCH_X86_64, MAX_NR + 1, [0; 6]), RET_ENOSYS);
        assert_eq!(f.run(AUDIT_ARCH_X86_64, X32_BIT | 39, [0; 6]), RET_ENOSYS);
        assert_eq!(f.run(0x4000_0003, 20, [0; 6]), RET_ENOSYS);
        // Every number gets an answer (no fall-off), and only policed ones trap.
        for n in 0..=MAX_NR {
            let r = f.run(AUDIT_ARCH_X86_64, n, [0; 6]);
            assert!(
                r == RET_ALLOW || r == RET_TRACE || r == RET_ENOSYS,
                "{n}: {r:#x}"
            );
            if r == RET_TRACE {
                assert!(
                    syscalls::kind(n).is_some() || p.action(n).is_some(),
                    "{n} traps but nothing polices it"
                );
            }
        }
    }

    #[test]
    fn policy_actions_trap_and_allow_untraps() {
        let p = Policy::parse(
            "[syscalls]\ngetpid = \"log\"\nkeyctl = \"allow\"\n[network]\nraw = true\n",
            "p.toml",
        )
        .unwrap();
        let f = Filter::new(&p);
        let run = |n: &str| f.run(AUDIT_ARCH_X86_64, nr(n), [0; 6]);
        assert_eq!(run("getpid"), RET_TRACE);
        assert_eq!(run("keyctl"), RET_ALLOW);
        assert_eq!(run("socket"), RET_ALLOW);
    }
}
