//! A deterministic writer for Linux initramfs archives (`newc` cpio, plain or gzip).
//!
//! moat boots two kinds of Linux guests, each from an initramfs: the microVM guest (with
//! `moat-agent` as `/init`) and the KVM rig's L1 (with its init script and the KVM modules). Both
//! are built from a list of entries, in Rust, without shelling out to `cpio`, so that the same
//! inputs always give byte-identical archives (and so the same cache keys):
//!
//! - entries are written sorted by path, every parent before its children;
//! - inode numbers count up from 1 in that order, mtimes are fixed (0 unless [`Initramfs::mtime`]
//!   says otherwise), the gzip header carries no name and no time;
//! - parent directories that were not added explicitly are added as `0755 root:root`.
//!
//! ```no_run
//! use moat_artifacts::initramfs::{Compression, Initramfs};
//! # fn main() -> moat_artifacts::initramfs::Result<()> {
//! let mut fs = Initramfs::new();
//! fs.dir("/dev", 0o755)
//!     .dir("/proc", 0o555)
//!     .char_dev("/dev/console", 0o600, 5, 1)
//!     .file("/init", 0o755, "target/release/moat-agent")
//!     .file_bytes("/etc/hostname", 0o644, b"guest\n".to_vec())
//!     .symlink("/bin/sh", "busybox")
//!     .chown("/etc/hostname", 1000, 1000);
//! fs.write(std::path::Path::new("initramfs.cpio.gz"), Compression::Gzip)?;
//! # Ok(()) }
//! ```
//!
//! Everything is checked (paths, host files) before the first byte is written, and [`Initramfs::write`]
//! publishes the archive atomically (temporary file, then rename), so a failure leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File type bits of `st_mode`, as cpio stores them.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

/// The magic of a `newc` header (no checksum).
const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends every cpio archive.
const TRAILER: &str = "TRAILER!!!";

/// Errors of the initramfs writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path inside the archive is not usable.
    #[error("initramfs path {path:?} is invalid: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An entry needs a parent directory, but something other than a directory holds that path.
    #[error(
        "initramfs entry {path:?} needs {parent:?} to be a directory, but it was added as another kind of entry"
    )]
    ParentNotDirectory {
        /// The entry.
        path: String,
        /// The conflicting parent.
        parent: String,
    },
    /// [`Initramfs::chown`] named a path that was never added.
    #[error("initramfs chown of {0:?}: no such entry (add it before changing its owner)")]
    NoSuchEntry(String),
    /// A host file cannot be archived (too large, changed while being read, not a regular file).
    #[error("initramfs source {path}: {reason}")]
    BadSource {
        /// The host file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading a host file or writing the archive failed.
    #[error("initramfs {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A `Result` with the initramfs writer's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// How the archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A bare `newc` cpio archive.
    None,
    /// gzip (deterministic header: no name, mtime 0), which every Linux kernel can unpack.
    Gzip,
}

/// Where a regular file's contents come from.
#[derive(Clone, Debug)]
enum Source {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Source),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
}

#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    /// Permission bits (`0o7777` at most).
    perm: u32,
    uid: u32,
    gid: u32,
}

/// An initramfs being assembled; see the [module documentation](self) for an example.
///
/// Paths are absolute inside the archive (`/init`) or relative to its root (`init`); they are stored
/// without the leading `/`, must not contain `..`, and adding the same path twice keeps the last one.
#[derive(Clone, Debug, Default)]
pub struct Initramfs {
    /// Entries by raw path as given; normalised and validated by [`Initramfs::write`].
    entries: Vec<(String, Entry)>,
    chowns: Vec<(String, u32, u32)>,
    mtime: u32,
}

impl Initramfs {
    /// An empty archive: every entry owned by root, mtime 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the modification time (seconds since the epoch) recorded on every entry.
    pub fn mtime(&mut self, secs: u32) -> &mut Self {
        self.mtime = secs;
        self
    }

