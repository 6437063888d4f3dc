//! OCI `linux.seccomp` profiles compiled to classic BPF for `seccomp(2)`.
//!
//! The argument comparisons and the `sock_filter` type come from `seccompiler` (Firecracker's
//! compiler). The dispatch on the syscall number is a binary search tree built here, because an OCI
//! profile gives each rule its own action (seccompiler's `SeccompFilter` has one match action) and
//! because a profile allowing ~370 syscalls should cost a handful of comparisons per syscall, not a
//! linear walk.
//!
//! Semantics follow runc + libseccomp:
//! - rules whose action equals the default action are dropped (they change nothing);
//! - several conditions in one rule are ANDed, except when they name the same argument twice, in
//!   which case runc adds one rule per condition (so they are ORed) — we do the same;
//! - for one syscall, conditional rules are tried in profile order before an unconditional one;
//! - `SCMP_CMP_MASKED_EQ` is `(arg & value) == valueTwo`, on the full 64-bit argument;
//! - syscall names this kernel table does not know are skipped with a debug log (profiles name
//!   syscalls of other architectures and of newer kernels);
//! - architectures: the filter is for x86_64. An i386 (`SCMP_ARCH_X86`) or x32 (`SCMP_ARCH_X32`)
//!   entry makes those ABIs get the default action (their numbers differ and are not compiled);
//!   without the entry they are killed (libseccomp's bad-architecture action). Other
//!   architectures are ignored.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule, sock_filter,
};

use crate::error::{Error, Result};

mod table;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;

/// A compiled profile, ready for `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The BPF program.
    pub program: BpfProgram,
    /// `SECCOMP_FILTER_FLAG_*` bits from the profile's `flags`.
    pub flags: u32,
}

/// The x86_64 number of a syscall, if this table knows the name.
pub fn syscall_number(name: &str) -> Option<u32> {
    table::X86_64
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| table::X86_64[i].1)
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;
const BPF_MAXINSNS: usize = 4096;

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The kernel return value for an OCI action.
fn action_value(field: &str, action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    const RET_DATA: u32 = 0xffff;
    let errno = errno.unwrap_or(libc::EPERM as u32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => 0,
        LinuxSeccompAction::ScmpActKillProcess => SECCOMP_RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => 0x0003_0000,
        LinuxSeccompAction::ScmpActErrno => 0x0005_0000 | (errno & RET_DATA),
        LinuxSeccompAction::ScmpActTrace => 0x7ff0_0000 | (errno & RET_DATA),
        LinuxSeccompAction::ScmpActLog => 0x7ffc_0000,
        LinuxSeccompAction::ScmpActAllow => 0x7fff_0000,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::spec(
                field,
                "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which moat does not \
                 support: use SCMP_ACT_ERRNO or SCMP_ACT_TRACE instead",
            ));
        }
    })
}

/// One compiled rule of one syscall: optional argument conditions and the action's return value.
struct Rule {
    conditions: Option<SeccompRule>,
    ret: u32,
}

fn condition(
    field: &str,
    arg: &oci_spec::runtime::LinuxSeccompArg,
) -> Result<Option<SeccompCondition>> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| {
            Error::spec(
                field,
                format!("index {} is not an argument (0 to 5)", arg.index()),
            )
        })?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (mask, want) = (arg.value(), arg.value_two().unwrap_or(0));
            if want & !mask != 0 {
                // (arg & mask) can never equal a value with bits outside the mask.
                return Ok(None);
            }
            (SeccompCmpOp::MaskedEq(mask), want)
        }
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map(Some)
        .map_err(|e| Error::spec(field, e.to_string()))
}

/// The rules one OCI syscall entry gives each of its syscalls (several when runc would split it).
fn entry_rules(
    field: &str,
    entry: &oci_spec::runtime::LinuxSyscall,
    ret: u32,
) -> Result<Vec<Rule>> {
    let args = entry.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Ok(vec![Rule {
            conditions: None,
            ret,
        }]);
    }
    let mut conds = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        match condition(&format!("{field}.args[{i}]"), arg)? {
            Some(c) => conds.push((arg.index(), c)),
            None => {
                tracing::debug!(
                    field,
                    "seccomp rule can never match (valueTwo outside the mask); skipped"
                );
                return Ok(Vec::new());
            }
        }
    }
    let mut indices: Vec<usize> = conds.iter().map(|(i, _)| *i).collect();
    indices.sort_unstable();
    indices.dedup();
    let groups: Vec<Vec<SeccompCondition>> = if indices.len() == conds.len() {
        vec![conds.into_iter().map(|(_, c)| c).collect()]
    } else {
        conds.into_iter().map(|(_, c)| vec![c]).collect()
    };
    groups
        .into_iter()
        .map(|g| {
            Ok(Rule {
                conditions: Some(
                    SeccompRule::new(g).map_err(|e| Error::spec(field, e.to_string()))?,
                ),
                ret,
            })
        })
        .collect()
}

