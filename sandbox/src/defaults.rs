//! containerd's defaults: the spec `ctr run` starts from and its default seccomp profile.
//!
//! [`spec`] mirrors containerd's `populateDefaultUnixSpec` + `defaultMounts` (pkg/oci): 14
//! capabilities, `noNewPrivileges`, `RLIMIT_NOFILE` 1024, masked and read-only `/proc` and `/sys`
//! paths, the pid/ipc/uts/mount/network namespaces, the default mounts, a device cgroup that denies
//! everything not created by the runtime — plus the default seccomp profile, which containerd's
//! clients add with `seccomp.WithDefaultProfile()`.
//!
//! The profile is data: `sandbox/seccomp/containerd-default.json`, transcribed from containerd's
//! `contrib/seccomp/seccomp_default.go` for x86_64, with its Go conditions kept as fields
//! (`includes.caps`, `excludes.caps`, `includes.minKernel`). [`seccomp_profile`] evaluates them
//! for a bounding set, as containerd does, so a container given CAP_SYS_ADMIN may call `mount`.

use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSyscallBuilder, Mount,
    PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
};
use serde::Deserialize;

/// The profile as shipped.
pub const SECCOMP_PROFILE_JSON: &str = include_str!("../seccomp/containerd-default.json");

/// The 14 capabilities containerd grants by default (bounding, permitted and effective sets).
pub const CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths containerd masks (`linux.maskedPaths`).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// Paths containerd makes read-only (`linux.readonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// containerd's default `PATH`.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// containerd's default mounts (pkg/oci/mounts.go).
pub fn mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
    ]
}

/// The default capabilities as a set.
pub fn capabilities() -> Capabilities {
    CAPABILITIES.into_iter().collect()
}

