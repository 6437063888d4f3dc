//! A content-addressed build cache.
//!
//! An entry is a directory `<root>/<kind>/<key>/` where `key` is a SHA-256 over every input of the
//! build (versions, config fragments, scripts, source files). Beside the output the entry holds a
//! manifest with the size and SHA-256 of each file it contains; an entry whose files no longer match
//! is treated as corrupt and rebuilt. Builds happen in a private temporary directory that is renamed
//! into place only when complete, under a lock, so a crash or a concurrent build never leaves a
//! half-written entry visible.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The name of the manifest file inside every cache entry.
const MANIFEST: &str = ".moat-manifest";

/// The name of the file recording, for an entry whose contents were last verified against the
/// manifest, what `stat` said of each file then (see [`verify`]).
const STAMP: &str = ".moat-verified";

/// Errors of the build cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation on the cache failed.
    #[error(
        "cache {op} {path}: {source} (check that the cache directory is writable, or set MOAT_CACHE_DIR)"
    )]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The build step that fills an entry failed.
    #[error("building {kind} {key}: {message}")]
    Build {
        /// The artifact kind.
        kind: String,
        /// The entry's key.
        key: String,
        /// What the builder reported.
        message: String,
    },
}

/// A `Result` with the cache's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// The root of moat's cache: `$MOAT_CACHE_DIR`, else `$XDG_CACHE_HOME/moat`, else `$HOME/.cache/moat`,
/// else `/var/cache/moat`.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MOAT_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("moat");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/moat");
    }
    PathBuf::from("/var/cache/moat")
}

/// The hash of every input of one build.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// A key read back from its hex form (e.g. from a memo file); not checked.
    pub fn from_hex(hex: &str) -> Key {
        Key(hex.to_string())
    }

    /// The key as lower-case hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a [`Key`] from the inputs of a build. Each input is framed with its length, so that
/// `("ab", "c")` and `("a", "bc")` give different keys.
#[derive(Default)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// Starts a key for a build format; bump `format` when the build logic changes.
    pub fn new(format: &str) -> Self {
        let mut b = Self::default();
        b.add_str(format);
        b
    }

    /// Adds raw bytes.
    pub fn add_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a string (a version, a flag, a file name).
    pub fn add_str(&mut self, s: &str) -> &mut Self {
        self.add_bytes(s.as_bytes())
    }

    /// Adds the contents of a file (its digest is remembered, see [`digest_file`]).
    pub fn add_file(&mut self, path: &Path) -> Result<&mut Self> {
        let digest = digest_file(path)?;
        self.add_bytes(&digest);
        Ok(self)
    }

    /// Finishes the key.
    pub fn finish(&self) -> Key {
        Key(hex::encode(self.0.clone().finalize()))
    }
}

/// SHA-256 of a file's contents.
pub fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Files smaller than this are hashed every time: remembering them would cost as much.
const MEMO_MIN: u64 = 64 << 10;

/// [`hash_file`], remembered across runs for large files: a key that names a 16 MB kernel or a
/// static binary would otherwise cost a full read and hash on every `moat run` (seconds under
/// emulation). The digest is kept in `<cache root>/.digests/` with what `stat` said of the file
/// (device, inode, size, modification and change times in nanoseconds); any change to the file
/// changes one of those (the change time cannot be set back from user space), and the digest is
/// computed again. A cache that cannot be written just hashes every time.
pub fn digest_file(path: &Path) -> Result<[u8; 32]> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).map_err(io_err("stat", path))?;
    if m.len() < MEMO_MIN {
        return hash_file(path);
    }
    let signature = format!(
        "{} {} {} {}.{} {}.{}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    );
    let dir = root().join(".digests");
    let name = hex::encode(Sha256::digest(path.as_os_str().as_encoded_bytes()));
    let memo = dir.join(&name);
    if let Ok(text) = fs::read_to_string(&memo)
        && let Some((sig, hex_digest)) = text.trim_end().split_once('\n')
        && sig == signature
        && let Ok(bytes) = hex::decode(hex_digest)
        && let Ok(digest) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(digest);
    }
    let digest = hash_file(path)?;
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    let written = fs::create_dir_all(&dir)
        .and_then(|()| fs::write(&tmp, format!("{signature}\n{}\n", hex::encode(digest))))
        .and_then(|()| fs::rename(&tmp, &memo));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok(digest)
}

