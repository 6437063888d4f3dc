//! PID 1's boot duties, in order: leave the initramfs, mount the kernel filesystems, read the command
//! line, set hostname and clock, enable the cgroup controllers, then announce readiness.
//!
//! Why leave the initramfs: `/` of an initramfs boot is `rootfs`, which `pivot_root(2)` cannot move
//! away from, and containers in the guest are set up with `pivot_root`. So, like `switch_root`, the
//! agent mounts a tmpfs, moves it onto `/` and chroots into it before mounting anything else. The
//! agent itself keeps running from memory; nothing else of the initramfs is needed afterwards.

use moat_abi::{BOOT_READY_MAGIC, BOOT_TIMER_PORT, READY_LINE};

use crate::cmdline::{Config, SelfTest};
use crate::sys::{Sys, flags::*};

/// Where the agent mounts the tmpfs that becomes `/`.
pub const NEW_ROOT: &str = "/sysroot";

/// The cgroup v2 controllers enabled for the guest's containers.
pub const CGROUP_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The cgroup v2 mount point.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One mount of the guest's base system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// `source` argument of mount(2).
    pub source: &'static str,
    /// Where it goes (created first, with `dir_mode`).
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// `MS_*` flags.
    pub flags: u64,
    /// Filesystem options.
    pub data: &'static str,
    /// Mode of the mount point directory if it has to be created.
    pub dir_mode: u32,
}

const fn m(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: u64,
    data: &'static str,
) -> MountSpec {
    MountSpec {
        source,
        target,
        fstype,
        flags,
        data,
        dir_mode: 0o755,
    }
}

/// The base mounts, in order (parents first).
pub const MOUNTS: [MountSpec; 8] = [
    m("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC, ""),
    m("sysfs", "/sys", "sysfs", NOSUID | NODEV | NOEXEC, ""),
    m("devtmpfs", "/dev", "devtmpfs", NOSUID, "mode=0755"),
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        NOSUID | NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    ),
    m("shm", "/dev/shm", "tmpfs", NOSUID | NODEV, "mode=1777"),
    m("tmpfs", "/run", "tmpfs", NOSUID | NODEV, "mode=0755"),
    m("tmpfs", "/tmp", "tmpfs", NOSUID | NODEV, "mode=1777"),
    m(
        "cgroup2",
        CGROUP_ROOT,
        "cgroup2",
        NOSUID | NODEV | NOEXEC | RELATIME,
        "nsdelegate",
    ),
];

/// The usual `/dev` symlinks (devtmpfs does not create them).
pub const DEV_LINKS: [(&str, &str); 4] = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// A boot step failed; the guest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This process is not PID 1.
    #[error(
        "moat-agent is the guest's init and must run as PID 1, but it is PID {0}; it is started by the \
         guest kernel from the initramfs moat builds (moat_artifacts::guest), not by hand"
    )]
    NotPid1(u32),
    /// A step of the boot sequence failed.
    #[error("{step}: {source}")]
    Step {
        /// What was being done.
        step: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let step = what.into();
    move |source| Error::Step { step, source }
}

/// Refuses to go on unless this process is PID 1.
pub fn require_pid1(sys: &impl Sys) -> Result<(), Error> {
    match sys.pid() {
        1 => Ok(()),
        pid => Err(Error::NotPid1(pid)),
    }
}

/// Runs the boot duties up to (not including) readiness, and returns what the command line asked for.
pub fn boot(sys: &mut impl Sys) -> Result<Config, Error> {
    require_pid1(sys)?;
    // /proc first: it tells whether / is the initramfs.
    sys.mkdir_all("/proc", 0o555).map_err(step("mkdir /proc"))?;
    sys.mount("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC, "")
        .map_err(step("mount proc on /proc"))?;
    if sys
        .root_is_initramfs()
        .map_err(step("read /proc/self/mountinfo"))?
    {
        sys.mkdir_all(NEW_ROOT, 0o755)
            .map_err(step(format!("mkdir {NEW_ROOT}")))?;
        sys.mount("rootfs", NEW_ROOT, "tmpfs", 0, "mode=0755")
            .map_err(step(format!("mount tmpfs on {NEW_ROOT}")))?;
        sys.switch_root(NEW_ROOT)
            .map_err(step(format!("switch root to {NEW_ROOT}")))?;
    }
    for mnt in MOUNTS {
        sys.mkdir_all(mnt.target, mnt.dir_mode)
            .map_err(step(format!("mkdir {}", mnt.target)))?;
        sys.mount(mnt.source, mnt.target, mnt.fstype, mnt.flags, mnt.data)
            .map_err(step(format!("mount {} on {}", mnt.fstype, mnt.target)))?;
    }
    for (target, link) in DEV_LINKS {
        sys.symlink(target, link)
            .map_err(step(format!("symlink {link}")))?;
    }

    let cmdline = sys
        .read_file("/proc/cmdline")
        .map_err(step("read /proc/cmdline"))?;
    let cfg = Config::parse(&cmdline);
    crate::log::set_level(cfg.log_level);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }

    sys.set_hostname(&cfg.hostname)
        .map_err(step(format!("set hostname {:?}", cfg.hostname)))?;
    if let Some(clock) = cfg.clock {
        sys.set_clock(clock.secs, clock.nanos)
            .map_err(step("set the clock"))?;
    }
    enable_controllers(sys);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let controllers = sys
            .read_file(&format!("{CGROUP_ROOT}/cgroup.subtree_control"))
            .unwrap_or_default();
        tracing::debug!(
            hostname = cfg.hostname,
            clock = ?cfg.clock,
            controllers = controllers.trim(),
            "booted"
        );
    }
    Ok(cfg)
}

