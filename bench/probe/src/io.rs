//! Sequential file I/O: write a file in 1 MiB blocks and fsync it, read it back in 1 MiB blocks,
//! remove it. The read usually comes from the page cache (it follows the write at once), so it
//! measures the read path of the sandbox's filesystem stack rather than the disk.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use crate::out;

/// The block size of every read and write.
const BLOCK: usize = 1 << 20;

/// Writes, reads back and removes `dir/moat-bench-probe-io` of `mib` MiB; exits 1 if any step fails.
pub fn run(dir: &str, mib: u64) {
    let path = Path::new(dir).join("moat-bench-probe-io");
    match measure(&path, mib) {
        Ok((write, read)) => {
            out::line(&format!("write_mib_s {write:.1}"));
            out::line(&format!("read_mib_s {read:.1}"));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            eprintln!("moat-bench-probe: io {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

/// The write and read rates in MiB/s.
fn measure(path: &Path, mib: u64) -> Result<(f64, f64), String> {
    // Non-zero, not constant: no filesystem or device can store it as holes or zero pages.
    let mut block: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8 + 1).collect();
    let start = Instant::now();
    let mut f = File::create(path).map_err(|e| format!("create: {e}"))?;
    for _ in 0..mib {
        f.write_all(&block).map_err(|e| format!("write: {e}"))?;
    }
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    drop(f);
    let write = mib as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut f = File::open(path).map_err(|e| format!("open: {e}"))?;
    let mut total = 0u64;
    loop {
        match f.read(&mut block) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let read = mib as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path).map_err(|e| format!("unlink: {e}"))?;
    if total != mib * BLOCK as u64 {
        return Err(format!("read back {total} bytes of {}", mib * BLOCK as u64));
    }
    Ok((write, read))
}
