//! Read-only filesystem images of a container root, for the guest to mount from virtio-blk.
//!
//! Two formats, both built by their own tools from a host directory and cached by a hash of the
//! tree (paths, types, permission bits, owners, sizes, file contents, link targets, device numbers;
//! not timestamps):
//!
//! - **erofs** (`mkfs.erofs`): made for this; read-only, compact (inline data, no block bitmap or
//!   journal), all timestamps fixed to 0 so the image is byte-for-byte reproducible. The default.
//! - **ext4** (`mkfs.ext4 -d`, no journal): for guests or tools without erofs.
//!
//! The numbers behind the default (busybox tree, this host; mount and read in the TCG guest) are in
//! the guest-artifacts note and `docs/`: erofs builds faster, is smaller, and mounts faster.
//!
//! ```no_run
//! use moat_artifacts::rootfs_image::{self, Format};
//! let img = rootfs_image::build(std::path::Path::new("/path/to/rootfs"), Format::Erofs)?;
//! println!("{} ({} bytes)", img.path.display(), img.size);
//! # Ok::<(), moat_artifacts::rootfs_image::Error>(())
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{self, Cache, Key, KeyBuilder};

/// The cache kind of rootfs images.
pub const CACHE_KIND: &str = "rootfs-image";
/// Bump when the way images are made changes.
const FORMAT_VERSION: &str = "moat-rootfs-image-v2";
/// ext4 block size.
const EXT4_BLOCK: u64 = 4096;

/// An image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// erofs, uncompressed.
    Erofs,
    /// ext4 without a journal.
    Ext4,
}

/// The format moat uses unless told otherwise (chosen by measurement; see the module docs).
pub const DEFAULT_FORMAT: Format = Format::Erofs;

impl Format {
    /// The file name of the image in its cache entry, and the `-t` of mount(8) in the guest.
    pub fn fstype(self) -> &'static str {
        match self {
            Self::Erofs => "erofs",
            Self::Ext4 => "ext4",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Self::Erofs => "mkfs.erofs",
            Self::Ext4 => "mkfs.ext4",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::Erofs => "erofs-utils",
            Self::Ext4 => "e2fsprogs",
        }
    }
}

/// Errors while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root directory cannot be used.
    #[error("rootfs {path}: {reason}")]
    BadRoot {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading the tree failed.
    #[error("rootfs image: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The mkfs tool is missing or failed.
    #[error("{tool}: {message}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What happened and what to do.
        message: String,
    },
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// A built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsImage {
    /// The image file (treat it as read-only: it is a cache entry).
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its size in bytes.
    pub size: u64,
}

/// What a tree holds, for the cache key and for sizing an ext4 image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    /// Entries (inodes), the root included.
    pub entries: u64,
    /// Bytes of regular file data.
    pub bytes: u64,
    /// ext4 data blocks the files and directories need (4 KiB each).
    pub blocks: u64,
}

/// Every entry of a tree with what `lstat` says of it, in hashing order: a directory, then its
/// non-directory children by name, then its subdirectories by name (depth first).
fn entries(root: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let meta = fs::symlink_metadata(root).map_err(io_err("stat", root))?;
    if !meta.is_dir() {
        return Err(Error::BadRoot {
            path: root.to_path_buf(),
            reason: "is not a directory".into(),
        });
    }
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::new(), meta)];
    while let Some((rel, meta)) = stack.pop() {
        let dir = root.join(&rel);
        let mut children: Vec<(PathBuf, fs::Metadata)> = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let e = e.map_err(io_err("read", &dir))?;
            let child = rel.join(e.file_name());
            let p = root.join(&child);
            let m = fs::symlink_metadata(&p).map_err(io_err("stat", &p))?;
            children.push((child, m));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        out.push((rel, meta));
        let (dirs, rest): (Vec<_>, Vec<_>) = children.into_iter().partition(|(_, m)| m.is_dir());
        out.extend(rest);
        // Reversed so that the stack pops them in sorted order.
        stack.extend(dirs.into_iter().rev());
    }
    Ok(out)
}

/// Hashes a directory tree into `key` (sorted walk; see the module docs for what counts).
pub fn hash_tree(root: &Path, key: &mut KeyBuilder) -> Result<TreeStats> {
    let mut stats = TreeStats::default();
    for (rel, m) in entries(root)? {
        add_entry(root, &rel, &m, key, &mut stats)?;
    }
    Ok(stats)
}

