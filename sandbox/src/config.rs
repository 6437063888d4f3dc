//! config.json: loading it (errors name the JSON field) and checking it into the plans the
//! container's processes execute. Everything here runs before any state changes.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDeviceType, LinuxNamespaceType, LinuxPersonalityDomain, PosixRlimitType, Process, Spec,
};

use crate::caps;
use crate::error::{Error, Result};
use crate::namespaces::{self, Namespaces};
use crate::process::{InitPlan, ProcessPlan};
use crate::rootfs::options::{self, MountOptions};
use crate::rootfs::{Device, MountKind, MountPlan, RootfsPlan, default_devices};
use crate::seccomp;

/// `PATH` used to find `args[0]` when `process.env` has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads `<bundle>/config.json`. Errors name the offending field (`linux.namespaces[2].type`).
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let file = File::open(&path).map_err(|source| Error::Io {
        context: format!(
            "reading {} (is {} an OCI bundle?)",
            path.display(),
            bundle.display()
        ),
        source,
    })?;
    parse(BufReader::new(file))
}

/// Parses a config.json.
pub fn parse<R: std::io::Read>(reader: R) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_reader(reader);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(document)".to_string()
        } else {
            field
        };
        Error::spec(field, e.into_inner().to_string())
    })
}

/// A name for an rlimit resource number (messages).
pub fn rlimit_name(resource: u32) -> &'static str {
    RLIMITS
        .iter()
        .find(|(_, r, _)| *r == resource)
        .map_or("RLIMIT_?", |(_, _, n)| n)
}

const RLIMITS: [(PosixRlimitType, u32, &str); 16] = [
    (PosixRlimitType::RlimitCpu, libc::RLIMIT_CPU, "RLIMIT_CPU"),
    (
        PosixRlimitType::RlimitFsize,
        libc::RLIMIT_FSIZE,
        "RLIMIT_FSIZE",
    ),
    (
        PosixRlimitType::RlimitData,
        libc::RLIMIT_DATA,
        "RLIMIT_DATA",
    ),
    (
        PosixRlimitType::RlimitStack,
        libc::RLIMIT_STACK,
        "RLIMIT_STACK",
    ),
    (
        PosixRlimitType::RlimitCore,
        libc::RLIMIT_CORE,
        "RLIMIT_CORE",
    ),
    (PosixRlimitType::RlimitRss, libc::RLIMIT_RSS, "RLIMIT_RSS"),
    (
        PosixRlimitType::RlimitNproc,
        libc::RLIMIT_NPROC,
        "RLIMIT_NPROC",
    ),
    (
        PosixRlimitType::RlimitNofile,
        libc::RLIMIT_NOFILE,
        "RLIMIT_NOFILE",
    ),
    (
        PosixRlimitType::RlimitMemlock,
        libc::RLIMIT_MEMLOCK,
        "RLIMIT_MEMLOCK",
    ),
    (PosixRlimitType::RlimitAs, libc::RLIMIT_AS, "RLIMIT_AS"),
    (
        PosixRlimitType::RlimitLocks,
        libc::RLIMIT_LOCKS,
        "RLIMIT_LOCKS",
    ),
    (
        PosixRlimitType::RlimitSigpending,
        libc::RLIMIT_SIGPENDING,
        "RLIMIT_SIGPENDING",
    ),
    (
        PosixRlimitType::RlimitMsgqueue,
        libc::RLIMIT_MSGQUEUE,
        "RLIMIT_MSGQUEUE",
    ),
    (
        PosixRlimitType::RlimitNice,
        libc::RLIMIT_NICE,
        "RLIMIT_NICE",
    ),
    (
        PosixRlimitType::RlimitRtprio,
        libc::RLIMIT_RTPRIO,
        "RLIMIT_RTPRIO",
    ),
    (
        PosixRlimitType::RlimitRttime,
        libc::RLIMIT_RTTIME,
        "RLIMIT_RTTIME",
    ),
];

fn cstrings(field: &str, v: &[String]) -> Result<Vec<CString>> {
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::spec(format!("{field}[{i}]"), "contains a NUL byte"))
        })
        .collect()
}

fn cap_last() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(caps::LAST_CAP)
            .min(63)
    })
}

