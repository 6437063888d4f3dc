//! Reading a stopped tracee's pointer arguments with `process_vm_readv` (one call per page
//! touched, never word by word with `PTRACE_PEEKDATA`).

use crate::resolve::Errno;
use crate::sys;

const PAGE: u64 = 4096;

/// A NUL-terminated string of at most `PATH_MAX` bytes (NUL included) at `addr`.
pub(super) fn read_path(tid: i32, addr: u64) -> Result<Vec<u8>, Errno> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let max = libc::PATH_MAX as usize;
    let mut out = Vec::with_capacity(256);
    let mut at = addr;
    while out.len() < max {
        // Up to the end of the page (a string may end right before an unmapped page), at most
        // what is left of PATH_MAX.
        let chunk = ((PAGE - at % PAGE) as usize).min(max - out.len());
        let start = out.len();
        out.resize(start + chunk, 0);
        let n = sys::read_mem(tid, at, &mut out[start..]).map_err(|_| libc::EFAULT)?;
        out.truncate(start + n);
        if let Some(i) = out[start..].iter().position(|b| *b == 0) {
            out.truncate(start + i);
            return Ok(out);
        }
        if n < chunk {
            return Err(libc::EFAULT);
        }
        at += n as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Exactly `len` bytes at `addr`.
pub(super) fn read_bytes(tid: i32, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut buf = vec![0u8; len];
    let n = sys::read_mem(tid, addr, &mut buf).map_err(|_| libc::EFAULT)?;
    if n != len {
        return Err(libc::EFAULT);
    }
    Ok(buf)
}