/// The key of a tree's contents (see [`hash_tree`]) and its [`TreeStats`], remembered across runs
/// by what `lstat` says of every entry (mode, owner, size, inode, modification and change times,
/// device): a tree nobody touched is not read again, only walked. The memo lives beside the
/// digests of [`cache::digest_file`]; without a writable cache the tree is hashed every time.
pub fn tree_key(root: &Path) -> Result<(Key, TreeStats)> {
    let list = entries(root)?;
    let mut sig = KeyBuilder::new("moat-tree-signature-v1");
    for (rel, m) in &list {
        sig.add_str(&rel.to_string_lossy()).add_str(&format!(
            "{:o} {}:{} {} {} {}.{} {}.{} {}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.len(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.rdev()
        ));
    }
    let sig = sig.finish();
    let memo_dir = cache::root().join(".digests");
    let name = format!(
        "tree-{}",
        KeyBuilder::new("path")
            .add_str(&root.to_string_lossy())
            .finish()
    );
    let memo = memo_dir.join(&name);
    if let Ok(text) = fs::read_to_string(&memo) {
        let f: Vec<&str> = text.split_whitespace().collect();
        if let [s, k, e, b, bl] = f.as_slice()
            && *s == sig.as_str()
            && let (Ok(entries), Ok(bytes), Ok(blocks)) = (e.parse(), b.parse(), bl.parse())
        {
            let stats = TreeStats {
                entries,
                bytes,
                blocks,
            };
            return Ok((Key::from_hex(k), stats));
        }
    }
    let mut k = KeyBuilder::new("moat-tree-v1");
    let mut stats = TreeStats::default();
    for (rel, m) in &list {
        add_entry(root, rel, m, &mut k, &mut stats)?;
    }
    let key = k.finish();
    let tmp = memo_dir.join(format!("{name}.{}", std::process::id()));
    let text = format!(
        "{sig} {key} {} {} {}\n",
        stats.entries, stats.bytes, stats.blocks
    );
    let written = fs::create_dir_all(&memo_dir)
        .and_then(|()| fs::write(&tmp, text))
        .and_then(|()| fs::rename(&tmp, &memo));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok((key, stats))
}

fn add_entry(
    root: &Path,
    rel: &Path,
    m: &fs::Metadata,
    key: &mut KeyBuilder,
    stats: &mut TreeStats,
) -> Result<()> {
    let path = root.join(rel);
    let ft = m.file_type();
    key.add_str(&rel.to_string_lossy())
        .add_str(&format!("{:o} {}:{}", m.mode(), m.uid(), m.gid()));
    stats.entries += 1;
    if ft.is_file() {
        key.add_str(&m.len().to_string()).add_file(&path)?;
        stats.bytes += m.len();
        stats.blocks += m.len().div_ceil(EXT4_BLOCK);
    } else if ft.is_symlink() {
        let target = fs::read_link(&path).map_err(io_err("readlink", &path))?;
        key.add_str(&target.to_string_lossy());
    } else if ft.is_block_device() || ft.is_char_device() {
        key.add_str(&m.rdev().to_string());
    } else if ft.is_dir() {
        stats.blocks += 1;
    }
    Ok(())
}

/// The image of `rootfs` in `format`, from moat's cache (built on first use).
pub fn build(rootfs: &Path, format: Format) -> Result<RootfsImage> {
    build_in(&Cache::new(CACHE_KIND), rootfs, format)
}

/// [`build`] with an explicit cache.
pub fn build_in(cache: &Cache, rootfs: &Path, format: Format) -> Result<RootfsImage> {
    let (tree, stats) = tree_key(rootfs)?;
    let key = KeyBuilder::new(FORMAT_VERSION)
        .add_str(format.fstype())
        .add_str(tree.as_str())
        .finish();
    let dir = cache.get_or_build(&key, |out| {
        let image = out.join(format.fstype());
        match format {
            Format::Erofs => mkfs_erofs(rootfs, &image, &key),
            Format::Ext4 => mkfs_ext4(rootfs, &image, &key, stats),
        }
    })?;
    let path = dir.join(format.fstype());
    let size = fs::metadata(&path).map_err(io_err("stat", &path))?.len();
    Ok(RootfsImage { path, format, size })
}

