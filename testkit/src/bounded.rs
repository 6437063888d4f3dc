//! Bounded runs for property tests: a case runs on a thread of its own, within a deadline, with
//! the bytes it allocates counted, so a hang or an unbounded allocation fails the test instead of
//! stalling or exhausting the machine. A test binary counts allocations by installing
//! [`Counting`] as its global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: moat_testkit::bounded::Counting = moat_testkit::bounded::Counting;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes as u64)));
}

/// The system allocator, counting the bytes each thread asks for.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Why a bounded run gave no value.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// It took longer than its limit (it is left running on its thread).
    TimedOut,
    /// It panicked.
    Panicked,
}

/// Runs `f` on a fresh thread with an 8 MiB stack (a main thread's), within `limit`; returns its
/// value and the bytes it allocated (counted only where [`Counting`] is the global allocator).
pub fn run<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(T, u64), Failure> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            ALLOCATED.with(|a| a.set(0));
            let r = f();
            let used = ALLOCATED.with(|a| a.get());
            let _ = tx.send((r, used));
        })
        .map_err(|_| Failure::Panicked)?;
    rx.recv_timeout(limit).map_err(|e| match e {
        RecvTimeoutError::Timeout => Failure::TimedOut,
        RecvTimeoutError::Disconnected => Failure::Panicked,
    })
}
