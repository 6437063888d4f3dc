//! The `moat-vmm` command line. Flags override the values of a `--config` file.

use std::path::PathBuf;

use clap::Parser;

use super::{
    BlockConfig, CpuidOverride, Error, JailConfig, Result, SerialOutput, VmConfig, VsockConfig,
    parse_size_mib,
};

/// moat-vmm: a KVM microVM monitor that boots moat's guest kernel to moat-agent.
///
/// Exit status: 0 when the guest powers off (keyboard-controller reset), the API asks to stop, or
/// --dry-boot finishes; 1 for bad input or a VMM error; 2 for a guest kernel panic; 3 for a guest
/// crash (triple fault, KVM internal error, failed VM entry).
#[derive(Debug, Parser)]
#[command(name = "moat-vmm", version)]
pub struct Args {
    /// JSON (or .toml) config file; the flags below override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kernel: vmlinux (PVH or 64-bit ELF entry) or bzImage.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Raw 64-bit code to run at 1 MiB instead of a kernel (tests, benchmarks).
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// Initramfs.
    #[arg(long, value_name = "FILE")]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line (replaces the default).
    #[arg(long, value_name = "STRING")]
    pub cmdline: Option<String>,
    /// Extra kernel command-line words, appended to the default or given one.
    #[arg(long, value_name = "STRING")]
    pub append: Vec<String>,
    /// Guest memory (e.g. 128M, 1G; a plain number is MiB). Default 128M.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Number of vCPUs. Default 1.
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// Hybrid vsock Unix socket (host connects and writes `CONNECT <port>\n`).
    #[arg(long, value_name = "PATH")]
    pub vsock: Option<PathBuf>,
    /// Guest vsock CID. Default 3.
    #[arg(long, value_name = "CID")]
    pub vsock_cid: Option<u64>,
    /// A virtio-blk device: `PATH[,ro][,id=SERIAL]`. Repeatable: vda, vdb, ...
    #[arg(long, value_name = "SPEC")]
    pub block: Vec<String>,
    /// Serial console: `stdout`, `none` or a file. Default stdout.
    #[arg(long, value_name = "DEST")]
    pub serial: Option<String>,
    /// Leave out the boot-timer device.
    #[arg(long)]
    pub no_boot_timer: bool,
    /// Control API Unix socket (see docs: stop, pause, resume, metrics).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// CPUID override `LEAF[.SUBLEAF]:REG=VALUE` (numbers in hex with 0x or decimal). Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub cpuid: Vec<String>,
    /// Do not install the seccomp filters (debugging only).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Jail into this per-VM directory (new mount namespace, pivot_root, no capabilities).
    #[arg(long, value_name = "DIR")]
    pub jail: Option<PathBuf>,
    /// In the jail, run as this uid.
    #[arg(long, value_name = "UID", requires = "jail")]
    pub jail_uid: Option<u32>,
    /// In the jail, run as this gid.
    #[arg(long, value_name = "GID", requires = "jail")]
    pub jail_gid: Option<u32>,
    /// Set up the VM, load the kernel, then exit 0 without running the guest (floor benchmark).
    #[arg(long, alias = "exit-before-run")]
    pub dry_boot: bool,
    /// Boot a Linux kernel even though /dev/kvm is PVM (debugging: the guest dies early).
    #[arg(long, hide = true)]
    pub force_pvm: bool,
    /// The KVM device node (default /dev/kvm).
    #[arg(long, value_name = "PATH", hide = true)]
    pub kvm_device: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace). Default warn; or RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

