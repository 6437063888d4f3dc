//! vCPUs: configured for boot on the main thread, then each run in its own thread, which handles
//! the exits KVM hands to user space (port I/O and MMIO to our devices) and ends the VM on a
//! triple fault or KVM error.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::arch::{cpuid, lapic, msr, regs};
use crate::devices::bus::Bus;
use crate::metrics::Metrics;
use crate::vstate::control::{Control, ExitReason};

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM_CREATE_VCPU failed.
    #[error("KVM could not create vCPU {id}: {source}")]
    Create {
        /// vCPU index.
        id: u32,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// KVM_SET_CPUID2 failed: the CPUID asks for something the host cannot give.
    #[error(
        "KVM rejected the CPUID for vCPU {id} ({source}): the host cannot provide it; check the --cpuid overrides"
    )]
    Cpuid {
        /// vCPU index.
        id: u32,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// Building the CPUID failed.
    #[error(transparent)]
    CpuidTable(#[from] cpuid::Error),
    /// MSRs.
    #[error(transparent)]
    Msr(#[from] msr::Error),
    /// Registers.
    #[error(transparent)]
    Regs(#[from] regs::Error),
    /// LAPIC.
    #[error(transparent)]
    Lapic(#[from] lapic::Error),
}

/// One vCPU, ready to run.
pub struct Vcpu {
    fd: VcpuFd,
    id: u32,
}

/// Buses and shared state a vCPU thread needs.
#[derive(Clone)]
pub struct Context {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Exit and pause control.
    pub control: Arc<Control>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Vcpu {
    /// Creates vCPU `id` and sets its boot state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vm: &VmFd,
        id: u32,
        count: u32,
        supported: &CpuId,
        overrides: &[crate::config::CpuidOverride],
        entry: regs::EntryPoint,
    ) -> Result<Self, Error> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| Error::Create { id, source })?;
        let table = cpuid::for_vcpu(supported, id, count, overrides)?;
        fd.set_cpuid2(&table)
            .map_err(|source| Error::Cpuid { id, source })?;
        msr::setup_msrs(&fd)?;
        regs::setup_regs(&fd, entry)?;
        regs::setup_sregs(&fd, entry.protocol)?;
        regs::setup_fpu(&fd)?;
        lapic::set_lint(&fd)?;
        Ok(Self { fd, id })
    }

    /// The index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Runs until the VM ends. Called on the vCPU's own thread.
    pub fn run(mut self, ctx: &Context) {
        let id = self.id;
        loop {
            if ctx.control.exiting() {
                return;
            }
            if ctx.control.pause_requested() {
                // Tell the guest's kvmclock it was paused, so it does not report soft lockups.
                let _ = self.fd.kvmclock_ctrl();
                ctx.control.park();
                continue;
            }
            match self.fd.run() {
                Ok(exit) => {
                    if let Some(reason) = handle_exit(id, exit, ctx) {
                        ctx.control.request_exit(reason);
                        return;
                    }
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Metrics::inc(&ctx.metrics.exits.intr);
                }
                Err(e) => {
                    ctx.control
                        .request_exit(ExitReason::VmmError(format!("KVM_RUN on vCPU {id}: {e}")));
                    return;
                }
            }
        }
    }
}

/// Handles one exit; `Some` ends the VM.
fn handle_exit(id: u32, exit: VcpuExit<'_>, ctx: &Context) -> Option<ExitReason> {
    let m = &ctx.metrics.exits;
    match exit {
        VcpuExit::IoIn(port, data) => {
            Metrics::inc(&m.io_in);
            if !ctx.pio.read(u64::from(port), data) {
                Metrics::inc(&m.unclaimed_io);
                data.fill(0xff);
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            Metrics::inc(&m.io_out);
            if !ctx.pio.write(u64::from(port), data) {
                Metrics::inc(&m.unclaimed_io);
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            Metrics::inc(&m.mmio_read);
            if !ctx.mmio.read(addr, data) {
                Metrics::inc(&m.unclaimed_mmio);
                data.fill(0);
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            Metrics::inc(&m.mmio_write);
            if !ctx.mmio.write(addr, data) {
                Metrics::inc(&m.unclaimed_mmio);
            }
            None
        }
        VcpuExit::Hlt => {
            Metrics::inc(&m.hlt);
            Some(ExitReason::Halted)
        }
        VcpuExit::Shutdown => {
            Metrics::inc(&m.shutdown);
            Some(ExitReason::GuestCrash(format!(
                "triple fault on vCPU {id} (KVM_EXIT_SHUTDOWN)"
            )))
        }
        VcpuExit::FailEntry(reason, cpu) => {
            Metrics::inc(&m.fail_entry);
            Some(ExitReason::GuestCrash(format!(
                "VM entry failed on vCPU {id} (hardware reason {reason:#x}, host CPU {cpu})"
            )))
        }
        VcpuExit::InternalError => {
            Metrics::inc(&m.internal_error);
            Some(ExitReason::GuestCrash(format!(
                "KVM internal error on vCPU {id}"
            )))
        }
        VcpuExit::SystemEvent(kind, _) => {
            Metrics::inc(&m.system_event);
            match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN | kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                    Some(ExitReason::PowerOff)
                }
                _ => Some(ExitReason::GuestPanic(format!(
                    "system event {kind} on vCPU {id}"
                ))),
            }
        }
        VcpuExit::Intr => {
            Metrics::inc(&m.intr);
            None
        }
        other => {
            Metrics::inc(&m.other);
            Some(ExitReason::GuestCrash(format!(
                "unexpected VM exit on vCPU {id}: {other:?}"
            )))
        }
    }
}

/// The signal that knocks a vCPU thread out of `KVM_RUN` (its handler does nothing).
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler for the kick signal (process-wide, once).
pub fn install_kick_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
        .map_err(std::io::Error::from)
}

/// Marks the first KVM_RUN time.
pub fn note_start(ctx: &Context) {
    let us = ctx.control.started().elapsed().as_micros() as u64;
    let _ = ctx.metrics.vcpu_start_us.compare_exchange(
        0,
        us.max(1),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}
