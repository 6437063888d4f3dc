//! The reference boot: QEMU `-M microvm` booting moat's guest kernel and initramfs to the agent's
//! ready line, under TCG (anywhere) or KVM (hardware KVM, or inside the KVM rig).
//!
//! It is what moat-vmm is measured against (same kernel, same initramfs, same host), and the test
//! that the guest artifacts work at all. The guest runs the `uname` self-test and powers off, so one
//! [`QemuBoot::run`] is a whole life: process start, agent ready, the guest's own `uname -r`, exit.
//!
//! The machine is `-M microvm,acpi=off`: the guest kernel has no ACPI, and with ACPI off QEMU lists
//! virtio-mmio devices on the kernel command line (`virtio_mmio.device=`) instead of in ACPI tables.
//!
//! Power-off under QEMU: microvm has no i8042 of its own, so the command adds `-device i8042`; the
//! agent's reset (`reboot=k`, see [`crate::guest::BASE_CMDLINE`]) then reaches it and `-no-reboot`
//! turns the reset into QEMU exiting with status 0.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use moat_abi::{READY_LINE, selftest};

/// The QEMU binary (`$MOAT_QEMU`, else `qemu-system-x86_64` from `PATH`).
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("MOAT_QEMU")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from)
}

/// How the guest's CPU is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's software emulation: works on any host, slow.
    Tcg,
    /// KVM (`/dev/kvm` must be hardware KVM or the rig's nested KVM, not PVM).
    Kvm,
}

