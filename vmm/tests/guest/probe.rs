//! `probe`: a tiny static /init for moat-vmm's Linux tests (not moat-agent, which owns the real
//! guest). Built by the tests with plain `rustc` (std only, glibc linked statically) and put in an
//! initramfs as `/init`. It exercises what the VMM must carry and prints what it saw on the console:
//!
//! 1. if `/dev/vda` exists: mounts it read-only (ext4) and prints `probe: file: <hello.txt>`;
//! 2. listens on vsock port 1024, announces `probe: listening` (and writes the ready byte to the
//!    boot-timer port), accepts one connection and echoes every byte back until the host closes;
//!    prints `probe: echoed <n> bytes`;
//! 3. connects to the host (CID 2) port 2000, sends `hello from the guest\n`, prints
//!    `probe: host said: <reply>`;
//! 4. announces the power-off on the boot-timer port and resets the VM (`reboot=k`).
//!
//! Any failure prints `probe: FAILED: <what>` and resets without the announcement (the VMM then
//! exits non-zero).

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const HOST_CID: u32 = 2;
const ANY_CID: u32 = u32::MAX;
const BOOT_TIMER_PORT: u16 = 0x450;
const READY: u8 = 0x7b;
const POWEROFF: u8 = 0x7c;
const RB_AUTOBOOT: i32 = 0x0123_4567;
const MS_RDONLY: u64 = 1;

#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

unsafe extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept(fd: i32, addr: *mut u8, len: *mut u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn shutdown(fd: i32, how: i32) -> i32;
    fn mount(src: *const i8, target: *const i8, fstype: *const i8, flags: u64, data: *const u8)
    -> i32;
    fn ioperm(from: u64, num: u64, on: i32) -> i32;
    fn reboot(cmd: i32) -> i32;
    fn sync();
}

fn say(msg: &str) {
    let mut c = std::fs::OpenOptions::new().write(true).open("/dev/console").ok();
    match c.as_mut() {
        Some(c) => {
            let _ = writeln!(c, "probe: {msg}");
        }
        None => println!("probe: {msg}"),
    }
}

fn outb(port: u16, value: u8) {
    // SAFETY: ioperm granted this port; the VMM's boot-timer device takes the byte.
    unsafe { std::arch::asm!("out dx, al", in("dx") port, in("al") value) };
}

fn addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    }
}

fn vsock() -> Result<i32, String> {
    // SAFETY: plain syscall.
    let fd = unsafe { socket(AF_VSOCK, SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(format!("socket(AF_VSOCK): {}", std::io::Error::last_os_error()));
    }
    Ok(fd)
}

fn mount_fs(src: &str, target: &str, fstype: &str, flags: u64) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(src).map_err(|e| e.to_string())?,
        CString::new(target).map_err(|e| e.to_string())?,
        CString::new(fstype).map_err(|e| e.to_string())?,
    );
    // SAFETY: valid C strings.
    let rc = unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, std::ptr::null()) };
    if rc != 0 {
        return Err(format!("mount {src} on {target}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn read_file() -> Result<(), String> {
    if std::fs::metadata("/dev/vda").is_err() {
        return Ok(());
    }
    mount_fs("/dev/vda", "/mnt", "ext4", MS_RDONLY)?;
    let text = std::fs::read_to_string("/mnt/hello.txt").map_err(|e| format!("read hello.txt: {e}"))?;
    say(&format!("file: {}", text.trim_end()));
    Ok(())
}

fn echo() -> Result<(), String> {
    let l = vsock()?;
    let a = addr(ANY_CID, 1024);
    // SAFETY: valid address and length.
    let rc = unsafe { bind(l, &a, std::mem::size_of::<SockaddrVm>() as u32) };
    // SAFETY: plain syscall.
    if rc != 0 || unsafe { listen(l, 4) } != 0 {
        return Err(format!("bind/listen vsock 1024: {}", std::io::Error::last_os_error()));
    }
    say("listening");
    outb(BOOT_TIMER_PORT, READY);
    // SAFETY: null address is allowed.
    let c = unsafe { accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
    if c < 0 {
        return Err(format!("accept: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: we own the accepted fd.
    let mut s = unsafe { File::from_raw_fd(c) };
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("echo read: {e}"))?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).map_err(|e| format!("echo write: {e}"))?;
        total += n as u64;
    }
    // SAFETY: plain syscall on our fd.
    unsafe { shutdown(c, 1) };
    say(&format!("echoed {total} bytes"));
    Ok(())
}

fn call_host() -> Result<(), String> {
    let fd = vsock()?;
    let a = addr(HOST_CID, 2000);
    // SAFETY: valid address and length.
    if unsafe { connect(fd, &a, std::mem::size_of::<SockaddrVm>() as u32) } != 0 {
        return Err(format!("connect to host port 2000: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: we own the fd.
    let mut s = unsafe { File::from_raw_fd(fd) };
    s.write_all(b"hello from the guest\n").map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| format!("receive: {e}"))?;
    say(&format!("host said: {}", reply.trim_end()));
    Ok(())
}

fn main() {
    // SAFETY: plain syscall; PID 1 runs as root.
    if unsafe { ioperm(u64::from(BOOT_TIMER_PORT), 1, 1) } != 0 {
        say("FAILED: ioperm");
    }
    let result = mount_fs("devtmpfs", "/dev", "devtmpfs", 0)
        .and_then(|()| read_file())
        .and_then(|()| echo())
        .and_then(|()| call_host());
    match result {
        Ok(()) => {
            say("done");
            outb(BOOT_TIMER_PORT, POWEROFF);
        }
        Err(e) => say(&format!("FAILED: {e}")),
    }
    // SAFETY: flushing and resetting the VM is what PID 1 is here for.
    unsafe {
        sync();
        reboot(RB_AUTOBOOT);
    }
}
