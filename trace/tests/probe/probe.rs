//! A small static probe run under the trace supervisor by the tests and the benchmark. Built by
//! the tests with `rustc -C target-feature=+crt-static` (no crates), so it also runs in a busybox
//! container.
//!
//! - `probe bench getpid N` / `probe bench open PATH N`: N calls (openat + close), prints
//!   `ns/call <float>`.
//! - `probe race ALLOWED DENIED N [thread|process]`: one thread opens a path buffer N times while
//!   another thread (or a process sharing the page) keeps swapping it between ALLOWED and DENIED;
//!   prints how often each file was opened and how many calls ran while the buffer changed.
//! - `probe attack`: tries to write, unmap, remap and reprotect its own pinned-argument region;
//!   prints one line per attempt.
//! - `probe escape`: tries the calls the supervisor must refuse; prints one line per call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

unsafe extern "C" {
    fn syscall(number: i64, ...) -> i64;
    fn __errno_location() -> *mut i32;
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

const SYS_READ: i64 = 0;
const SYS_CLOSE: i64 = 3;
const SYS_MPROTECT: i64 = 10;
const SYS_MUNMAP: i64 = 11;
const SYS_MREMAP: i64 = 25;
const SYS_GETPID: i64 = 39;
const SYS_SOCKET: i64 = 41;
const SYS_PTRACE: i64 = 101;
const SYS_KEYCTL: i64 = 250;
const SYS_OPENAT: i64 = 257;
const SYS_UNSHARE: i64 = 272;
const SYS_PROCESS_VM_WRITEV: i64 = 311;
const SYS_SECCOMP: i64 = 317;
const SYS_CLONE3: i64 = 435;
const SYS_IO_URING_SETUP: i64 = 425;
const SYS_PIDFD_GETFD: i64 = 438;
const AT_FDCWD: i64 = -100;

fn errno() -> i32 {
    // SAFETY: errno is thread-local and always readable.
    unsafe { *__errno_location() }
}

fn sys(nr: i64, a: [i64; 6]) -> Result<i64, i32> {
    // SAFETY: the callers pass arguments of the types each call expects.
    let rc = unsafe { syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if rc < 0 { Err(errno()) } else { Ok(rc) }
}

fn show(what: &str, r: Result<i64, i32>) {
    match r {
        Ok(v) => println!("{what}: ok {v}"),
        Err(e) => println!("{what}: errno {e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "bench" => bench(&arg(2), &args[3..]),
        "race" => race(&arg(2), &arg(3), arg(4).parse().unwrap_or(1000), &arg(5)),
        "attack" => attack(),
        "escape" => escape(),
        _ => {
            eprintln!("usage: probe bench getpid N | bench open PATH N | race A D N [thread|process] | attack | escape");
            std::process::exit(2);
        }
    }
}

fn bench(what: &str, rest: &[String]) {
    let (path, n) = match what {
        "getpid" => (String::new(), rest.first().and_then(|s| s.parse().ok()).unwrap_or(1_000_000)),
        _ => (
            rest.first().cloned().unwrap_or_default(),
            rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000),
        ),
    };
    let c = format!("{path}\0");
    let t = Instant::now();
    for _ in 0..n {
        if what == "getpid" {
            let _ = sys(SYS_GETPID, [0; 6]);
        } else {
            let fd = sys(SYS_OPENAT, [AT_FDCWD, c.as_ptr() as i64, 0, 0, 0, 0]).unwrap_or_else(|e| {
                eprintln!("openat {path}: errno {e}");
                std::process::exit(1)
            });
            let _ = sys(SYS_CLOSE, [fd, 0, 0, 0, 0, 0]);
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("ns/call {ns:.1}");
}

/// The buffer both paths are written into, one byte at a time (so torn mixes happen too).
const BUF: usize = 256;

fn race(allowed: &str, denied: &str, n: u64, mode: &str) {
    // A shared anonymous page: threads share it, and so does a forked child.
    // SAFETY: a fresh anonymous shared mapping.
    let buf = unsafe { mmap(std::ptr::null_mut(), 4096, 3, 0x01 | 0x20, -1, 0) };
    let flips = buf.wrapping_add(BUF) as *const AtomicU64;
    let stop = buf.wrapping_add(BUF + 8) as *const AtomicBool;
    let paths: [Vec<u8>; 2] = [format!("{allowed}\0").into_bytes(), format!("{denied}\0").into_bytes()];
    for (i, b) in paths[0].iter().enumerate() {
        // SAFETY: i < BUF (paths are short) inside our page; volatile so the writes happen.
        unsafe { std::ptr::write_volatile(buf.add(i), *b) };
    }
    let base = buf as usize;
    let flipper = move || {
        let buf = base as *mut u8;
        let flips = (base + BUF) as *const AtomicU64;
        let stop = (base + BUF + 8) as *const AtomicBool;
        let mut k = 0usize;
        // SAFETY: `stop` and `flips` point into the shared page, suitably aligned.
        while !unsafe { &*stop }.load(Ordering::Relaxed) {
            k ^= 1;
            for (i, b) in paths[k].iter().enumerate() {
                // SAFETY: i < BUF (paths are short), inside the shared page.
                unsafe { std::ptr::write_volatile(buf.add(i), *b) };
            }
            // SAFETY: as above.
            unsafe { &*flips }.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut child = 0;
    let mut thread = None;
    if mode == "process" {
        // SAFETY: the child only runs the flipper loop and exits.
        child = unsafe { fork() };
        if child == 0 {
            flipper();
            std::process::exit(0);
        }
    } else {
        thread = Some(std::thread::spawn(flipper));
    }
    let (mut got_allowed, mut got_denied, mut refused, mut raced) = (0u64, 0u64, 0u64, 0u64);
    let secret = std::fs::read(denied).unwrap_or_default();
    let mut content = [0u8; 64];
    for _ in 0..n {
        // SAFETY: as above.
        let before = unsafe { &*flips }.load(Ordering::Relaxed);
        let r = sys(SYS_OPENAT, [AT_FDCWD, buf as i64, 0, 0, 0, 0]);
        // SAFETY: as above.
        let after = unsafe { &*flips }.load(Ordering::Relaxed);
        if after != before {
            raced += 1;
        }
        match r {
            Ok(fd) => {
                let len = sys(SYS_READ, [fd, content.as_mut_ptr() as i64, 64, 0, 0, 0]).unwrap_or(0);
                let _ = sys(SYS_CLOSE, [fd, 0, 0, 0, 0, 0]);
                if !secret.is_empty() && content[..len as usize] == secret[..secret.len().min(64)] {
                    got_denied += 1;
                } else {
                    got_allowed += 1;
                }
            }
            Err(_) => refused += 1,
        }
    }
    // SAFETY: as above.
    unsafe { &*stop }.store(true, Ordering::Relaxed);
    if let Some(t) = thread {
        let _ = t.join();
    }
    if child > 0 {
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe {
            kill(child, 9);
            waitpid(child, &mut st, 0);
        }
    }
    println!("allowed {got_allowed} denied-opened {got_denied} refused {refused} raced {raced}");
}

fn region() -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.contains("moat-trace"))?;
    let range = line.split_whitespace().next()?;
    let (a, b) = range.split_once('-')?;
    Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
}

fn attack() {
    let Some((start, end)) = region() else {
        println!("region: missing");
        return;
    };
    println!("region: {start:x}-{end:x}");
    let len = (end - start) as i64;
    show("mprotect-rw", sys(SYS_MPROTECT, [start as i64, len, 3, 0, 0, 0]));
    show("munmap", sys(SYS_MUNMAP, [start as i64, len, 0, 0, 0, 0]));
    // SAFETY: MAP_FIXED over the region; the kernel refuses (sealed) or we learn it did not.
    let p = unsafe { mmap(start as *mut u8, 4096, 3, 0x02 | 0x20 | 0x10, -1, 0) };
    if p as i64 == -1 {
        println!("mmap-fixed: errno {}", errno());
    } else {
        println!("mmap-fixed: ok {p:?}");
    }
    // SAFETY: a fresh anonymous private page.
    let other = unsafe { mmap(std::ptr::null_mut(), 4096, 3, 0x02 | 0x20, -1, 0) };
    show(
        "mremap-over",
        sys(SYS_MREMAP, [other as i64, 4096, 4096, 1 | 2, start as i64, 0]),
    );
    match std::fs::OpenOptions::new().write(true).open("/proc/self/mem") {
        Ok(f) => {
            use std::os::unix::fs::FileExt;
            match f.write_at(b"X", start) {
                Ok(n) => println!("proc-self-mem: ok {n}"),
                Err(e) => println!("proc-self-mem: errno {}", e.raw_os_error().unwrap_or(0)),
            }
        }
        Err(e) => println!("proc-self-mem-open: errno {}", e.raw_os_error().unwrap_or(0)),
    }
}

fn escape() {
    show("ptrace", sys(SYS_PTRACE, [0x4206, 1, 0, 0, 0, 0])); // PTRACE_SEIZE pid 1
    show("process_vm_writev", sys(SYS_PROCESS_VM_WRITEV, [1, 0, 0, 0, 0, 0]));
    show("pidfd_getfd", sys(SYS_PIDFD_GETFD, [0, 0, 0, 0, 0, 0]));
    show("io_uring_setup", sys(SYS_IO_URING_SETUP, [1, 0, 0, 0, 0, 0]));
    show("clone3", sys(SYS_CLONE3, [0, 0, 0, 0, 0, 0]));
    show("unshare-user", sys(SYS_UNSHARE, [0x1000_0000, 0, 0, 0, 0, 0]));
    // seccomp(SET_MODE_FILTER, NEW_LISTENER, NULL)
    show("seccomp-listener", sys(SYS_SECCOMP, [1, 8, 0, 0, 0, 0]));
    show("keyctl", sys(SYS_KEYCTL, [1, 0, 0, 0, 0, 0]));
    show("socket-packet", sys(SYS_SOCKET, [17, 3, 0, 0, 0, 0]));
    show("socket-raw", sys(SYS_SOCKET, [2, 3, 1, 0, 0, 0]));
    show("getpid", sys(SYS_GETPID, [0; 6]));
}
