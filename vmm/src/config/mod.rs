//! What a VM is made of: the configuration, from a JSON or TOML file and/or command-line flags
//! (`cli`), checked as a whole before anything is created.

pub mod cli;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use validate::validate;

/// The kernel command line used when none is given: serial console, keyboard-controller reset as
/// the power-off path (the agent announces it on the boot-timer port first), reset at once on panic
/// (the VMM sees the panic on the console, or the missing announcement, and exits non-zero).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

/// Errors reading or checking a configuration. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file does not parse.
    #[error("config file {path} is not valid {format}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// JSON or TOML.
        format: &'static str,
        /// Parser message.
        reason: String,
    },
    /// A value is wrong; the message says which and what to do.
    #[error("{0}")]
    Invalid(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SerialOutput {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// Discarded (still scanned for a kernel panic).
    None,
    /// Appended to a file.
    #[serde(untagged)]
    File(PathBuf),
}

impl SerialOutput {
    /// Parses `stdout`, `none` or a file path.
    pub fn parse(s: &str) -> Self {
        match s {
            "stdout" | "-" => Self::Stdout,
            "none" | "off" => Self::None,
            p => Self::File(PathBuf::from(p)),
        }
    }
}

/// One virtio-blk device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// Raw image file on the host.
    pub path: PathBuf,
    /// Read-only (writes fail with an I/O error in the guest).
    #[serde(default)]
    pub read_only: bool,
    /// Serial returned by `VIRTIO_BLK_T_GET_ID` (at most 20 bytes; default `moat-blk<N>`).
    #[serde(default)]
    pub id: Option<String>,
}

/// The virtio-vsock device and its hybrid Unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Host-side Unix socket: connect and send `CONNECT <port>\n`. Guest-initiated connections
    /// to host port P go to `<socket>_P`.
    pub socket: PathBuf,
    /// The guest's context id (default 3).
    #[serde(default = "default_cid")]
    pub cid: u64,
}

fn default_cid() -> u64 {
    moat_abi::GUEST_CID
}

/// A CPUID override: registers to replace in leaf/subleaf (added if absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidOverride {
    /// Leaf (EAX input).
    pub leaf: u32,
    /// Subleaf (ECX input).
    #[serde(default)]
    pub subleaf: u32,
    /// New EAX.
    #[serde(default)]
    pub eax: Option<u32>,
    /// New EBX.
    #[serde(default)]
    pub ebx: Option<u32>,
    /// New ECX.
    #[serde(default)]
    pub ecx: Option<u32>,
    /// New EDX.
    #[serde(default)]
    pub edx: Option<u32>,
}

/// Confinement: run inside a per-VM directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// The per-VM directory that becomes `/`. Socket paths must lie inside it.
    pub dir: PathBuf,
    /// Switch to this user id after jailing (default: stay root, with no capabilities).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Switch to this group id after jailing.
    #[serde(default)]
    pub gid: Option<u32>,
}

/// A whole VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Linux kernel: uncompressed `vmlinux` (PVH entry preferred, else 64-bit ELF entry) or bzImage.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Instead of a kernel: raw 64-bit code loaded and entered at 1 MiB (tests, the floor benchmark).
    #[serde(default)]
    pub payload: Option<PathBuf>,
    /// Initramfs (cpio, plain or compressed as the kernel supports).
    #[serde(default)]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line; `virtio_mmio.device=` entries are appended by the VMM.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Number of vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// The vsock device.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Block devices, in order (`/dev/vda`, `/dev/vdb`, ...).
    #[serde(default)]
    pub block: Vec<BlockConfig>,
    /// Serial console output.
    #[serde(default)]
    pub serial: SerialOutput,
    /// The boot-timer device on port `moat_abi::BOOT_TIMER_PORT`.
    #[serde(default = "yes")]
    pub boot_timer: bool,
    /// Control API socket.
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// CPUID overrides.
    #[serde(default)]
    pub cpuid: Vec<CpuidOverride>,
    /// Install the per-thread seccomp filters (default on; turn off only to debug).
    #[serde(default = "yes")]
    pub seccomp: bool,
    /// Jail the VMM.
    #[serde(default)]
    pub jail: Option<JailConfig>,
    /// Set everything up, then exit 0 before the first guest instruction (floor benchmark).
    #[serde(default)]
    pub dry_boot: bool,
    /// Boot a Linux kernel even on a PVM host (debugging only: it will not get far).
    #[serde(default)]
    pub force_pvm: bool,
    /// The KVM device node (default `/dev/kvm`).
    #[serde(default = "default_kvm")]
    pub kvm_device: PathBuf,
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}
fn default_memory() -> u64 {
    128
}
fn default_vcpus() -> u32 {
    1
}
fn default_kvm() -> PathBuf {
    PathBuf::from("/dev/kvm")
}
fn yes() -> bool {
    true
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: None,
            payload: None,
            initramfs: None,
            cmdline: default_cmdline(),
            memory_mib: default_memory(),
            vcpus: default_vcpus(),
            vsock: None,
            block: Vec::new(),
            serial: SerialOutput::default(),
            boot_timer: true,
            api_socket: None,
            cpuid: Vec::new(),
            seccomp: true,
            jail: None,
            dry_boot: false,
            force_pvm: false,
            kvm_device: default_kvm(),
        }
    }
}

