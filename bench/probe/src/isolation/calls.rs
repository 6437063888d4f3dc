//! Probes of single privileged system calls: mounting, raw sockets, kernel keys, BPF, module
//! loading, and reaching the host over TCP.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Host, Verdict};
use crate::sys::{self, ENOSYS, EPERM, Errno};

/// A directory to mount on: `/tmp/<name>.<pid>`, created (and so to be removed after) when it
/// can be, else `/tmp` itself. The bool says whether it was created.
pub(super) fn scratch_dir(name: &str) -> Result<(PathBuf, bool), String> {
    let dir = PathBuf::from(format!("/tmp/{name}.{}", sys::getpid()));
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok((dir, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((dir, false)),
        Err(_) if Path::new("/tmp").is_dir() => Ok((PathBuf::from("/tmp"), false)),
        Err(e) => Err(format!(
            "no directory to mount on: mkdir {}: {e}",
            dir.display()
        )),
    }
}

/// What a mount attempt came to.
pub(super) enum Mounted {
    /// It worked (and was unmounted again) on this directory.
    At(String),
    /// The kernel refused it.
    Refused(Errno),
    /// There was no directory to try it on.
    Nowhere(String),
}

/// Mounts a `fstype` filesystem on a scratch directory named after `name`, and unmounts it again.
pub(super) fn try_mount(fstype: &str, name: &str) -> Mounted {
    let (dir, created) = match scratch_dir(name) {
        Ok(d) => d,
        Err(why) => return Mounted::Nowhere(why),
    };
    let (Ok(target), Ok(fs)) = (
        CString::new(dir.as_os_str().as_encoded_bytes()),
        CString::new(fstype),
    ) else {
        return Mounted::Nowhere("NUL in a path".into());
    };
    let r = sys::mount(c"none", &target, &fs);
    if r.is_ok() {
        let _ = sys::umount(&target);
    }
    if created {
        let _ = std::fs::remove_dir(&dir);
    }
    match r {
        Ok(_) => Mounted::At(dir.display().to_string()),
        Err(e) => Mounted::Refused(e),
    }
}

/// `mount`: a tmpfs on a scratch directory under `/tmp`.
pub fn mount(_: &Host) -> Verdict {
    match try_mount("tmpfs", "moat-bench-probe-mnt") {
        Mounted::At(at) => Verdict::exposed(format!("mounted tmpfs on {at}")),
        Mounted::Refused(e) => Verdict::isolated(e.to_string()),
        Mounted::Nowhere(why) => Verdict::unknown(why),
    }
}

/// `raw_socket`: `socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)`, which needs CAP_NET_RAW.
pub fn raw_socket(_: &Host) -> Verdict {
    const AF_INET: i64 = 2;
    const SOCK_RAW: i64 = 3;
    const IPPROTO_ICMP: i64 = 1;
    match sys::socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) {
        Ok(fd) => {
            sys::close(fd);
            Verdict::exposed("opened a raw ICMP socket")
        }
        Err(e) => Verdict::isolated(e.to_string()),
    }
}

/// `keyctl`: joining a new session keyring (the kernel keyring is not namespaced).
pub fn keyctl(_: &Host) -> Verdict {
    match sys::keyctl_join_session() {
        Ok(serial) => Verdict::exposed(format!("joined session keyring {serial}")),
        Err(e) => Verdict::isolated(e.to_string()),
    }
}

/// `bpf`: creating a one-element array map.
pub fn bpf(_: &Host) -> Verdict {
    match sys::bpf_array_map() {
        Ok(fd) => {
            sys::close(fd);
            Verdict::exposed("created a BPF array map")
        }
        Err(e) => Verdict::isolated(e.to_string()),
    }
}

/// `module_load`: `init_module` of a zeroed image. EPERM (CAP_SYS_MODULE missing, or seccomp) or
/// ENOSYS (seccomp) is a refusal; ENOEXEC and the like mean the kernel parsed the image, i.e. the
/// call was allowed. ENOSYS on a kernel built without modules (no `/proc/modules`) says nothing
/// about the sandbox.
pub fn module_load(_: &Host) -> Verdict {
    match sys::init_module_zeroed() {
        Ok(_) => Verdict::exposed("the zeroed image was accepted"),
        Err(e) if e == EPERM => Verdict::isolated(e.to_string()),
        Err(e) if e == ENOSYS => {
            let no_modules =
                Path::new("/proc/self").exists() && !Path::new("/proc/modules").exists();
            if no_modules {
                Verdict::unknown("ENOSYS: the kernel has no module support (no /proc/modules)")
            } else {
                Verdict::isolated(e.to_string())
            }
        }
        Err(e) => Verdict::exposed(format!("{e}: the kernel examined the image (call allowed)")),
    }
}

/// `host_network`: a TCP connection to `--host-addr`, with a one-second timeout.
pub fn host_network(host: &Host) -> Verdict {
    let Some(addr) = host.addr else {
        return Verdict::unknown("no --host-addr to connect to");
    };
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => Verdict::exposed(format!("connected to {addr}")),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            Verdict::isolated(format!("connect to {addr}: timed out after 1 s"))
        }
        Err(e) => Verdict::isolated(format!("connect to {addr}: {}", Errno::of(&e))),
    }
}
