//! KVM API smoke test: a VM with one vCPU runs four real-mode instructions that write a byte to an
//! I/O port and halt. It runs directly on this host's `/dev/kvm` (even a PVM one can do this much)
//! and, through the harness, wherever moat's VM tests run (inside the rig on a PVM host).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};

/// Guest-physical address of the code and of the one page of guest memory.
const GUEST_ADDR: u64 = 0x1000;
const PORT: u16 = 0x3f8;
const BYTE: u8 = 0x42;

/// `mov dx, 0x3f8; mov al, 0x42; out dx, al; hlt`
const CODE: [u8; 7] = [0xba, 0xf8, 0x03, 0xb0, BYTE, 0xee, 0xf4];

/// Runs the payload and checks both exits: the port write, then the halt.
fn port_io_then_hlt() {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let size = 0x1000usize;
    // SAFETY: an anonymous private mapping with no address hint; the result is checked below and
    // unmapped at the end, after the VM that uses it is dropped.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(mem, libc::MAP_FAILED, "mmap guest memory");
    // SAFETY: `mem` is a fresh writable mapping of `size` bytes and CODE is shorter than that.
    unsafe { std::ptr::copy_nonoverlapping(CODE.as_ptr(), mem.cast::<u8>(), CODE.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: GUEST_ADDR,
        memory_size: size as u64,
        userspace_addr: mem as u64,
        flags: 0,
    };
    // SAFETY: the region maps memory we own for longer than the VM lives (unmapped after `vm` drops).
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");

    let mut vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = GUEST_ADDR;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();

    match vcpu.run().expect("KVM_RUN (1)") {
        VcpuExit::IoOut(port, data) => {
            assert_eq!(port, PORT);
            assert_eq!(data, [BYTE]);
        }
        other => panic!("first exit should be the port write, got {other:?}"),
    }
    match vcpu.run().expect("KVM_RUN (2)") {
        VcpuExit::Hlt => {}
        other => panic!("second exit should be HLT, got {other:?}"),
    }
    let regs = vcpu.get_regs().unwrap();
    assert_eq!(regs.rip, GUEST_ADDR + CODE.len() as u64, "rip after hlt");
    drop(vcpu);
    drop(vm);
    // SAFETY: `mem` came from mmap with `size` and nothing uses it any more.
    assert_eq!(unsafe { libc::munmap(mem, size) }, 0);
}

/// Directly on this host's `/dev/kvm`, whatever its flavour.
#[test]
fn kvm_smoke_on_this_host() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm does not exist on this host");
        return;
    }
    port_io_then_hlt();
}

/// Where VM tests run: directly on hardware KVM, inside the rig's L1 otherwise.
#[test]
fn kvm_smoke_where_vm_tests_run() {
    moat_rig::harness::run_here_or_in_rig(|| {
        if moat_rig::harness::inside_rig() {
            let probe = moat_host::kvm::probe();
            assert_eq!(
                probe.module.as_deref(),
                Some("kvm_amd"),
                "{}",
                probe.explanation
            );
        }
        port_io_then_hlt();
    });
}
