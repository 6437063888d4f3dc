//! Compiles profiles and runs the BPF through a small classic-BPF interpreter that also checks what
//! the kernel's loader checks (jump targets in range, known opcodes, ends in a return).

use oci_spec::runtime::{
    Arch, LinuxSeccompAction as Act, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator as Op, LinuxSyscallBuilder,
};

use super::*;

use super::tests_support::{run_raw as run, validate};

const ALLOW: u32 = 0x7fff_0000;
const EPERM_RET: u32 = 0x0005_0000 | libc::EPERM as u32;

fn nr(name: &str) -> u32 {
    syscall_number(name).unwrap()
}

fn call(f: &Filter, name: &str, args: [u64; 6]) -> u32 {
    run(&f.program, AUDIT_ARCH_X86_64, nr(name), args)
}

fn rule(names: &[&str], action: Act) -> LinuxSyscallBuilder {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action)
}

fn arg(index: usize, op: Op, value: u64) -> oci_spec::runtime::LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .build()
        .unwrap()
}

#[test]
fn table_is_sorted_and_knows_common_syscalls() {
    assert!(table::X86_64.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(syscall_number("read"), Some(0));
    assert_eq!(syscall_number("getpid"), Some(39));
    assert_eq!(syscall_number("keyctl"), Some(250));
    assert_eq!(syscall_number("clone3"), Some(435));
    assert_eq!(syscall_number("no_such_call"), None);
}

#[test]
fn allow_list_with_errno_default() {
    let p = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActErrno)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(vec![
            rule(
                &["getpid", "read", "write", "exit_group", "no_such_call"],
                Act::ScmpActAllow,
            )
            .build()
            .unwrap(),
        ])
        .build()
        .unwrap();
    let f = compile(&p).unwrap();
    validate(&f.program);
    assert_eq!(call(&f, "getpid", [0; 6]), ALLOW);
    assert_eq!(call(&f, "read", [0; 6]), ALLOW);
    assert_eq!(call(&f, "exit_group", [0; 6]), ALLOW);
    assert_eq!(call(&f, "keyctl", [0; 6]), EPERM_RET);
    assert_eq!(call(&f, "openat", [0; 6]), EPERM_RET);
    // Other architectures are killed; x32 too (not listed).
    assert_eq!(
        run(&f.program, 0x4000_0003, 20, [0; 6]),
        SECCOMP_RET_KILL_PROCESS
    );
    assert_eq!(
        run(&f.program, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 39, [0; 6]),
        SECCOMP_RET_KILL_PROCESS
    );
}

#[test]
fn listed_i386_and_x32_get_the_default_action() {
    let p = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActErrno)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(vec![rule(&["getpid"], Act::ScmpActAllow).build().unwrap()])
        .build()
        .unwrap();
    let f = compile(&p).unwrap();
    assert_eq!(run(&f.program, 0x4000_0003, 20, [0; 6]), EPERM_RET);
    assert_eq!(
        run(&f.program, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 39, [0; 6]),
        EPERM_RET
    );
}

#[test]
fn each_rule_has_its_own_action() {
    let p = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActAllow)
        .syscalls(vec![
            rule(&["clone3"], Act::ScmpActErrno)
                .errno_ret(libc::ENOSYS as u32)
                .build()
                .unwrap(),
            rule(&["keyctl"], Act::ScmpActErrno).build().unwrap(),
            rule(&["ptrace"], Act::ScmpActKill).build().unwrap(),
            rule(&["kexec_load"], Act::ScmpActKillProcess)
                .build()
                .unwrap(),
            rule(&["acct"], Act::ScmpActTrap).build().unwrap(),
            rule(&["openat"], Act::ScmpActTrace)
                .errno_ret(7u32)
                .build()
                .unwrap(),
            rule(&["mkdir"], Act::ScmpActLog).build().unwrap(),
            // Same as the default: dropped.
            rule(&["getpid"], Act::ScmpActAllow).build().unwrap(),
        ])
        .build()
        .unwrap();
    let f = compile(&p).unwrap();
    validate(&f.program);
    assert_eq!(
        call(&f, "clone3", [0; 6]),
        0x0005_0000 | libc::ENOSYS as u32
    );
    assert_eq!(call(&f, "keyctl", [0; 6]), EPERM_RET);
    assert_eq!(call(&f, "ptrace", [0; 6]), 0);
    assert_eq!(call(&f, "kexec_load", [0; 6]), SECCOMP_RET_KILL_PROCESS);
    assert_eq!(call(&f, "acct", [0; 6]), 0x0003_0000);
    assert_eq!(call(&f, "openat", [0; 6]), 0x7ff0_0007);
    assert_eq!(call(&f, "mkdir", [0; 6]), 0x7ffc_0000);
    assert_eq!(call(&f, "getpid", [0; 6]), ALLOW);
    assert_eq!(call(&f, "read", [0; 6]), ALLOW);
}