impl VmConfig {
    /// Reads a config file: TOML when the name ends in `.toml`, JSON otherwise.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let toml = path.extension().is_some_and(|e| e == "toml");
        if toml {
            toml::from_str(&text).map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                format: "TOML",
                reason: e.message().to_string(),
            })
        } else {
            serde_json::from_str(&text).map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                format: "JSON",
                reason: e.to_string(),
            })
        }
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

/// Parses a size such as `128M`, `1G`, `512MiB` or `64` (MiB) into MiB.
pub fn parse_size_mib(s: &str) -> Result<u64> {
    let bad = || {
        Error::Invalid(format!(
            "memory size '{s}' is not a size: use e.g. 128M, 1G or a number of MiB"
        ))
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mib = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => Some(n),
        "g" | "gb" | "gib" => n.checked_mul(1024),
        "k" | "kb" | "kib" if n.is_multiple_of(1024) => Some(n / 1024),
        "k" | "kb" | "kib" => {
            return Err(Error::Invalid(format!(
                "memory size '{s}' is not a whole number of MiB"
            )));
        }
        _ => None,
    };
    mib.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("128").unwrap(), 128);
        assert_eq!(parse_size_mib("128M").unwrap(), 128);
        assert_eq!(parse_size_mib("2G").unwrap(), 2048);
        assert_eq!(parse_size_mib("512MiB").unwrap(), 512);
        assert_eq!(parse_size_mib("2048k").unwrap(), 2);
        assert!(parse_size_mib("1000k").is_err());
        assert!(parse_size_mib("lots").is_err());
        assert!(parse_size_mib("12Q").is_err());
    }

    #[test]
    fn json_and_toml_files() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("vm.json");
        std::fs::write(
            &j,
            r#"{"kernel": "/k", "memory_mib": 256, "vcpus": 2, "serial": "none",
                "block": [{"path": "/img", "read_only": true}],
                "vsock": {"socket": "/tmp/v.sock"}}"#,
        )
        .unwrap();
        let c = VmConfig::from_file(&j).unwrap();
        assert_eq!(c.memory_mib, 256);
        assert_eq!(c.serial, SerialOutput::None);
        assert!(c.block[0].read_only);
        assert_eq!(c.vsock.as_ref().unwrap().cid, 3);
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);

        let t = d.path().join("vm.toml");
        std::fs::write(
            &t,
            "kernel = \"/k\"\nserial = \"/tmp/console.log\"\n[[cpuid]]\nleaf = 1\necx = 5\n",
        )
        .unwrap();
        let c = VmConfig::from_file(&t).unwrap();
        assert_eq!(c.serial, SerialOutput::File("/tmp/console.log".into()));
        assert_eq!(c.cpuid[0].ecx, Some(5));

        std::fs::write(&j, r#"{"kernal": "/k"}"#).unwrap();
        let e = VmConfig::from_file(&j).unwrap_err().to_string();
        assert!(e.contains("kernal"), "{e}");
    }
}
