//! A classic-BPF interpreter for tests: runs compiled filters on made-up syscalls and checks what
//! the kernel's loader checks (jump targets in range, known opcodes, ends in a return).

use seccompiler::sock_filter;

use super::{AUDIT_ARCH_X86_64, BPF_MAXINSNS, syscall_number};

/// Runs `prog` on the x86_64 syscall `name`.
pub(crate) fn run(prog: &[sock_filter], name: &str, args: [u64; 6]) -> u32 {
    validate(prog);
    run_raw(prog, AUDIT_ARCH_X86_64, syscall_number(name).unwrap(), args)
}

/// Checks what the kernel's loader checks.
pub(crate) fn validate(prog: &[sock_filter]) {
    assert!(!prog.is_empty() && prog.len() <= BPF_MAXINSNS);
    for (pc, ins) in prog.iter().enumerate() {
        match ins.code {
            0x05 => assert!(
                pc + 1 + (ins.k as usize) < prog.len(),
                "JA out of range at {pc}"
            ),
            0x15 | 0x25 | 0x35 | 0x45 => {
                assert!(
                    pc + 1 + (ins.jt as usize) < prog.len(),
                    "jt out of range at {pc}"
                );
                assert!(
                    pc + 1 + (ins.jf as usize) < prog.len(),
                    "jf out of range at {pc}"
                );
            }
            0x20 => assert!(ins.k % 4 == 0 && ins.k < 64, "bad load at {pc}"),
            0x06 | 0x54 | 0x01 | 0x00 | 0x02 | 0x61 | 0x87 | 0x07 => {}
            c => panic!("opcode {c:#x} at {pc} not expected"),
        }
    }
    assert_eq!(
        prog.last().unwrap().code,
        0x06,
        "program must end in a return"
    );
}

/// Runs `prog` on a syscall; returns the filter's verdict.
pub(crate) fn run_raw(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u32; 16];
    data[0] = nr;
    data[1] = arch;
    for (i, a) in args.iter().enumerate() {
        data[4 + 2 * i] = *a as u32;
        data[5 + 2 * i] = (*a >> 32) as u32;
    }
    let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0;
    loop {
        let ins = &prog[pc];
        pc += 1;
        match ins.code {
            0x20 => a = data[ins.k as usize / 4],
            0x00 => a = ins.k,
            0x01 => x = ins.k,
            0x02 => mem[ins.k as usize] = a,
            0x61 => x = mem[ins.k as usize],
            0x87 => a = x,
            0x07 => x = a,
            0x54 => a &= ins.k,
            0x05 => pc += ins.k as usize,
            0x15 | 0x25 | 0x35 | 0x45 => {
                let taken = match ins.code {
                    0x15 => a == ins.k,
                    0x25 => a > ins.k,
                    0x35 => a >= ins.k,
                    _ => a & ins.k != 0,
                };
                pc += if taken { ins.jt } else { ins.jf } as usize;
            }
            0x06 => return ins.k,
            c => panic!("opcode {c:#x}"),
        }
    }
}
