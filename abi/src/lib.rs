//! The few numbers the host and the guest must agree on.
//!
//! `moat-vmm` (host), the `vm` backend (host) and `moat-agent` (guest, PID 1) are built separately and
//! meet only at run time. Everything they must agree on without negotiating lives here, in one small
//! crate with no dependencies, so that a change on one side cannot silently miss the other.

#![no_std]

/// The x86 I/O port of the VMM's boot-timer device.
///
/// The agent writes [`BOOT_READY_MAGIC`] to this port (one byte, `outb`) once it is ready to serve
/// requests; the VMM records the time since its own process start. Port 0x450 is not used by any
/// legacy PC device, so a VMM without the device (e.g. QEMU) simply ignores the write.
pub const BOOT_TIMER_PORT: u16 = 0x0450;

/// The byte the agent writes to [`BOOT_TIMER_PORT`] to say "ready".
pub const BOOT_READY_MAGIC: u8 = 0x7b;

/// The byte the agent writes to [`BOOT_TIMER_PORT`] right before it resets the VM on purpose.
///
/// The guest has no ACPI, so "power off" is a reset: the agent calls `reboot(LINUX_REBOOT_CMD_RESTART)`
/// and the guest command line has `reboot=k`, so the kernel pulses the i8042 reset line (port 0x64,
/// value 0xfe). moat-vmm's i8042 turns that into the end of the VM; QEMU microvm does the same given
/// `-device i8042 -no-reboot`. A kernel panic (`panic=-1`) resets the VM the same way, so a VMM tells
/// a clean power-off from a crash by this byte: a reset after it is a power-off (exit 0), a reset
/// without it means the guest failed (exit non-zero).
pub const BOOT_POWEROFF_MAGIC: u8 = 0x7c;

/// The line the agent prints on the serial console when it is ready (followed by a newline).
///
/// Test harnesses and reference boots (QEMU) that have no boot-timer device wait for this line.
pub const READY_LINE: &str = "moat-agent: ready";

/// The vsock port the agent's RPC server listens on inside the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The guest's vsock context id (CID). 0, 1 and 2 are reserved (hypervisor, local, host).
pub const GUEST_CID: u64 = 3;

/// Kernel command-line keys the agent reads (`key=value`).
pub mod cmdline {
    /// The guest's hostname.
    pub const HOSTNAME: &str = "moat.hostname";
    /// Wall-clock time at boot, in seconds since the Unix epoch (the guest has no RTC driver).
    pub const CLOCK: &str = "moat.clock";
    /// Log verbosity of the agent (`error`, `warn`, `info`, `debug`, `trace`).
    pub const LOG: &str = "moat.log";
    /// A self-test the agent runs once it is ready, then powers the VM off (see [`super::selftest`]).
    pub const SELFTEST: &str = "moat.selftest";
}

/// Self-tests for reference boots and VMM tests: `moat.selftest=<name>` on the kernel command line.
pub mod selftest {
    /// Print the guest kernel's release (`uname -r`) on the console, then power off.
    pub const UNAME: &str = "uname";
    /// The console line that answers [`UNAME`] starts with this; the release follows, then a newline.
    pub const UNAME_LINE_PREFIX: &str = "moat-agent: uname -r: ";
}
