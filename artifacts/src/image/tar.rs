//! A small deterministic tar (ustar) writer.
//!
//! Image layers and image archives must be byte-for-byte reproducible, so that a layer's digest
//! depends only on its contents: every header here has a fixed mtime, numeric owners only (no user
//! or group names, which extractors could map through the host's `/etc/passwd`), and the entries
//! are written in the order the caller gives (callers sort them).

use std::io::{self, Write};

/// The modification time of every entry: the Unix epoch, as reproducible builds do.
pub const MTIME: u64 = 0;

const BLOCK: usize = 512;

/// Writes a ustar archive entry by entry.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Adds a directory. `path` is relative, without a trailing slash.
    pub fn dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        let name = format!("{path}/");
        self.header(&name, mode, uid, gid, 0, b'5', "")
    }

    /// Adds a regular file with its contents.
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        data: &[u8],
    ) -> io::Result<()> {
        self.header(path, mode, uid, gid, data.len() as u64, b'0', "")?;
        self.out.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str, uid: u32, gid: u32) -> io::Result<()> {
        self.header(path, 0o777, uid, gid, 0, b'2', target)
    }

    /// Writes the end-of-archive marker and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        kind: u8,
        link: &str,
    ) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        let (prefix, name) = split_name(path)?;
        put_str(&mut h[0..100], name, "name", path)?;
        put_octal(&mut h[100..108], u64::from(mode & 0o7777), "mode")?;
        put_octal(&mut h[108..116], u64::from(uid), "uid")?;
        put_octal(&mut h[116..124], u64::from(gid), "gid")?;
        put_octal(&mut h[124..136], size, "size")?;
        put_octal(&mut h[136..148], MTIME, "mtime")?;
        h[156] = kind;
        put_str(&mut h[157..257], link, "link target", path)?;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        put_octal(&mut h[329..337], 0, "devmajor")?;
        put_octal(&mut h[337..345], 0, "devminor")?;
        put_str(&mut h[345..500], prefix, "name prefix", path)?;
        // The checksum is computed with its own field filled with spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(field.as_bytes());
        self.out.write_all(&h)
    }
}

/// Splits a path into ustar's prefix (up to 155 bytes) and name (up to 100 bytes).
fn split_name(path: &str) -> io::Result<(&str, &str)> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    // Split at a slash so that prefix + "/" + name == path.
    for (i, _) in path.match_indices('/') {
        let (prefix, rest) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && !rest.is_empty() && rest.len() <= 100 {
            return Ok((prefix, rest));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("tar path {path:?} is too long for a ustar header"),
    ))
}

fn put_str(field: &mut [u8], value: &str, what: &str, path: &str) -> io::Result<()> {
    if value.len() > field.len() || value.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar {what} {value:?} of {path:?} does not fit a ustar header"),
        ));
    }
    field[..value.len()].copy_from_slice(value.as_bytes());
    Ok(())
}

fn put_octal(field: &mut [u8], value: u64, what: &str) -> io::Result<()> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar {what} {value} does not fit a ustar header"),
        ));
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> Vec<u8> {
        let mut t = TarWriter::new(Vec::new());
        t.dir("etc", 0o755, 0, 0).unwrap();
        t.file("etc/hostname", 0o644, 0, 0, b"moat\n").unwrap();
        t.dir("tmp", 0o1777, 0, 0).unwrap();
        t.symlink("etc/link", "hostname", 0, 0).unwrap();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        t.file(&long, 0o600, 1000, 1000, b"x").unwrap();
        t.finish().unwrap()
    }

    #[test]
    fn blocks_are_aligned_and_deterministic() {
        let a = sample();
        assert_eq!(a.len() % BLOCK, 0);
        assert_eq!(a, sample());
    }

    #[test]
    fn too_long_names_are_rejected() {
        let mut t = TarWriter::new(Vec::new());
        let err = t.file(&"x".repeat(300), 0o644, 0, 0, b"").unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }

    /// GNU tar (always present on Debian) reads back exactly what was written.
    #[test]
    fn gnu_tar_lists_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        std::fs::write(&path, sample()).unwrap();
        let out = Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.contains("drwxrwxrwt 0/0"), "{listing}");
        assert!(listing.contains("etc/link -> hostname"), "{listing}");
        assert!(listing.contains("-rw------- 1000/1000"), "{listing}");
        assert!(listing.contains(&"f".repeat(90)), "{listing}");
        assert!(listing.contains("1970-01-01"), "{listing}");
    }
}