fn lsm_enabled(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "Y")
}

/// Checks `process` and turns it into a [`ProcessPlan`] (the spec's profile already compiled).
pub fn process_plan(p: &Process, seccomp: Option<seccomp::Filter>) -> Result<ProcessPlan> {
    let args = p.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::spec(
            "process.args",
            "is empty: give the command to run",
        ));
    }
    let env = p.env().as_deref().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        if !e.contains('=') {
            return Err(Error::spec(
                format!("process.env[{i}]"),
                format!("{e:?} is not KEY=VALUE"),
            ));
        }
    }
    let cwd = p.cwd().clone();
    if !cwd.is_absolute() {
        return Err(Error::spec(
            "process.cwd",
            format!("{} is not an absolute path", cwd.display()),
        ));
    }
    let mut rlimits = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let field = format!("process.rlimits[{i}]");
        let (_, res, name) = RLIMITS
            .iter()
            .find(|(t, _, _)| *t == r.typ())
            .copied()
            .unwrap_or((r.typ(), u32::MAX, "?"));
        if !seen.insert(res) {
            return Err(Error::spec(
                field,
                format!("{name} appears twice: keep one"),
            ));
        }
        if r.soft() > r.hard() {
            return Err(Error::spec(
                field,
                format!(
                    "{name}: soft limit {} is above hard limit {}",
                    r.soft(),
                    r.hard()
                ),
            ));
        }
        rlimits.push((res, r.soft(), r.hard()));
    }
    if let Some(adj) = p.oom_score_adj()
        && !(-1000..=1000).contains(&adj)
    {
        return Err(Error::spec(
            "process.oomScoreAdj",
            format!("{adj} is outside -1000..1000"),
        ));
    }
    if p.apparmor_profile()
        .as_deref()
        .is_some_and(|a| !a.is_empty())
        && !lsm_enabled("/sys/module/apparmor/parameters/enabled")
    {
        return Err(Error::spec(
            "process.apparmorProfile",
            "AppArmor is not enabled on this host, so the profile cannot be applied: remove it",
        ));
    }
    if p.selinux_label().as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(Error::spec(
            "process.selinuxLabel",
            "SELinux labels are not supported by moat (and this host has no SELinux): remove it",
        ));
    }
    if p.scheduler().is_some() {
        return Err(Error::spec(
            "process.scheduler",
            "not supported by moat: remove it",
        ));
    }
    if p.io_priority().is_some() {
        return Err(Error::spec(
            "process.ioPriority",
            "not supported by moat: remove it",
        ));
    }
    if p.exec_cpu_affinity().is_some() {
        return Err(Error::spec(
            "process.execCPUAffinity",
            "not supported by moat: remove it",
        ));
    }
    let user = p.user();
    let mut gids: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
    gids.sort_unstable();
    gids.dedup();
    let console_size = p
        .console_size()
        .as_ref()
        .map(|b| (b.height() as u16, b.width() as u16));
    Ok(ProcessPlan {
        args: cstrings("process.args", args)?,
        env: cstrings("process.env", env)?,
        path_env: env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .map(str::to_string),
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: gids,
        umask: user.umask().unwrap_or(0o022) as libc::mode_t,
        caps: p.capabilities().as_ref().map(caps::Sets::from_spec),
        cap_last: cap_last(),
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        rlimits,
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size,
        seccomp,
        extra_seccomp: Vec::new(),
        personality: None,
    })
}