    fn push(&mut self, path: &str, kind: Kind, perm: u32) -> &mut Self {
        let entry = Entry {
            kind,
            perm: perm & 0o7777,
            uid: 0,
            gid: 0,
        };
        self.entries.push((path.to_string(), entry));
        self
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.push(path, Kind::Dir, mode)
    }

    /// Adds a regular file whose contents are read from `host` when the archive is written.
    pub fn file(&mut self, path: &str, mode: u32, host: impl AsRef<Path>) -> &mut Self {
        let src = Source::Host(host.as_ref().to_path_buf());
        self.push(path, Kind::File(src), mode)
    }

    /// Adds a regular file with the given contents.
    pub fn file_bytes(&mut self, path: &str, mode: u32, contents: Vec<u8>) -> &mut Self {
        self.push(path, Kind::File(Source::Bytes(contents)), mode)
    }

    /// Adds a symbolic link pointing at `target` (stored as given, relative or absolute).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.push(path, Kind::Symlink(target.to_string()), 0o777)
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.push(path, Kind::CharDev { major, minor }, mode)
    }

    /// Adds a block device node.
    pub fn block_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.push(path, Kind::BlockDev { major, minor }, mode)
    }

    /// Sets the owner of an entry added before (entries are owned by `0:0` otherwise).
    pub fn chown(&mut self, path: &str, uid: u32, gid: u32) -> &mut Self {
        self.chowns.push((path.to_string(), uid, gid));
        self
    }

    /// Adds a host directory tree under `path`: directories, regular files and symlinks, with their
    /// host permission bits (owners are not copied: everything is root's). Other file types are
    /// rejected. The tree is walked now; file contents are read when the archive is written.
    pub fn tree(&mut self, path: &str, host_dir: &Path) -> Result<&mut Self> {
        let meta = fs::metadata(host_dir).map_err(io_err("stat", host_dir))?;
        if !meta.is_dir() {
            return Err(Error::BadSource {
                path: host_dir.to_path_buf(),
                reason: "is not a directory".into(),
            });
        }
        let mut added = Vec::new();
        let mut stack = vec![(
            path.trim_end_matches('/').to_string(),
            host_dir.to_path_buf(),
        )];
        while let Some((dest, dir)) = stack.pop() {
            if !dest.is_empty() {
                added.push((dest.clone(), Kind::Dir, meta_perm(&dir)?));
            }
            let mut children = Vec::new();
            for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
                children.push(entry.map_err(io_err("read", &dir))?.path());
            }
            children.sort();
            for host in children {
                let name = host.file_name().unwrap_or_default().to_string_lossy();
                let dest = format!("{dest}/{name}");
                let ty = fs::symlink_metadata(&host).map_err(io_err("stat", &host))?;
                if ty.is_dir() {
                    stack.push((dest, host));
                } else if ty.is_file() {
                    added.push((
                        dest,
                        Kind::File(Source::Host(host.clone())),
                        meta_perm(&host)?,
                    ));
                } else if ty.file_type().is_symlink() {
                    let target = fs::read_link(&host).map_err(io_err("readlink", &host))?;
                    let target = target.to_str().ok_or_else(|| Error::BadSource {
                        path: host.clone(),
                        reason: "symlink target is not UTF-8".into(),
                    })?;
                    added.push((dest, Kind::Symlink(target.to_string()), 0o777));
                } else {
                    return Err(Error::BadSource {
                        path: host,
                        reason: "is not a directory, regular file or symlink".into(),
                    });
                }
            }
        }
        for (dest, kind, perm) in added {
            self.push(&dest, kind, perm);
        }
        Ok(self)
    }

    /// Writes the archive to `path` atomically: a temporary file beside it, renamed into place once
    /// complete. On error nothing is left at `path` or beside it.
    pub fn write(&self, path: &Path, compression: Compression) -> Result<()> {
        let plan = self.plan()?;
        let name = path.file_name().ok_or_else(|| Error::BadSource {
            path: path.to_path_buf(),
            reason: "output path has no file name".into(),
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
            let mut out = BufWriter::new(file);
            write_plan(&plan, self.mtime, compression, &mut out, &tmp)?;
            let file = out
                .into_inner()
                .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
            file.sync_all().map_err(io_err("sync", &tmp))?;
            fs::rename(&tmp, path).map_err(io_err("rename", path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes the archive to any writer (nothing is written if the entries are invalid).
    pub fn write_to(&self, out: &mut impl Write, compression: Compression) -> Result<()> {
        let plan = self.plan()?;
        write_plan(&plan, self.mtime, compression, out, Path::new("<writer>"))
    }

    /// The archive as bytes.
    pub fn to_bytes(&self, compression: Compression) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out, compression)?;
        Ok(out)
    }

    /// Normalises and checks every entry, adds missing parents, and sizes host files: the sorted
    /// list of what will be written.
    fn plan(&self) -> Result<BTreeMap<String, (Entry, u64)>> {
        let mut map: BTreeMap<String, (Entry, u64)> = BTreeMap::new();
        for (raw, entry) in &self.entries {
            let path = normalise(raw)?;
            let size = match &entry.kind {
                Kind::File(Source::Bytes(b)) => b.len() as u64,
                Kind::File(Source::Host(host)) => {
                    let meta = fs::metadata(host).map_err(io_err("stat", host))?;
                    if !meta.is_file() {
                        return Err(Error::BadSource {
                            path: host.clone(),
                            reason: "is not a regular file".into(),
                        });
                    }
                    meta.len()
                }
                Kind::Symlink(t) if t.is_empty() => {
                    return Err(Error::InvalidPath {
                        path: raw.clone(),
                        reason: "symlink target is empty",
                    });
                }
                Kind::Symlink(t) => t.len() as u64,
                _ => 0,
            };
            if size > u64::from(u32::MAX) {
                return Err(Error::InvalidPath {
                    path: raw.clone(),
                    reason: "file is larger than cpio's 4 GiB limit",
                });
            }
            map.insert(path, (entry.clone(), size));
        }
        for (raw, uid, gid) in &self.chowns {
            let path = normalise(raw)?;
            let (entry, _) = map
                .get_mut(&path)
                .ok_or_else(|| Error::NoSuchEntry(raw.clone()))?;
            entry.uid = *uid;
            entry.gid = *gid;
        }
        let paths: Vec<String> = map.keys().cloned().collect();
        for path in paths {
            let mut parent = path.as_str();
            while let Some(i) = parent.rfind('/') {
                parent = &parent[..i];
                match map.get(parent) {
                    Some((
                        Entry {
                            kind: Kind::Dir, ..
                        },
                        _,
                    )) => {}
                    Some(_) => {
                        return Err(Error::ParentNotDirectory {
                            path: path.clone(),
                            parent: parent.to_string(),
                        });
                    }
                    None => {
                        let dir = Entry {
                            kind: Kind::Dir,
                            perm: 0o755,
                            uid: 0,
                            gid: 0,
                        };
                        map.insert(parent.to_string(), (dir, 0));
                    }
                }
            }
        }
        Ok(map)
    }
}

fn meta_perm(path: &Path) -> Result<u32> {
    let meta = fs::metadata(path).map_err(io_err("stat", path))?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// `/a//b/` -> `a/b`; rejects empty paths, `.`/`..` components and NUL bytes.
fn normalise(raw: &str) -> Result<String> {
    let bad = |reason| Error::InvalidPath {
        path: raw.to_string(),
        reason,
    };
    if raw.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(bad("contains a `.` or `..` component"));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(bad("names the archive root (give a path below it)"));
    }
    Ok(parts.join("/"))
}

/// Counts bytes written, so that padding can be computed without seeking.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

/// The fields of one `newc` header, in order after the magic.
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

fn put_header<W: Write>(out: &mut Counting<W>, h: &Header, name: &str) -> io::Result<()> {
    let namesize = name.len() as u32 + 1;
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor of the file's own filesystem: meaningless here.
        0, // devminor
        h.rdev_major,
        h.rdev_minor,
        namesize,
        0, // check: unused by newc.
    ];
    let mut text = Vec::with_capacity(110 + name.len() + 4);
    text.extend_from_slice(NEWC_MAGIC);
    for f in fields {
        text.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    text.extend_from_slice(name.as_bytes());
    text.push(0);
    out.put(&text)?;
    out.pad4()
}

fn write_plan(
    plan: &BTreeMap<String, (Entry, u64)>,
    mtime: u32,
    compression: Compression,
    out: &mut impl Write,
    out_path: &Path,
) -> Result<()> {
    let werr = io_err("write", out_path);
    match compression {
        Compression::None => write_cpio(plan, mtime, out, out_path),
        Compression::Gzip => {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(out, flate2::Compression::default());
            write_cpio(plan, mtime, &mut gz, out_path)?;
            gz.finish().map(drop).map_err(werr)
        }
    }
}

fn write_cpio(
    plan: &BTreeMap<String, (Entry, u64)>,
    mtime: u32,
    out: &mut impl Write,
    out_path: &Path,
) -> Result<()> {
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    for (ino, (path, (entry, size))) in (1u32..).zip(plan) {
        let (ftype, nlink, (rdev_major, rdev_minor)) = match entry.kind {
            Kind::Dir => (S_IFDIR, 2, (0, 0)),
            Kind::File(_) => (S_IFREG, 1, (0, 0)),
            Kind::Symlink(_) => (S_IFLNK, 1, (0, 0)),
            Kind::CharDev { major, minor } => (S_IFCHR, 1, (major, minor)),
            Kind::BlockDev { major, minor } => (S_IFBLK, 1, (major, minor)),
        };
        let header = Header {
            ino,
            mode: ftype | entry.perm,
            uid: entry.uid,
            gid: entry.gid,
            nlink,
            mtime,
            filesize: *size as u32,
            rdev_major,
            rdev_minor,
        };
        put_header(&mut out, &header, path).map_err(io_err("write", out_path))?;
        match &entry.kind {
            Kind::File(Source::Bytes(b)) => out.put(b).map_err(io_err("write", out_path))?,
            Kind::File(Source::Host(host)) => copy_exact(host, *size, &mut out, out_path)?,
            Kind::Symlink(t) => out.put(t.as_bytes()).map_err(io_err("write", out_path))?,
            _ => {}
        }
        out.pad4().map_err(io_err("write", out_path))?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdev_major: 0,
        rdev_minor: 0,
    };
    put_header(&mut out, &trailer, TRAILER).map_err(io_err("write", out_path))?;
    out.inner.flush().map_err(io_err("write", out_path))
}

/// Copies exactly `size` bytes of `host` (its size when the plan was made); a file that changed
/// size in between is an error rather than a corrupt archive.
fn copy_exact<W: Write>(
    host: &Path,
    size: u64,
    out: &mut Counting<W>,
    out_path: &Path,
) -> Result<()> {
    let file = File::open(host).map_err(io_err("open", host))?;
    if file.metadata().map_err(io_err("stat", host))?.size() != size {
        return Err(Error::BadSource {
            path: host.to_path_buf(),
            reason: "changed size while the archive was being written".into(),
        });
    }
    let mut limited = file.take(size);
    let mut buf = vec![0u8; 1 << 16];
    let mut copied = 0u64;
    loop {
        let n = limited.read(&mut buf).map_err(io_err("read", host))?;
        if n == 0 {
            break;
        }
        out.put(&buf[..n]).map_err(io_err("write", out_path))?;
        copied += n as u64;
    }
    if copied != size {
        return Err(Error::BadSource {
            path: host.to_path_buf(),
            reason: "shrank while the archive was being written".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