/// containerd's default spec for a container whose rootfs is `rootfs` (relative to the bundle, or
/// absolute), with the default seccomp profile. `process.args` is empty: set it. Linux namespaces:
/// pid, ipc, uts, mount, network (all new). No `cgroupsPath` (moat uses `/moat/<id>`).
pub fn spec(rootfs: &str) -> Spec {
    let caps = capabilities();
    let mut process = Process::default();
    process.set_args(Some(Vec::new()));
    process.set_env(Some(vec![PATH_ENV.to_string()]));
    process.set_cwd("/".into());
    process.set_terminal(Some(false));
    process.set_no_new_privileges(Some(true));
    process.set_apparmor_profile(None);
    let mut process_caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(caps.clone())
        .effective(caps.clone())
        .build()
        .ok();
    if let Some(c) = process_caps.as_mut() {
        // The builder fills these with oci-spec's defaults; containerd leaves them out.
        c.set_inheritable(None);
        c.set_ambient(None);
    }
    process.set_capabilities(process_caps);
    process.set_rlimits(
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()
            .ok()
            .map(|r| vec![r]),
    );
    let mut root = Root::default();
    root.set_path(rootfs.into());
    root.set_readonly(Some(false));

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .filter_map(|t| LinuxNamespaceBuilder::default().typ(t).build().ok())
    .collect::<Vec<_>>();
    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|s| s.to_string()).collect()));
    linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(
        LinuxResourcesBuilder::default()
            .devices(
                LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()
                    .ok()
                    .into_iter()
                    .collect::<Vec<_>>(),
            )
            .build()
            .ok(),
    );
    linux.set_seccomp(Some(seccomp_profile(&caps)));

    let mut spec = Spec::default();
    spec.set_hostname(None);
    spec.set_root(Some(root));
    spec.set_process(Some(process));
    spec.set_mounts(Some(mounts()));
    spec.set_linux(Some(linux));
    spec.set_annotations(None);
    spec
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileData {
    #[serde(default)]
    #[allow(dead_code)]
    comment: Vec<String>,
    default_action: LinuxSeccompAction,
    architectures: Vec<Arch>,
    syscalls: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Condition {
    #[serde(default)]
    caps: Vec<Capability>,
    #[serde(default)]
    min_kernel: Option<String>,
}

fn profile_data() -> &'static ProfileData {
    static DATA: OnceLock<ProfileData> = OnceLock::new();
    DATA.get_or_init(|| match serde_json::from_str(SECCOMP_PROFILE_JSON) {
        Ok(d) => d,
        // The file is part of this crate and checked by its tests.
        Err(e) => panic!("sandbox/seccomp/containerd-default.json is malformed: {e}"),
    })
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> (u32, u32) {
    static V: OnceLock<(u32, u32)> = OnceLock::new();
    *V.get_or_init(|| {
        // SAFETY: `uts` is a plain C struct that uname(2) fills in.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a utsname.
        if unsafe { libc::uname(&mut uts) } != 0 {
            return (0, 0);
        }
        // SAFETY: the kernel NUL-terminates `release`.
        let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
        parse_version(&release.to_string_lossy())
    })
}

fn parse_version(s: &str) -> (u32, u32) {
    let mut it = s
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// containerd's default seccomp profile for a container whose bounding set is `bounding`.
pub fn seccomp_profile(bounding: &Capabilities) -> LinuxSeccomp {
    let data = profile_data();
    let kernel = kernel_version();
    let mut syscalls = Vec::with_capacity(data.syscalls.len());
    for e in &data.syscalls {
        let inc = &e.includes;
        if !inc.caps.is_empty() && !inc.caps.iter().any(|c| bounding.contains(c)) {
            continue;
        }
        if e.excludes.caps.iter().any(|c| bounding.contains(c)) {
            continue;
        }
        if let Some(min) = &inc.min_kernel
            && kernel < parse_version(min)
        {
            continue;
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(e.names.clone())
            .action(e.action);
        if let Some(errno) = e.errno_ret {
            b = b.errno_ret(errno);
        }
        if !e.args.is_empty() {
            b = b.args(e.args.clone());
        }
        if let Ok(s) = b.build() {
            syscalls.push(s);
        }
    }
    let mut profile = LinuxSeccompBuilder::default()
        .default_action(data.default_action)
        .architectures(data.architectures.clone())
        .build()
        .unwrap_or_default();
    profile.set_syscalls(Some(syscalls));
    profile
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp;

    fn verdict(f: &seccomp::Filter, name: &str, args: [u64; 6]) -> u32 {
        crate::seccomp::tests_support::run(&f.program, name, args)
    }

    #[test]
    fn profile_parses_and_denies_what_containerd_denies() {
        let f = seccomp::compile(&seccomp_profile(&capabilities())).unwrap();
        let eperm = 0x0005_0000 | libc::EPERM as u32;
        let allow = 0x7fff_0000;
        assert_eq!(verdict(&f, "getpid", [0; 6]), allow);
        assert_eq!(verdict(&f, "keyctl", [0; 6]), eperm);
        assert_eq!(
            verdict(&f, "unshare", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(verdict(&f, "mount", [0; 6]), eperm);
        assert_eq!(verdict(&f, "open_by_handle_at", [0; 6]), eperm);
        assert_eq!(
            verdict(&f, "clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(
            verdict(&f, "clone", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            verdict(&f, "clone3", [0; 6]),
            0x0005_0000 | libc::ENOSYS as u32
        );
        assert_eq!(
            verdict(&f, "socket", [libc::AF_INET as u64, 0, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(
            verdict(&f, "socket", [libc::AF_VSOCK as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            verdict(&f, "socket", [libc::AF_ALG as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        // containerd allows ptrace on kernels >= 4.8 (seccomp can no longer be bypassed with it).
        assert_eq!(verdict(&f, "ptrace", [0; 6]), allow);
        assert_eq!(verdict(&f, "reboot", [0; 6]), eperm);
    }

    #[test]
    fn capabilities_widen_the_profile() {
        let mut caps = capabilities();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysBoot);
        let f = seccomp::compile(&seccomp_profile(&caps)).unwrap();
        let allow = 0x7fff_0000;
        assert_eq!(verdict(&f, "mount", [0; 6]), allow);
        assert_eq!(
            verdict(&f, "unshare", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(
            verdict(&f, "clone", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(verdict(&f, "clone3", [0; 6]), allow);
        assert_eq!(verdict(&f, "reboot", [0; 6]), allow);
    }

    #[test]
    fn default_spec_is_containerds() {
        let s = spec("rootfs");
        let p = s.process().as_ref().unwrap();
        assert_eq!(
            p.capabilities()
                .as_ref()
                .unwrap()
                .bounding()
                .as_ref()
                .unwrap()
                .len(),
            14
        );
        assert!(!capabilities().contains(&Capability::SysResource));
        assert_eq!(p.no_new_privileges(), Some(true));
        let l = s.linux().as_ref().unwrap();
        assert_eq!(l.masked_paths().as_ref().unwrap().len(), 11);
        assert_eq!(l.readonly_paths().as_ref().unwrap().len(), 5);
        assert_eq!(s.mounts().as_ref().unwrap().len(), 7);
        assert!(l.seccomp().is_some());
        assert_eq!(parse_version("6.18.44-fc-v669"), (6, 18));
        assert_eq!(parse_version("4.8"), (4, 8));
    }
}