fn mount_plan(i: usize, m: &oci_spec::runtime::Mount, bundle: &Path) -> Result<MountPlan> {
    let field = format!("mounts[{i}]");
    let dest = m.destination().clone();
    if !dest.is_absolute() {
        return Err(Error::spec(
            format!("{field}.destination"),
            format!("{} is not an absolute path", dest.display()),
        ));
    }
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(Error::spec(
            field,
            "id-mapped mounts (uidMappings/gidMappings) are not supported by moat",
        ));
    }
    let opts: MountOptions = options::parse(
        &format!("{field}.options"),
        m.options().as_deref().unwrap_or_default(),
    )?;
    let typ = m.typ().as_deref().filter(|t| !t.is_empty());
    let kind = if typ == Some("bind") || opts.is_bind() {
        MountKind::Bind
    } else if matches!(typ, Some("cgroup" | "cgroup2")) {
        MountKind::Cgroup
    } else {
        MountKind::Other
    };
    let mut opts = opts;
    let source = match kind {
        MountKind::Bind => {
            opts.flags |= libc::MS_BIND;
            let s = m.source().as_ref().ok_or_else(|| {
                Error::spec(format!("{field}.source"), "a bind mount needs a source")
            })?;
            let s = if s.is_absolute() {
                s.clone()
            } else {
                bundle.join(s)
            };
            if std::fs::symlink_metadata(&s).is_err() {
                return Err(Error::spec(
                    format!("{field}.source"),
                    format!("{} does not exist", s.display()),
                ));
            }
            Some(s)
        }
        MountKind::Cgroup => None,
        MountKind::Other => {
            if typ.is_none() {
                return Err(Error::spec(
                    format!("{field}.type"),
                    "is missing: give the file system type (tmpfs, proc, ...)",
                ));
            }
            m.source().clone()
        }
    };
    Ok(MountPlan {
        dest,
        kind,
        source,
        fstype: typ.map(str::to_string),
        opts,
    })
}

