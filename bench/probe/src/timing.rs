//! System call timings: the cost of a call that does nothing (`getpid`) and of one a supervisor
//! has to look at the argument of (`openat` + `close`).

use std::ffi::CString;
use std::time::Instant;

use crate::{out, sys};

/// Prints the mean time per iteration.
fn report(start: Instant, n: u64) {
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    out::line(&format!("ns/call {ns:.1}"));
}

/// `n` raw `getpid` calls.
pub fn getpid(n: u64) {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sys::getpid());
    }
    report(start, n);
}

/// `n` × (`openat(path, O_RDONLY)` + `close`); exits 1 if an open fails.
pub fn open(path: &str, n: u64) {
    let Ok(c) = CString::new(path) else {
        crate::usage("PATH contains a NUL byte")
    };
    let start = Instant::now();
    for _ in 0..n {
        match sys::open(&c, sys::O_RDONLY) {
            Ok(fd) => sys::close(fd),
            Err(e) => {
                eprintln!("moat-bench-probe: open {path}: {e}");
                std::process::exit(1);
            }
        }
    }
    report(start, n);
}