fn parse_num(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `LEAF[.SUBLEAF]:REG=VALUE`.
pub fn parse_cpuid(spec: &str) -> Result<CpuidOverride> {
    let bad = || {
        Error::Invalid(format!(
            "CPUID override '{spec}' is malformed: use LEAF[.SUBLEAF]:REG=VALUE, e.g. 0x80000008:eax=0x3030"
        ))
    };
    let (leaf_part, assign) = spec.split_once(':').ok_or_else(bad)?;
    let (leaf, subleaf) = match leaf_part.split_once('.') {
        Some((l, s)) => (parse_num(l).ok_or_else(bad)?, parse_num(s).ok_or_else(bad)?),
        None => (parse_num(leaf_part).ok_or_else(bad)?, 0),
    };
    let (reg, value) = assign.split_once('=').ok_or_else(bad)?;
    let value = parse_num(value).ok_or_else(bad)?;
    let mut o = CpuidOverride {
        leaf,
        subleaf,
        eax: None,
        ebx: None,
        ecx: None,
        edx: None,
    };
    match reg.to_ascii_lowercase().as_str() {
        "eax" => o.eax = Some(value),
        "ebx" => o.ebx = Some(value),
        "ecx" => o.ecx = Some(value),
        "edx" => o.edx = Some(value),
        _ => return Err(bad()),
    }
    Ok(o)
}

/// Parses `PATH[,ro][,id=SERIAL]`.
pub fn parse_block(spec: &str) -> Result<BlockConfig> {
    let mut parts = spec.split(',');
    let path = parts.next().filter(|p| !p.is_empty()).ok_or_else(|| {
        Error::Invalid(format!("block device '{spec}': the image path is missing"))
    })?;
    let mut b = BlockConfig {
        path: PathBuf::from(path),
        read_only: false,
        id: None,
    };
    for p in parts {
        match p {
            "ro" => b.read_only = true,
            "rw" => b.read_only = false,
            _ if p.starts_with("id=") => b.id = Some(p[3..].to_string()),
            _ => {
                return Err(Error::Invalid(format!(
                    "block device '{spec}': unknown option '{p}' (use ro, rw or id=SERIAL)"
                )));
            }
        }
    }
    Ok(b)
}

impl Args {
    /// The configuration: the `--config` file (if any) with the flags applied over it.
    pub fn to_config(&self) -> Result<VmConfig> {
        let mut c = match &self.config {
            Some(p) => VmConfig::from_file(p)?,
            None => VmConfig::default(),
        };
        if let Some(k) = &self.kernel {
            c.kernel = Some(k.clone());
        }
        if let Some(p) = &self.payload {
            c.payload = Some(p.clone());
        }
        if let Some(i) = &self.initramfs {
            c.initramfs = Some(i.clone());
        }
        if let Some(s) = &self.cmdline {
            c.cmdline = s.clone();
        }
        for a in &self.append {
            c.cmdline.push(' ');
            c.cmdline.push_str(a);
        }
        if let Some(m) = &self.memory {
            c.memory_mib = parse_size_mib(m)?;
        }
        if let Some(n) = self.vcpus {
            c.vcpus = n;
        }
        if let Some(s) = &self.vsock {
            c.vsock = Some(VsockConfig {
                socket: s.clone(),
                cid: moat_abi::GUEST_CID,
            });
        }
        if let Some(cid) = self.vsock_cid {
            match &mut c.vsock {
                Some(v) => v.cid = cid,
                None => {
                    return Err(Error::Invalid(
                        "--vsock-cid needs --vsock PATH (or a vsock section in the config)".into(),
                    ));
                }
            }
        }
        for b in &self.block {
            c.block.push(parse_block(b)?);
        }
        if let Some(s) = &self.serial {
            c.serial = SerialOutput::parse(s);
        }
        if self.no_boot_timer {
            c.boot_timer = false;
        }
        if let Some(a) = &self.api_sock {
            c.api_socket = Some(a.clone());
        }
        for s in &self.cpuid {
            c.cpuid.push(parse_cpuid(s)?);
        }
        if self.no_seccomp {
            c.seccomp = false;
        }
        if let Some(d) = &self.jail {
            c.jail = Some(JailConfig {
                dir: d.clone(),
                uid: self.jail_uid,
                gid: self.jail_gid,
            });
        }
        if self.dry_boot {
            c.dry_boot = true;
        }
        if self.force_pvm {
            c.force_pvm = true;
        }
        if let Some(k) = &self.kvm_device {
            c.kvm_device = k.clone();
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_specs() {
        let o = parse_cpuid("0x80000008:eax=0x3028").unwrap();
        assert_eq!((o.leaf, o.subleaf, o.eax), (0x8000_0008, 0, Some(0x3028)));
        let o = parse_cpuid("7.1:EDX=5").unwrap();
        assert_eq!((o.leaf, o.subleaf, o.edx), (7, 1, Some(5)));
        for bad in ["7", "7:eax", "7:esp=1", "x:eax=1", "7.z:eax=1"] {
            assert!(parse_cpuid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn block_specs() {
        let b = parse_block("/img,ro,id=root").unwrap();
        assert_eq!((b.read_only, b.id.as_deref()), (true, Some("root")));
        assert!(!parse_block("/img").unwrap().read_only);
        assert!(parse_block(",ro").is_err());
        assert!(parse_block("/img,fast").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.json");
        std::fs::write(&f, r#"{"kernel": "/a", "memory_mib": 64, "vcpus": 4}"#).unwrap();
        let args = Args::parse_from([
            "moat-vmm",
            "--config",
            f.to_str().unwrap(),
            "--memory",
            "1G",
            "--append",
            "quiet",
            "--block",
            "/img,ro",
        ]);
        let c = args.to_config().unwrap();
        assert_eq!((c.memory_mib, c.vcpus), (1024, 4));
        assert!(c.cmdline.ends_with(" quiet"));
        assert_eq!(c.block.len(), 1);
    }
}
