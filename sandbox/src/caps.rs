//! Capabilities: OCI names to kernel numbers, and the five sets as bit masks.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// The kernel's number for a capability (linux/capability.h).
pub fn number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// The highest capability number this module knows.
pub const LAST_CAP: u32 = 40;

/// A capability set as a bit mask.
pub fn mask(set: Option<&Capabilities>) -> u64 {
    set.map_or(0, |s| s.iter().fold(0, |m, c| m | 1u64 << number(*c)))
}

/// The five sets of a process, as bit masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

impl Sets {
    /// The masks of an OCI `process.capabilities`.
    pub fn from_spec(caps: &LinuxCapabilities) -> Sets {
        Sets {
            bounding: mask(caps.bounding().as_ref()),
            effective: mask(caps.effective().as_ref()),
            permitted: mask(caps.permitted().as_ref()),
            inheritable: mask(caps.inheritable().as_ref()),
            ambient: mask(caps.ambient().as_ref()),
        }
    }
}

/// The capabilities in this process's bounding set, read from `/proc/self/status` (`CapBnd`).
pub fn host_bounding() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
    u64::from_str_radix(line.trim_start_matches("CapBnd:").trim(), 16).ok()
}

/// The OCI name of capability number `n` (for messages).
pub fn name(n: u32) -> String {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES
        .get(n as usize)
        .map_or_else(|| format!("capability {n}"), |s| format!("CAP_{s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel() {
        assert_eq!(number(Capability::SysAdmin), 21);
        assert_eq!(number(Capability::CheckpointRestore), LAST_CAP);
        assert_eq!(name(21), "CAP_SYS_ADMIN");
        let set: Capabilities = [Capability::Chown, Capability::Kill].into_iter().collect();
        assert_eq!(mask(Some(&set)), 1 | 1 << 5);
    }

    #[test]
    fn this_process_has_a_bounding_set() {
        assert!(host_bounding().is_some());
    }
}
