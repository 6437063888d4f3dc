//! The QEMU command line of L1: a TCG machine whose emulated AMD CPU has SVM and nested paging.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::script::Share;

/// The environment variable naming the QEMU binary (default `qemu-system-x86_64` from `PATH`).
pub const QEMU_ENV: &str = "MOAT_RIG_QEMU";

/// The QEMU binary to run.
pub fn binary() -> OsString {
    std::env::var_os(QEMU_ENV)
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| OsString::from("qemu-system-x86_64"))
}

/// The environment variable with further kernel arguments for L1 (for debugging the rig).
pub const KERNEL_ARGS_ENV: &str = "MOAT_RIG_KERNEL_ARGS";

/// Kernel command line of L1. `panic=-1` with `-no-reboot` turns a panic into QEMU exiting; `oops=panic`
/// makes an oops do the same instead of leaving a half-broken L1; the RTC probe costs 3.5 s under TCG.
pub const CMDLINE: &str = "console=ttyS0 rdinit=/init panic=-1 oops=panic loglevel=7 \
    initcall_blacklist=cmos_init i8042.noaux i8042.nokbd i8042.nopnp 8250.nr_uarts=1 \
    tsc=reliable no_timer_check";

/// Everything that varies between runs.
#[derive(Clone, Debug)]
pub struct Machine {
    /// `-cpu` model (`EPYC`: AMD with SVM and NPT, which TCG emulates).
    pub cpu: String,
    /// vCPUs.
    pub smp: u32,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// `vmlinux` or `bzImage`.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Where the serial console goes.
    pub console_log: PathBuf,
    /// Log everything on the console (`loglevel=7`), not only warnings (`loglevel=4`, faster).
    pub verbose: bool,
    /// The writable scratch share.
    pub scratch: PathBuf,
    /// Further writable shares.
    pub rw: Vec<Share>,
    /// Unix sockets moat-rig listens on for the ports `moat.ctl`, `moat.out`, `moat.err`.
    pub ctl_sock: PathBuf,
    /// See `ctl_sock`.
    pub out_sock: PathBuf,
    /// See `ctl_sock`.
    pub err_sock: PathBuf,
}

/// QEMU's option syntax: a `,` inside a value is written `,,`.
fn esc(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

impl Machine {
    /// The arguments after the binary name.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-M",
            "pc",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-net",
            "none",
        ]
        .map(String::from)
        .to_vec();
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        push("-cpu", self.cpu.clone());
        push("-smp", self.smp.to_string());
        push("-m", format!("{}M", self.mem_mib));
        push("-kernel", self.kernel.to_string_lossy().into_owned());
        push("-initrd", self.initrd.to_string_lossy().into_owned());
        let loglevel = if self.verbose { 7 } else { 4 };
        let mut cmdline = format!("{CMDLINE} loglevel={loglevel}");
        if let Some(extra) = std::env::var(KERNEL_ARGS_ENV)
            .ok()
            .filter(|a| !a.is_empty())
        {
            cmdline = format!("{cmdline} {extra}");
        }
        push("-append", cmdline);
        push(
            "-chardev",
            format!("file,id=con,path={}", esc(&self.console_log)),
        );
        push("-serial", "chardev:con".into());
        push(
            "-virtfs",
            "local,path=/,mount_tag=moat.root,security_model=none,readonly=on,multidevs=remap"
                .into(),
        );
        push(
            "-virtfs",
            format!(
                "local,path={},mount_tag=moat.scratch,security_model=none,multidevs=remap",
                esc(&self.scratch)
            ),
        );
        for share in &self.rw {
            push(
                "-virtfs",
                format!(
                    "local,path={},mount_tag={},security_model=none,multidevs=remap",
                    esc(&share.path),
                    share.tag
                ),
            );
        }
        push("-device", "virtio-serial-pci,id=ser".into());
        for (nr, (name, sock)) in [
            ("ctl", &self.ctl_sock),
            ("out", &self.out_sock),
            ("err", &self.err_sock),
        ]
        .into_iter()
        .enumerate()
        {
            push("-chardev", format!("socket,id={name},path={}", esc(sock)));
            push(
                "-device",
                format!(
                    "virtserialport,bus=ser.0,nr={},chardev={name},name=moat.{name}",
                    nr + 1
                ),
            );
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_escape_commas_and_wire_the_ports() {
        let m = Machine {
            cpu: "EPYC".into(),
            smp: 2,
            mem_mib: 2048,
            kernel: "/k/vmlinux".into(),
            initrd: "/k/i.cpio".into(),
            console_log: "/t/con,sole.log".into(),
            verbose: false,
            scratch: "/t/scratch".into(),
            rw: vec![Share {
                tag: "moat.rw0".into(),
                path: "/cache".into(),
            }],
            ctl_sock: "/t/ctl".into(),
            out_sock: "/t/out".into(),
            err_sock: "/t/err".into(),
        };
        let args = m.args().join(" ");
        assert!(args.contains("path=/t/con,,sole.log"), "{args}");
        assert!(args.contains("-smp 2 -m 2048M"), "{args}");
        assert!(args.contains("mount_tag=moat.rw0"), "{args}");
        assert!(args.contains("nr=3,chardev=err,name=moat.err"), "{args}");
        assert!(args.contains("readonly=on"), "{args}");
    }
}