fn device(i: usize, d: &oci_spec::runtime::LinuxDevice) -> Result<Device> {
    let field = format!("linux.devices[{i}]");
    // `Path::starts_with` compares components: "/dev" and "/dev/../etc/shadow" pass it, and with a
    // user namespace a device is bind-mounted from the host path it names.
    let below_dev = d.path().strip_prefix("/dev").is_ok_and(|rest| {
        !rest.as_os_str().is_empty()
            && rest
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
    });
    if !below_dev {
        return Err(Error::spec(
            format!("{field}.path"),
            format!(
                "{} must be below /dev/, without .. components",
                d.path().display()
            ),
        ));
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::spec(format!("{field}.type"), "must be c, b, u or p"));
        }
    };
    let num = |n: i64, what: &str| {
        u32::try_from(n).map_err(|_| Error::spec(format!("{field}.{what}"), "out of range"))
    };
    Ok(Device {
        path: d.path().clone(),
        mode: kind | (d.file_mode().unwrap_or(0o666) & 0o7777) as libc::mode_t,
        major: num(d.major(), "major")?,
        minor: num(d.minor(), "minor")?,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

fn sysctl(key: &str, ns: &Namespaces) -> Result<PathBuf> {
    let field = format!("linux.sysctl.{key}");
    if key.is_empty()
        || key.contains("..")
        || key.starts_with(['.', '/'])
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
    {
        return Err(Error::spec(field, "is not a sysctl name"));
    }
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let need = if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some((LinuxNamespaceType::Ipc, "an ipc"))
    } else if key.starts_with("net.") {
        Some((LinuxNamespaceType::Network, "a network"))
    } else if key == "kernel.domainname" {
        Some((LinuxNamespaceType::Uts, "a uts"))
    } else {
        None
    };
    match need {
        None => Err(Error::spec(
            field,
            "is not namespaced: it would change the host; remove it",
        )),
        Some((t, what)) if !ns.has(t) => Err(Error::spec(
            field,
            format!(
                "needs {what} namespace (it would change the host's otherwise): add it to linux.namespaces"
            ),
        )),
        Some(_) => Ok(Path::new("/proc/sys").join(key.replace('.', "/"))),
    }
}

/// The checked spec: plans for the init and the spawner.
#[derive(Debug)]
pub struct Built {
    /// The init's plan (the cgroup view of the rootfs is filled in later).
    pub init: InitPlan,
    /// The namespaces.
    pub ns: Namespaces,
    /// The rootfs on the host.
    pub rootfs: PathBuf,
}

/// Checks `spec` (from `bundle`) completely and builds the plans. Opens the namespace files it
/// names; creates nothing.
pub fn build(spec: &Spec, bundle: &Path) -> Result<Built> {
    if !spec.version().starts_with("1.") {
        return Err(Error::spec(
            "ociVersion",
            format!("{:?} is not a 1.x runtime-spec version", spec.version()),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::spec("root", "is missing: give root.path"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| {
            Error::spec(
                "root.path",
                format!(
                    "{} is not a directory: create the rootfs or fix the path",
                    rootfs.display()
                ),
            )
        })?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::spec("process", "is missing"))?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::spec("linux", "is missing"))?;
    if spec.hooks().as_ref().is_some_and(|h| {
        [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
            h.poststart(),
            h.poststop(),
        ]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
    }) {
        return Err(Error::spec(
            "hooks",
            "OCI hooks are not supported by moat: remove them",
        ));
    }
    for (field, present) in [
        ("linux.intelRdt", linux.intel_rdt().is_some()),
        ("linux.memoryPolicy", linux.memory_policy().is_some()),
        (
            "linux.netDevices",
            linux.net_devices().as_ref().is_some_and(|n| !n.is_empty()),
        ),
    ] {
        if present {
            return Err(Error::spec(field, "not supported by moat: remove it"));
        }
    }
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(Error::spec(
            "linux.mountLabel",
            "SELinux labels are not supported by moat: remove it",
        ));
    }
    let ns = namespaces::plan(linux)?;
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.has(LinuxNamespaceType::Uts)
    {
        return Err(Error::spec(
            "hostname",
            "needs a UTS namespace: add {\"type\": \"uts\"} to linux.namespaces",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty())
        && !ns.has(LinuxNamespaceType::Uts)
    {
        return Err(Error::spec(
            "domainname",
            "needs a UTS namespace: add {\"type\": \"uts\"} to linux.namespaces",
        ));
    }
    let seccomp = linux.seccomp().as_ref().map(seccomp::compile).transpose()?;
    let mut pp = process_plan(process, seccomp)?;
    if let Some(pers) = linux.personality() {
        if pers.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(Error::spec(
                "linux.personality.flags",
                "not supported by moat: remove them",
            ));
        }
        pp.personality = Some(match pers.domain() {
            LinuxPersonalityDomain::PerLinux => 0,
            LinuxPersonalityDomain::PerLinux32 => 0x0008,
        });
    }
    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| mount_plan(i, m, bundle))
        .collect::<Result<Vec<_>>>()?;
    let setup_dev = !mounts
        .iter()
        .any(|m| m.dest == Path::new("/dev") && m.kind == MountKind::Bind);
    let mut devices = default_devices();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let d = device(i, d)?;
        devices.retain(|x| x.path != d.path);
        devices.push(d);
    }
    let abs = |field: &str, v: &Option<Vec<String>>| -> Result<Vec<PathBuf>> {
        v.iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| {
                let p = PathBuf::from(p);
                if p.is_absolute() {
                    Ok(p)
                } else {
                    Err(Error::spec(
                        format!("{field}[{i}]"),
                        "must be an absolute path",
                    ))
                }
            })
            .collect()
    };
    let propagation = match linux
        .rootfs_propagation()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        None => libc::MS_SLAVE,
        Some(p) => options::propagation(p).ok_or_else(|| {
            Error::spec(
                "linux.rootfsPropagation",
                format!("{p:?} is not one of shared, slave, private, unbindable (or r- forms)"),
            )
        })?,
    };
    let mut sysctls = Vec::new();
    let mut keys: Vec<_> = linux.sysctl().iter().flatten().collect();
    keys.sort();
    for (k, v) in keys {
        sysctls.push((sysctl(k, &ns)?, v.clone()));
    }
    let rootfs_plan = RootfsPlan {
        rootfs: rootfs.clone(),
        readonly: root.readonly().unwrap_or(false),
        propagation,
        mounts,
        setup_dev,
        devices,
        bind_devices: ns.has(LinuxNamespaceType::User),
        dev_core: Path::new("/proc/kcore").exists(),
        masked: abs("linux.maskedPaths", linux.masked_paths())?,
        readonly_paths: abs("linux.readonlyPaths", linux.readonly_paths())?,
        cgroup: Default::default(),
    };
    let init = InitPlan {
        process: pp,
        rootfs: Some(rootfs_plan),
        new_userns: ns.creates(LinuxNamespaceType::User),
        new_cgroupns: ns.creates(LinuxNamespaceType::Cgroup),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        sysctls,
    };
    Ok(Built { init, ns, rootfs })
}

#[cfg(test)]
mod tests;
