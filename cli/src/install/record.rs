//! The install record (`/usr/local/share/moat/install-record.json`): what `moat install` wrote, so
//! a second install knows what is already its own and `moat uninstall` can undo exactly that.
//!
//! It holds no timestamps: installing twice writes the same record.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The record's format; a record of another format is refused, not guessed at.
pub const FORMAT: u32 = 1;

/// What one `moat install` (and every one before it on the same tree) left on the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The handlers installed.
    pub handlers: Vec<String>,
    /// Every file installed (not the containerd config or its backup), with its content hash.
    pub files: Vec<FileRecord>,
    /// Directories install created, removed again by uninstall when they are empty.
    pub created_dirs: Vec<PathBuf>,
    /// What was done to containerd's config.
    pub containerd: ContainerdRecord,
}

/// One installed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Where it is.
    pub path: PathBuf,
    /// The SHA-256 of what install wrote (hex).
    pub sha256: String,
}

/// containerd's config as install found and left it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdRecord {
    /// The config file.
    pub config: PathBuf,
    /// The untouched original, byte for byte; `None` when there was no config before.
    pub backup: Option<PathBuf>,
    /// The SHA-256 of the config as install last wrote it (hex).
    pub written_sha256: String,
    /// Someone changed the config between two installs, so the backup is no longer the whole
    /// story: uninstall then takes moat's entries out instead of restoring the backup.
    pub changed_by_others: bool,
}

impl Record {
    /// Reads the record at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> anyhow::Result<Option<Record>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // Nothing there, or a file where a directory on the way should be (a bad --prefix,
            // which the write check reports).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let r: Record = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a moat install record: restore it, or remove it and undo the \
                 install by hand",
                path.display()
            )
        })?;
        anyhow::ensure!(
            r.format == FORMAT,
            "{} is an install record of format {}, this moat writes format {FORMAT}: uninstall \
             with the moat that installed it",
            path.display(),
            r.format
        );
        Ok(Some(r))
    }

    /// The record as JSON text (stable: same record, same bytes).
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The recorded hash of `path`, if install wrote it.
    pub fn file(&self, path: &Path) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The SHA-256 of the file at `path`, in hex, read in pieces.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        assert_eq!(Record::load(&p).unwrap(), None);
        let r = Record {
            format: FORMAT,
            handlers: vec!["moat-ns".into()],
            files: vec![FileRecord {
                path: "/usr/local/bin/moat".into(),
                sha256: sha256(b"x"),
            }],
            created_dirs: vec!["/etc/moat".into()],
            containerd: ContainerdRecord {
                config: "/etc/containerd/config.toml".into(),
                backup: None,
                written_sha256: sha256(b""),
                changed_by_others: false,
            },
        };
        std::fs::write(&p, r.to_text()).unwrap();
        assert_eq!(Record::load(&p).unwrap(), Some(r.clone()));
        assert_eq!(r.to_text(), r.clone().to_text());
        std::fs::write(&p, "{\"format\": 1}").unwrap();
        let e = format!("{:#}", Record::load(&p).unwrap_err());
        assert!(e.contains("is not a moat install record"), "{e}");
        std::fs::write(&p, r.to_text().replace("\"format\": 1", "\"format\": 9")).unwrap();
        let e = format!("{:#}", Record::load(&p).unwrap_err());
        assert!(e.contains("format 9"), "{e}");
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256(b"abc"));
    }
}