/// One kind of artifact in the cache (`kernel`, `busybox-image`, `initramfs`, ...).
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    kind: String,
}

impl Cache {
    /// The cache for `kind` under [`root()`].
    pub fn new(kind: &str) -> Self {
        Self::with_root(&root(), kind)
    }

    /// The cache for `kind` under an explicit root (tests use a temporary one).
    pub fn with_root(root: &Path, kind: &str) -> Self {
        Self {
            dir: root.join(kind),
            kind: kind.to_string(),
        }
    }

    /// Where the entry for `key` lives (whether or not it exists).
    pub fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(key.as_str())
    }

    /// Returns the entry for `key` if it exists and its files match its manifest.
    pub fn lookup(&self, key: &Key) -> Result<Option<PathBuf>> {
        let path = self.path(key);
        if !path.join(MANIFEST).is_file() {
            return Ok(None);
        }
        Ok(verify(&path)?.then_some(path))
    }

    /// Returns the entry for `key`, building it first if it is missing or corrupt.
    ///
    /// `build` receives an empty directory to fill; it is published only if `build` returns `Ok`.
    /// Concurrent callers for the same key wait for each other instead of building twice.
    pub fn get_or_build<E: std::fmt::Display>(
        &self,
        key: &Key,
        build: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let lock_path = self.dir.join(format!(".{key}.lock"));
        let lock = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
        lock.lock().map_err(io_err("lock", &lock_path))?;

        if let Some(path) = self.lookup(key)? {
            return Ok(path);
        }
        let path = self.path(key);
        if path.exists() {
            tracing::warn!(kind = %self.kind, %key, "cache entry is corrupt or incomplete; rebuilding");
            fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
        }

        let tmp = self.dir.join(format!(".{key}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        let built = build(&tmp).map_err(|e| Error::Build {
            kind: self.kind.clone(),
            key: key.to_string(),
            message: e.to_string(),
        });
        let published = built.and_then(|()| {
            write_manifest(&tmp)?;
            fs::rename(&tmp, &path).map_err(io_err("publish", &path))
        });
        if published.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        published?;
        Ok(path)
    }
}

