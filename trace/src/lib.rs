//! moat's trace wall: a ptrace supervisor that polices the system calls a policy names.
//!
//! The workload runs in namespaces as with the ns wall; a seccomp filter installed last, just
//! before its `execve`, returns `SECCOMP_RET_TRACE` for the calls the policy polices, so every
//! other call runs at native speed and the supervisor ([`supervisor`]) decides the rest: allow,
//! deny with an errno, kill, log. It fails closed: if the supervisor dies, the kernel kills every
//! tracee (`PTRACE_O_EXITKILL`); the filter refuses the calls that would slip past it; and the path
//! a call names is copied into memory the workload cannot write before the call goes on, so a
//! racing thread cannot swap it after the check (see `docs/threat-model.md`).

pub mod audit;
pub mod bpf;
pub mod launch;
pub mod policy;
pub mod ptrace;
pub mod region;
mod resolve;
pub mod supervisor;
mod sys;
pub mod syscalls;

pub use policy::Policy;