#[test]
fn argument_conditions() {
    let ns_flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP) as u64;
    let masked = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .op(Op::ScmpCmpMaskedEq)
        .value(ns_flags)
        .value_two(0u64)
        .build()
        .unwrap();
    let p = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActErrno)
        .syscalls(vec![
            rule(&["socket"], Act::ScmpActAllow)
                .args(vec![arg(0, Op::ScmpCmpLt, 38)])
                .build()
                .unwrap(),
            rule(&["socket"], Act::ScmpActAllow)
                .args(vec![arg(0, Op::ScmpCmpEq, 39)])
                .build()
                .unwrap(),
            rule(&["socket"], Act::ScmpActAllow)
                .args(vec![arg(0, Op::ScmpCmpGt, 40)])
                .build()
                .unwrap(),
            rule(&["clone"], Act::ScmpActAllow)
                .args(vec![masked])
                .build()
                .unwrap(),
            // Two conditions on different arguments: AND.
            rule(&["kill"], Act::ScmpActAllow)
                .args(vec![arg(0, Op::ScmpCmpGe, 100), arg(1, Op::ScmpCmpNe, 9)])
                .build()
                .unwrap(),
            // The same argument twice: runc makes two rules, so OR.
            rule(&["personality"], Act::ScmpActAllow)
                .args(vec![
                    arg(0, Op::ScmpCmpEq, 0),
                    arg(0, Op::ScmpCmpEq, 0xffff_ffff),
                ])
                .build()
                .unwrap(),
            // 64-bit comparisons.
            rule(&["lseek"], Act::ScmpActAllow)
                .args(vec![arg(1, Op::ScmpCmpLe, 0x1_0000_0000)])
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let f = compile(&p).unwrap();
    validate(&f.program);
    for (domain, allowed) in [
        (1, true),
        (2, true),
        (37, true),
        (38, false),
        (39, true),
        (40, false),
        (41, true),
    ] {
        let want = if allowed { ALLOW } else { EPERM_RET };
        assert_eq!(
            call(&f, "socket", [domain, 0, 0, 0, 0, 0]),
            want,
            "socket({domain})"
        );
    }
    assert_eq!(
        call(&f, "clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        call(&f, "clone", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
        EPERM_RET
    );
    assert_eq!(
        call(
            &f,
            "clone",
            [(libc::CLONE_NEWNS | libc::CLONE_VM) as u64, 0, 0, 0, 0, 0]
        ),
        EPERM_RET
    );
    assert_eq!(call(&f, "kill", [100, 15, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&f, "kill", [100, 9, 0, 0, 0, 0]), EPERM_RET);
    assert_eq!(call(&f, "kill", [99, 15, 0, 0, 0, 0]), EPERM_RET);
    assert_eq!(call(&f, "personality", [0; 6]), ALLOW);
    assert_eq!(call(&f, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&f, "personality", [8, 0, 0, 0, 0, 0]), EPERM_RET);
    assert_eq!(call(&f, "lseek", [0, 0x1_0000_0000, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&f, "lseek", [0, 0xffff_ffff, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&f, "lseek", [0, 0x1_0000_0001, 0, 0, 0, 0]), EPERM_RET);
    assert_eq!(call(&f, "lseek", [0, 0x2_0000_0000, 0, 0, 0, 0]), EPERM_RET);
}

#[test]
fn flags_and_unsupported_features() {
    let p = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActAllow)
        .flags(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        ])
        .build()
        .unwrap();
    let f = compile(&p).unwrap();
    validate(&f.program);
    assert_eq!(
        f.flags,
        SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW
    );
    assert_eq!(call(&f, "keyctl", [0; 6]), ALLOW);

    let notify = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActAllow)
        .syscalls(vec![rule(&["mount"], Act::ScmpActNotify).build().unwrap()])
        .build()
        .unwrap();
    let err = compile(&notify).unwrap_err().to_string();
    assert!(
        err.contains("linux.seccomp.syscalls[0].action") && err.contains("NOTIFY"),
        "{err}"
    );

    let arm = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchAarch64])
        .build()
        .unwrap();
    let err = compile(&arm).unwrap_err().to_string();
    assert!(err.contains("linux.seccomp.architectures"), "{err}");

    let bad_index = LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActErrno)
        .syscalls(vec![
            rule(&["kill"], Act::ScmpActAllow)
                .args(vec![arg(6, Op::ScmpCmpEq, 1)])
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let err = compile(&bad_index).unwrap_err().to_string();
    assert!(err.contains("linux.seccomp.syscalls[0].args[0]"), "{err}");
}
