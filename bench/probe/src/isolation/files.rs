//! Probes of what the sandbox shows through `/proc` and `/sys`: the kernel and boot it runs on,
//! the host's processes, kernel memory and keys, firmware tables, and writable sysctls.

use std::ffi::CStr;
use std::fs;
use std::io::Write;
use std::path::Path;

use super::{Host, Verdict};
use crate::sys::{self, ENOENT, Errno, FileKind};

/// `kernel`: the kernel release `uname` reports, against the host's.
pub fn kernel(host: &Host) -> Verdict {
    let release = match sys::kernel_release() {
        Ok(r) => r,
        Err(e) => return Verdict::unknown(format!("uname: {e}")),
    };
    match &host.kernel {
        Some(h) => Verdict::when(&release != h, release),
        None => Verdict::unknown(format!("{release} (no --host-kernel to compare)")),
    }
}

/// `boot_id`: whether the sandbox runs on the host's boot of the kernel.
pub fn boot_id(host: &Host) -> Verdict {
    let id = match fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(s) => s.trim().to_string(),
        Err(e) => return Verdict::unknown(format!("boot_id: {}", Errno::of(&e))),
    };
    match &host.boot_id {
        Some(h) => Verdict::when(&id != h, id),
        None => Verdict::unknown(format!("{id} (no --host-boot-id to compare)")),
    }
}

/// How many numeric (process) entries `/proc` lists, or why it cannot be listed.
fn visible_pids() -> String {
    match fs::read_dir("/proc") {
        Ok(dir) => {
            let n = dir
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|s| s.parse::<u32>().is_ok())
                })
                .count();
            format!("{n} pids in /proc")
        }
        Err(e) => format!("/proc unlistable: {}", Errno::of(&e)),
    }
}

/// `host_pids`: whether the host's process `--host-pid` shows in `/proc` (its `comm` readable).
pub fn host_pids(host: &Host) -> Verdict {
    let count = visible_pids();
    let Some(pid) = host.pid else {
        return Verdict::unknown(format!("{count} (no --host-pid to look for)"));
    };
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => Verdict::exposed(format!(
            "host pid {pid} visible (comm {:?}); {count}",
            comm.trim()
        )),
        Err(e) => Verdict::isolated(format!("/proc/{pid}/comm: {}; {count}", Errno::of(&e))),
    }
}

/// Opens `path` and reads up to `len` bytes: `Ok((bytes read, masked))`, masked meaning the path
/// is a character device (`/dev/null` bound over it); else the step that failed and its errno.
fn open_read(path: &CStr, len: usize) -> Result<(usize, bool), (&'static str, Errno)> {
    let fd = sys::open(path, sys::O_RDONLY).map_err(|e| ("open", e))?;
    let masked = sys::file_kind(fd) == Ok(FileKind::CharDevice);
    let mut buf = vec![0u8; len];
    let got = sys::read(fd, &mut buf).map_err(|e| ("read", e));
    sys::close(fd);
    Ok((got?, masked))
}

/// A verdict on reading a file the sandbox should hide: a failed open or read, or an empty read
/// (masked with `/dev/null` or an empty file), is isolated; any byte read is not. A file missing
/// from a mounted procfs is missing from the kernel (built without it), which says nothing about
/// the sandbox.
fn hidden_file(path: &CStr, len: usize) -> Verdict {
    match open_read(path, len) {
        Err(("open", ENOENT)) if Path::new("/proc/self").exists() => Verdict::unknown(format!(
            "ENOENT: the kernel has no {} (procfs is mounted)",
            path.to_string_lossy()
        )),
        Err((step, e)) => Verdict::isolated(format!("{step}: {e}")),
        Ok((0, true)) => Verdict::isolated("empty (masked: a character device)"),
        Ok((0, false)) => Verdict::isolated("empty (masked)"),
        Ok((n, _)) => Verdict::exposed(format!("read {n} byte{}", if n == 1 { "" } else { "s" })),
    }
}

/// `proc_kcore`: one byte of the kernel's memory image.
pub fn proc_kcore(_: &Host) -> Verdict {
    hidden_file(c"/proc/kcore", 1)
}

/// `proc_keys`: the kernel keys visible to the caller.
pub fn proc_keys(_: &Host) -> Verdict {
    hidden_file(c"/proc/keys", 4096)
}

/// `sys_firmware`: the entries of `/sys/firmware` (ACPI tables, EFI variables, DMI).
pub fn sys_firmware(_: &Host) -> Verdict {
    match fs::read_dir("/sys/firmware") {
        Err(e) => Verdict::isolated(format!("open: {}", Errno::of(&e))),
        Ok(dir) => {
            let names: Vec<String> = dir
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            match names.len() {
                0 => Verdict::isolated("0 entries"),
                n => Verdict::exposed(format!("{n} entries ({})", names.join(" "))),
            }
        }
    }
}

/// `proc_sys_write`: writes `vm.overcommit_ratio`'s own value back to it.
pub fn proc_sys_write(_: &Host) -> Verdict {
    const PATH: &str = "/proc/sys/vm/overcommit_ratio";
    let value = match fs::read_to_string(PATH) {
        Ok(v) => v,
        Err(e) => return Verdict::unknown(format!("cannot read it: {}", Errno::of(&e))),
    };
    let mut f = match fs::OpenOptions::new().write(true).open(PATH) {
        Ok(f) => f,
        Err(e) => return Verdict::isolated(format!("open O_WRONLY: {}", Errno::of(&e))),
    };
    match f.write_all(value.as_bytes()) {
        Ok(()) => Verdict::exposed(format!("wrote {:?} back", value.trim())),
        Err(e) => Verdict::isolated(format!("write: {}", Errno::of(&e))),
    }
}