/// Lists the files of an entry, relative to it, sorted; the manifest and stamp are left out.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let rel = rel.join(entry.file_name());
            let ty = entry.file_type().map_err(io_err("stat", &entry.path()))?;
            if ty.is_dir() {
                stack.push(rel.clone());
            }
            let ours =
                rel.as_os_str() == MANIFEST || rel.to_str().is_some_and(|r| r.starts_with(STAMP));
            if !ours {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One manifest line per path: `<kind> <size> <sha256 or link target or -> <path>`.
fn manifest_of(root: &Path) -> Result<String> {
    let mut text = String::new();
    for rel in walk(root)? {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let line = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io_err("readlink", &path))?;
            format!("l 0 {} {}", target.display(), rel.display())
        } else if meta.is_dir() {
            format!("d 0 - {}", rel.display())
        } else if meta.is_file() {
            format!(
                "f {} {} {}",
                meta.len(),
                hex::encode(hash_file(&path)?),
                rel.display()
            )
        } else {
            format!("o 0 - {}", rel.display())
        };
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

fn write_manifest(root: &Path) -> Result<()> {
    let text = manifest_of(root)?;
    let path = root.join(MANIFEST);
    let mut f = File::create(&path).map_err(io_err("create", &path))?;
    f.write_all(text.as_bytes())
        .map_err(io_err("write", &path))?;
    f.sync_all().map_err(io_err("sync", &path))
}

/// What `stat` says of every file: size, inode, and modification and change times (nanoseconds).
/// A write, truncation, `chmod`, replacement or new file changes it; the change time cannot be set
/// back from user space. Directories count by name only (adding the stamp changes their times).
fn stat_signature(root: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut text = String::new();
    for rel in walk(root)? {
        let path = root.join(&rel);
        let m = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        if m.is_dir() {
            text.push_str(&format!("d {}\n", rel.display()));
        } else {
            text.push_str(&format!(
                "f {} {} {}.{} {}.{} {}\n",
                m.len(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                rel.display()
            ));
        }
    }
    Ok(text)
}

/// Whether the entry still matches its manifest. Hashing every file on every lookup would cost
/// tens of milliseconds per run (a 16 MB vmlinux) and seconds under emulation, so a full check
/// records the files' [`stat_signature`] in [`STAMP`], and a lookup whose signature matches the
/// stamp is a hit without reading the files. Anything that touched a file since forces the full
/// check again. A read-only cache simply gets the full check every time.
fn verify(root: &Path) -> Result<bool> {
    let signature = stat_signature(root)?;
    let stamp = root.join(STAMP);
    if fs::read_to_string(&stamp).is_ok_and(|s| s == signature) {
        return Ok(true);
    }
    let path = root.join(MANIFEST);
    let recorded = fs::read_to_string(&path).map_err(io_err("read", &path))?;
    let ok = manifest_of(root)? == recorded;
    if ok {
        // Written aside and renamed, so a concurrent lookup never reads half a stamp.
        let tmp = root.join(format!("{STAMP}.{}", std::process::id()));
        if fs::write(&tmp, &signature).is_ok() && fs::rename(&tmp, &stamp).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        KeyBuilder::new("test-v1").add_str(s).finish()
    }

    #[test]
    fn builds_once_then_hits() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::with_root(root.path(), "thing");
        let mut builds = 0;
        for _ in 0..2 {
            let p = cache
                .get_or_build(&key("a"), |dir| {
                    builds += 1;
                    fs::write(dir.join("out"), b"hello")
                })
                .unwrap();
            assert_eq!(fs::read(p.join("out")).unwrap(), b"hello");
        }
        assert_eq!(builds, 1);
    }

    #[test]
    fn remembered_digests_follow_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big");
        fs::write(&f, vec![1u8; MEMO_MIN as usize]).unwrap();
        assert_eq!(digest_file(&f).unwrap(), hash_file(&f).unwrap());
        assert_eq!(
            digest_file(&f).unwrap(),
            hash_file(&f).unwrap(),
            "remembered"
        );
        // Same size, new contents: the change time moved, so the digest is computed again.
        fs::write(&f, vec![2u8; MEMO_MIN as usize]).unwrap();
        assert_eq!(digest_file(&f).unwrap(), hash_file(&f).unwrap());
    }

    #[test]
    fn corrupt_entry_is_rebuilt() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::with_root(root.path(), "thing");
        let p = cache
            .get_or_build(&key("a"), |dir| fs::write(dir.join("out"), b"hello"))
            .unwrap();
        // A verified hit stamps the entry; a later write is still caught.
        assert!(cache.lookup(&key("a")).unwrap().is_some());
        assert!(p.join(STAMP).is_file());
        assert!(cache.lookup(&key("a")).unwrap().is_some());
        fs::write(p.join("out"), b"HELLO").unwrap();
        assert!(cache.lookup(&key("a")).unwrap().is_none());
        let p = cache
            .get_or_build(&key("a"), |dir| fs::write(dir.join("out"), b"hello"))
            .unwrap();
        assert_eq!(fs::read(p.join("out")).unwrap(), b"hello");
    }

    #[test]
    fn failed_build_publishes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::with_root(root.path(), "thing");
        let err = cache
            .get_or_build(&key("a"), |dir| {
                fs::write(dir.join("half"), b"x").unwrap();
                Err("compiler exploded")
            })
            .unwrap_err();
        assert!(err.to_string().contains("compiler exploded"), "{err}");
        assert!(!cache.path(&key("a")).exists());
        let leftovers: Vec<_> = fs::read_dir(root.path().join("thing"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !n.to_string_lossy().ends_with(".lock"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn key_framing_distinguishes_splits() {
        let a = KeyBuilder::new("f").add_str("ab").add_str("c").finish();
        let b = KeyBuilder::new("f").add_str("a").add_str("bc").finish();
        assert_ne!(a, b);
    }
}
