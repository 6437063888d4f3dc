//! A tiny static probe for the conformance suite: makes one system call busybox cannot and exits
//! with its errno (0 when it succeeded), so the suite can check what seccomp allows.
//!
//! Built by the test harness with `rustc -C target-feature=+crt-static` and copied into a rootfs.
//! Usage: `probe keyctl` | `probe unshare-user` | `probe getpid` | `probe segv` (dies of SIGSEGV).

unsafe extern "C" {
    fn syscall(number: i64, ...) -> i64;
    fn __errno_location() -> *mut i32;
}

const SYS_GETPID: i64 = 39;
const SYS_UNSHARE: i64 = 272;
const SYS_KEYCTL: i64 = 250;
const KEYCTL_JOIN_SESSION_KEYRING: i64 = 1;
const CLONE_NEWUSER: i64 = 0x1000_0000;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    // SAFETY: each call passes the argument types the kernel expects for that system call.
    let rc = unsafe {
        match what.as_str() {
            "keyctl" => syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, 0i64),
            "unshare-user" => syscall(SYS_UNSHARE, CLONE_NEWUSER),
            "getpid" => syscall(SYS_GETPID),
            "segv" => {
                // A real fault: even a pid namespace's init dies of it.
                let p = std::hint::black_box(std::ptr::null_mut::<u8>());
                p.write_volatile(1);
                0
            }
            _ => {
                eprintln!("usage: probe keyctl|unshare-user|getpid|segv");
                std::process::exit(100);
            }
        }
    };
    // SAFETY: errno is thread-local and always valid to read.
    let errno = if rc < 0 { unsafe { *__errno_location() } } else { 0 };
    println!("{what}: {}", if errno == 0 { "ok".to_string() } else { format!("errno {errno}") });
    std::process::exit(errno);
}