/// Enables the cgroup controllers for child cgroups. A controller the kernel lacks is logged, not
/// fatal: containers without that limit still run, and `moat check`-style probes in the guest see it.
fn enable_controllers(sys: &mut impl Sys) {
    let path = format!("{CGROUP_ROOT}/cgroup.subtree_control");
    let all: Vec<String> = CGROUP_CONTROLLERS.iter().map(|c| format!("+{c}")).collect();
    if sys.write_file(&path, &all.join(" ")).is_ok() {
        return;
    }
    // Find out which one is missing.
    for c in CGROUP_CONTROLLERS {
        if let Err(e) = sys.write_file(&path, &format!("+{c}")) {
            tracing::error!("cannot enable the cgroup controller {c} in {path}: {e}");
        }
    }
}

/// Tells the host the agent is ready: the ready line on the console, then the boot-timer byte.
///
/// The port write is what `moat-vmm` times; a VMM without the device (QEMU) ignores it, and a kernel
/// without `CONFIG_X86_IOPL_IOPERM` refuses `ioperm`, which is logged and otherwise harmless.
pub fn announce_ready(sys: &mut impl Sys) {
    if let Err(e) = sys.outb(BOOT_TIMER_PORT, BOOT_READY_MAGIC) {
        tracing::warn!("cannot write the boot-timer port {BOOT_TIMER_PORT:#x}: {e}");
    }
    if let Err(e) = sys.console(READY_LINE) {
        tracing::error!("cannot write the ready line to the console: {e}");
    }
}

/// Runs a self-test the command line asked for; its result goes to the console.
pub fn run_selftest(sys: &mut impl Sys, test: SelfTest) -> Result<(), Error> {
    match test {
        SelfTest::Uname => {
            let release = sys.kernel_release().map_err(step("uname"))?;
            sys.console(&format!(
                "{}{release}",
                moat_abi::selftest::UNAME_LINE_PREFIX
            ))
            .map_err(step("write to the console"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::Fake;

    #[test]
    fn refuses_other_pids() {
        let mut f = Fake::pid1("");
        f.pid = 4242;
        let e = boot(&mut f).unwrap_err();
        assert!(matches!(e, Error::NotPid1(4242)));
        assert!(e.to_string().contains("PID 4242"), "{e}");
        assert!(f.calls.is_empty(), "touched the system: {:?}", f.calls);
    }

    #[test]
    fn boots_in_order() {
        let mut f = Fake::pid1(
            "console=ttyS0 moat.hostname=pod-7 moat.clock=1700000000 moat.selftest=uname",
        );
        let cfg = boot(&mut f).unwrap();
        assert_eq!(cfg.hostname, "pod-7");
        assert_eq!(cfg.selftest, Some(SelfTest::Uname));

        // Leaves the initramfs before mounting the base system into the new root.
        let switch = f.index("switch_root /sysroot");
        assert!(f.index("mount rootfs /sysroot tmpfs 0x0 mode=0755") < switch);
        let dev = f.index("mount devtmpfs /dev devtmpfs 0x2 mode=0755");
        assert!(switch < dev);
        assert!(dev < f.index("mkdir /dev/pts 755"));
        let cg = f.index("mount cgroup2 /sys/fs/cgroup cgroup2 0x20000e nsdelegate");
        assert!(f.index("mount sysfs /sys sysfs 0xe ") < f.index("mkdir /sys/fs/cgroup 755"));
        assert!(cg < f.index("write /sys/fs/cgroup/cgroup.subtree_control +memory +pids +cpu"));
        assert!(f.has("symlink /proc/self/fd /dev/fd"));
        assert!(f.has("hostname pod-7"));
        assert!(f.has("clock 1700000000.000000000"));
        for mnt in MOUNTS {
            assert!(
                f.calls
                    .iter()
                    .any(|c| c.starts_with(&format!("mount {} {} ", mnt.source, mnt.target)))
            );
        }
    }

    #[test]
    fn stays_on_a_real_root() {
        let mut f = Fake::pid1("");
        f.initramfs = false;
        let cfg = boot(&mut f).unwrap();
        assert!(!f.calls.iter().any(|c| c.contains("switch_root")));
        assert_eq!(cfg.hostname, crate::cmdline::DEFAULT_HOSTNAME);
        assert!(f.has("hostname moat"));
        assert!(
            !f.calls.iter().any(|c| c.starts_with("clock")),
            "no clock without moat.clock"
        );
    }

    #[test]
    fn missing_controller_is_not_fatal() {
        let mut f = Fake::pid1("");
        f.failing_writes = vec!["/sys/fs/cgroup/cgroup.subtree_control".into()];
        f.failing_contents = vec!["+memory".into()];
        boot(&mut f).unwrap();
        // Tried all at once, then one by one.
        assert!(f.has("write /sys/fs/cgroup/cgroup.subtree_control +pids"));
        assert!(f.has("write /sys/fs/cgroup/cgroup.subtree_control +cpu"));
    }

    #[test]
    fn no_cmdline_is_fatal_with_the_step() {
        let mut f = Fake::pid1("");
        f.files.clear();
        let e = boot(&mut f).unwrap_err();
        assert!(e.to_string().starts_with("read /proc/cmdline"), "{e}");
    }

    #[test]
    fn ready_then_selftest() {
        let mut f = Fake::pid1("");
        announce_ready(&mut f);
        run_selftest(&mut f, SelfTest::Uname).unwrap();
        assert_eq!(
            f.calls,
            [
                format!("outb {BOOT_TIMER_PORT:#x} {BOOT_READY_MAGIC:#x}"),
                format!("console {READY_LINE}"),
                format!(
                    "console {}6.12.0-test",
                    moat_abi::selftest::UNAME_LINE_PREFIX
                ),
            ]
        );
    }
}