/// Compiles `profile` (the spec's `linux.seccomp`) for x86_64.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter> {
    let default = action_value(
        "linux.seccomp.defaultAction",
        profile.default_action(),
        profile.default_errno_ret(),
    )?;
    if profile.listener_path().is_some() {
        return Err(Error::spec(
            "linux.seccomp.listenerPath",
            "seccomp agents (user notification) are not supported by moat: remove listenerPath",
        ));
    }
    let mut flags = 0;
    for f in profile.flags().as_deref().unwrap_or_default() {
        match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags |= SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // TSYNC: the process is single-threaded when the filter goes in. WAIT_KILLABLE_RECV
            // only matters with a listener.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync
            | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {}
        }
    }
    let arches = profile.architectures().as_deref().unwrap_or_default();
    let has = |a: Arch| arches.contains(&a);
    if !arches.is_empty() && !has(Arch::ScmpArchX86_64) && !has(Arch::ScmpArchNative) {
        return Err(Error::spec(
            "linux.seccomp.architectures",
            "the list has no SCMP_ARCH_X86_64 (or SCMP_ARCH_NATIVE) entry, and this host is x86_64: add it",
        ));
    }
    let i386_ret = if has(Arch::ScmpArchX86) {
        default
    } else {
        SECCOMP_RET_KILL_PROCESS
    };
    let x32_ret = if has(Arch::ScmpArchX32) {
        default
    } else {
        SECCOMP_RET_KILL_PROCESS
    };

    // Per syscall: conditional rules in order, then at most one unconditional rule.
    let mut by_nr: BTreeMap<u32, (Vec<Rule>, Option<u32>)> = BTreeMap::new();
    for (i, entry) in profile
        .syscalls()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let ret = action_value(
            &format!("{field}.action"),
            entry.action(),
            entry.errno_ret(),
        )?;
        if ret == default {
            continue;
        }
        let rules = entry_rules(&field, entry, ret)?;
        for name in entry.names() {
            let Some(nr) = syscall_number(name) else {
                tracing::debug!(syscall = %name, "seccomp: syscall unknown on x86_64; rule skipped");
                continue;
            };
            let slot = by_nr.entry(nr).or_default();
            for r in &rules {
                match &r.conditions {
                    Some(c) => slot.0.push(Rule {
                        conditions: Some(c.clone()),
                        ret: r.ret,
                    }),
                    None => {
                        slot.1.get_or_insert(r.ret);
                    }
                }
            }
        }
    }

    let mut program = vec![
        stmt(BPF_LD_W_ABS, 4),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, i386_ret),
        stmt(BPF_LD_W_ABS, 0),
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, x32_ret),
    ];
    let leaves: Vec<(u32, BpfProgram)> = by_nr
        .into_iter()
        .map(|(nr, (conditional, unconditional))| {
            let mut body = Vec::new();
            for rule in conditional {
                if let Some(c) = rule.conditions {
                    body.extend(BpfProgram::from(c));
                    body.push(stmt(BPF_RET_K, rule.ret));
                }
            }
            body.push(stmt(BPF_RET_K, unconditional.unwrap_or(default)));
            (nr, body)
        })
        .collect();
    if leaves.is_empty() {
        program.push(stmt(BPF_RET_K, default));
    } else {
        emit_tree(&leaves, default, &mut program)?;
        // seccompiler's rule code starts with a trampoline jump (used by its own layout, never
        // taken in ours) that points two instructions past the rule's action; the kernel checks
        // every jump target, so the last rule needs an instruction to point at.
        program.push(stmt(BPF_RET_K, default));
    }
    if program.len() > BPF_MAXINSNS {
        return Err(Error::Seccomp(format!(
            "the profile compiles to {} BPF instructions, more than the kernel's limit of {BPF_MAXINSNS}: \
             merge rules or drop conditions",
            program.len()
        )));
    }
    Ok(Filter { program, flags })
}

/// Emits a binary search over `leaves` (sorted by syscall number; the accumulator holds the number).
fn emit_tree(leaves: &[(u32, BpfProgram)], default: u32, out: &mut BpfProgram) -> Result<()> {
    if let [(nr, body)] = leaves {
        out.push(jump(BPF_JMP_JEQ_K, *nr, 1, 0));
        out.push(stmt(BPF_RET_K, default));
        out.extend_from_slice(body);
        return Ok(());
    }
    let (left, right) = leaves.split_at(leaves.len() / 2);
    let mut left_code = Vec::new();
    emit_tree(left, default, &mut left_code)?;
    let skip = u32::try_from(left_code.len())
        .map_err(|_| Error::Seccomp("the profile is too large".into()))?;
    out.push(jump(BPF_JMP_JGE_K, right[0].0, 0, 1));
    out.push(stmt(BPF_JMP_JA, skip));
    out.extend(left_code);
    emit_tree(right, default, out)
}