/// Errors of a reference boot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// QEMU could not be started.
    #[error(
        "cannot start {qemu}: {source} (install it: apt-get install qemu-system-x86, or run scripts/deps.sh)"
    )]
    Spawn {
        /// The binary.
        qemu: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The guest did not finish in time; QEMU was killed.
    #[error("the guest did not power off within {timeout:?} (ready: {ready}); console:\n{console}")]
    Timeout {
        /// The limit.
        timeout: Duration,
        /// Whether the ready line had been seen.
        ready: bool,
        /// What the guest printed.
        console: String,
    },
    /// Waiting for QEMU failed.
    #[error("waiting for qemu: {0}")]
    Wait(std::io::Error),
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// One reference boot's settings.
#[derive(Clone, Debug)]
pub struct QemuBoot {
    /// CPU emulation.
    pub accel: Accel,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Added to [`crate::guest::BASE_CMDLINE`] and `moat.selftest=uname`.
    pub extra_cmdline: String,
    /// How long the whole life may take before QEMU is killed.
    pub timeout: Duration,
}

impl QemuBoot {
    /// 256 MiB, 1 vCPU, nothing extra, 120 s.
    pub fn new(accel: Accel) -> Self {
        Self {
            accel,
            mem_mib: 256,
            cpus: 1,
            extra_cmdline: String::new(),
            timeout: Duration::from_secs(120),
        }
    }

    /// The kernel command line the guest gets.
    pub fn cmdline(&self) -> String {
        let mut c = format!(
            "{} {}={}",
            crate::guest::BASE_CMDLINE,
            moat_abi::cmdline::SELFTEST,
            selftest::UNAME
        );
        if !self.extra_cmdline.is_empty() {
            c.push(' ');
            c.push_str(&self.extra_cmdline);
        }
        c
    }

    /// The QEMU command (serial console on stdout).
    pub fn command(&self, kernel: &Path, initramfs: &Path) -> Command {
        let mut cmd = Command::new(qemu_binary());
        let (accel, cpu) = match self.accel {
            Accel::Tcg => ("tcg", "max"),
            Accel::Kvm => ("kvm", "host"),
        };
        cmd.args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-accel",
            accel,
            "-cpu",
            cpu,
        ])
        .args([
            "-m",
            &self.mem_mib.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .args(["-no-reboot", "-device", "i8042"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(self.cmdline());
        cmd
    }

    /// Boots, waits for the guest to power off (or kills it at the timeout), and reports.
    pub fn run(&self, kernel: &Path, initramfs: &Path) -> Result<BootReport> {
        let mut cmd = self.command(kernel, initramfs);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            qemu: qemu_binary(),
            source,
        })?;
        let guard = KillOnDrop(&mut child);
        let (tx, rx) = mpsc::channel();
        if let Some(out) = guard.0.stdout.take() {
            std::thread::spawn(move || {
                let mut out = BufReader::new(out);
                let mut buf = Vec::new();
                // Bytes, not str lines: a guest may print anything.
                while matches!(out.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    buf.clear();
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        let mut stderr = guard.0.stderr.take();
        let mut report = BootReport::default();
        let deadline = start + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((at, line)) => report.line(start, at, line.trim_end_matches(['\r', '\n'])),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(self.timed_out(report)),
            }
        }
        // The console closed: QEMU is exiting. Still bounded by the deadline.
        let status = loop {
            if let Some(status) = guard.0.try_wait().map_err(Error::Wait)? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(report));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        report.exited = Some(start.elapsed());
        report.status = Some(status);
        if let Some(mut e) = stderr.take() {
            let _ = e.read_to_string(&mut report.qemu_stderr);
        }
        Ok(report)
    }
}

impl QemuBoot {
    fn timed_out(&self, report: BootReport) -> Error {
        Error::Timeout {
            timeout: self.timeout,
            ready: report.ready.is_some(),
            console: report.console,
        }
    }
}

/// Kills and reaps QEMU if the boot is abandoned (timeout, panic).
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What one reference boot showed.
#[derive(Debug, Default)]
pub struct BootReport {
    /// Process start to the agent's ready line.
    pub ready: Option<Duration>,
    /// Process start to QEMU's exit.
    pub exited: Option<Duration>,
    /// QEMU's exit status (0 after a clean power-off).
    pub status: Option<ExitStatus>,
    /// The guest's kernel release, as its agent reported it.
    pub uname: Option<String>,
    /// Everything the guest printed on its console.
    pub console: String,
    /// QEMU's own error output.
    pub qemu_stderr: String,
}

impl BootReport {
    fn line(&mut self, start: Instant, at: Instant, line: &str) {
        // `contains`, not equality: a kernel message may land on the same console line.
        if self.ready.is_none() && line.contains(READY_LINE) {
            self.ready = Some(at - start);
        }
        if let Some((_, release)) = line.split_once(selftest::UNAME_LINE_PREFIX) {
            self.uname = Some(release.trim().to_string());
        }
        self.console.push_str(line);
        self.console.push('\n');
    }

    /// Whether the guest became ready, reported its release and powered off cleanly.
    pub fn clean(&self) -> bool {
        self.ready.is_some() && self.uname.is_some() && self.status.is_some_and(|s| s.success())
    }
}

/// The median of some durations (the lower middle for an even count); `None` for none.
pub fn median(mut times: Vec<Duration>) -> Option<Duration> {
    times.sort();
    let mid = times.len().checked_sub(1)? / 2;
    times.get(mid).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_the_selftest_and_power_off_path() {
        let mut b = QemuBoot::new(Accel::Kvm);
        b.extra_cmdline = "moat.log=debug".into();
        let c = b.cmdline();
        assert!(c.contains("reboot=k") && c.contains("console=ttyS0"), "{c}");
        assert!(c.ends_with("moat.selftest=uname moat.log=debug"), "{c}");
        let args: Vec<String> = b
            .command(Path::new("/k"), Path::new("/i"))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-accel kvm",
            "-cpu host",
            "-no-reboot",
            "-device i8042",
            "-kernel /k",
            "-initrd /i",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
    }

    #[test]
    fn report_reads_the_console() {
        let mut r = BootReport::default();
        let t0 = Instant::now();
        r.line(
            t0,
            t0 + Duration::from_millis(5),
            "Run /init as init process",
        );
        r.line(t0, t0 + Duration::from_millis(9), READY_LINE);
        r.line(
            t0,
            t0 + Duration::from_millis(12),
            &format!("{}6.12.117", selftest::UNAME_LINE_PREFIX),
        );
        assert_eq!(r.ready, Some(Duration::from_millis(9)));
        assert_eq!(r.uname.as_deref(), Some("6.12.117"));
        assert!(!r.clean(), "no exit status yet");
    }

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(median(vec![ms(4), ms(1), ms(2), ms(3)]), Some(ms(2)));
    }
}