/// A UUID derived from the cache key, so that the same tree gives the same image.
fn uuid(key: &Key) -> String {
    let h = key.as_str();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn run(format: Format, cmd: &mut Command) -> Result<()> {
    let tool = format.tool();
    let out = cmd.output().map_err(|e| Error::Tool {
        tool,
        message: if e.kind() == io::ErrorKind::NotFound {
            format!(
                "not installed: apt-get install {} (or run scripts/deps.sh)",
                format.package()
            )
        } else {
            format!("cannot run it: {e}")
        },
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Tool {
        tool,
        message: format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

fn mkfs_erofs(rootfs: &Path, image: &Path, key: &Key) -> Result<()> {
    run(
        Format::Erofs,
        Command::new("mkfs.erofs")
            .args(["--quiet", "-T0", "-U"])
            .arg(uuid(key))
            .arg(image)
            .arg(rootfs),
    )
}

fn mkfs_ext4(rootfs: &Path, image: &Path, key: &Key, stats: TreeStats) -> Result<()> {
    // Data blocks + inode tables (256 B an inode) + metadata and slack, then grow and retry if
    // mke2fs still runs out of room (it reports ENOSPC while copying the tree).
    let inodes = stats.entries + 64;
    let mut blocks = stats.blocks + (inodes * 256).div_ceil(EXT4_BLOCK);
    blocks += blocks / 8 + 1024;
    let mut attempt = 0;
    loop {
        let _ = fs::remove_file(image);
        let result = run(
            Format::Ext4,
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "4096", "-m", "0", "-L", "moat-rootfs"])
                .args(["-O", "^has_journal,^resize_inode"])
                .arg("-N")
                .arg(inodes.to_string())
                .arg("-U")
                .arg(uuid(key))
                .arg("-E")
                .arg(format!("root_owner=0:0,hash_seed={}", uuid(key)))
                .arg("-d")
                .arg(rootfs)
                .arg(image)
                .arg(blocks.to_string())
                .env("E2FSPROGS_FAKE_TIME", "1"),
        );
        match result {
            Err(Error::Tool { message, .. })
                if attempt < 4
                    && (message.contains("space") || message.contains("Could not allocate")) =>
            {
                blocks += blocks / 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("bin")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/hostname"), "guest\n").unwrap();
        fs::write(r.join("bin/big"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("big", r.join("bin/sh")).unwrap();
        dir
    }

    #[test]
    fn key_follows_content_not_time() {
        let t = tree();
        let key = || {
            let mut k = KeyBuilder::new("t");
            let s = hash_tree(t.path(), &mut k).unwrap();
            (k.finish(), s)
        };
        let (a, stats) = key();
        assert_eq!(stats.entries, 6);
        assert_eq!(stats.bytes, 300_006);
        // Touching a file changes nothing; changing its content does.
        let f = fs::File::options()
            .append(true)
            .open(t.path().join("etc/hostname"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(key().0, a);
        fs::write(t.path().join("etc/hostname"), "other\n").unwrap();
        assert_ne!(key().0, a);
    }

    #[test]
    fn remembered_tree_keys_follow_the_tree() {
        let t = tree();
        let (a, stats) = tree_key(t.path()).unwrap();
        assert_eq!(stats.entries, 6);
        assert_eq!(
            tree_key(t.path()).unwrap(),
            (a.clone(), stats),
            "remembered"
        );
        // Same size, other bytes: the change time moved, so the tree is hashed again.
        fs::write(t.path().join("etc/hostname"), "other\n").unwrap();
        let (b, _) = tree_key(t.path()).unwrap();
        assert_ne!(b, a);
        fs::write(t.path().join("etc/hostname"), "guest\n").unwrap();
        assert_eq!(
            tree_key(t.path()).unwrap().0,
            a,
            "content, not time, decides the key"
        );
    }

    #[test]
    fn not_a_directory_is_rejected() {
        let t = tree();
        let cache = tempfile::tempdir().unwrap();
        let e = build_in(
            &Cache::with_root(cache.path(), CACHE_KIND),
            &t.path().join("etc/hostname"),
            Format::Erofs,
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
