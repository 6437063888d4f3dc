//! A plan of file writes and removals, built in full before anything is touched: checked for
//! writability first, shown as a diff by `--dry-run`, or applied (each file written beside its
//! destination and renamed over it, so no file is ever half written and a running binary can be
//! replaced).

use std::ffi::CString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::diff;

/// What a change puts at its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A text file.
    Text(String),
    /// Exact bytes (a backup, or a backup put back).
    Bytes(Vec<u8>),
    /// A copy of another file (a binary, the guest kernel).
    Copy(PathBuf),
    /// Nothing: the file is removed.
    Remove,
}

/// One file to write or remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The file.
    pub path: PathBuf,
    /// What goes there.
    pub content: Content,
    /// Its permission bits, when written.
    pub mode: u32,
    /// What it is, for messages (`binary`, `handler config`, `containerd config`, ...).
    pub what: &'static str,
}

/// Everything one `moat install` or `moat uninstall` would do to files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The changes, in the order they are applied.
    pub changes: Vec<Change>,
    /// Directories to remove after the changes if they are then empty, innermost first.
    pub remove_dirs_if_empty: Vec<PathBuf>,
}

impl Change {
    /// Whether applying this would change anything on disk now.
    pub fn needed(&self) -> anyhow::Result<bool> {
        let meta = match fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            // Missing, or a file in the way of a directory on the way (which
            // `check_writable` reports).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Ok(self.content != Content::Remove);
            }
            Err(e) => return Err(e).with_context(|| format!("looking at {}", self.path.display())),
        };
        if self.content == Content::Remove {
            return Ok(true);
        }
        if !meta.is_file() || meta.permissions().mode() & 0o7777 != self.mode {
            return Ok(true);
        }
        let same = match &self.content {
            Content::Text(t) => same_bytes(&self.path, meta.len(), t.as_bytes())?,
            Content::Bytes(b) => same_bytes(&self.path, meta.len(), b)?,
            Content::Copy(src) => {
                let src_len = fs::metadata(src)
                    .with_context(|| format!("reading {}", src.display()))?
                    .len();
                src_len == meta.len()
                    && super::record::sha256_file(src)
                        .with_context(|| format!("reading {}", src.display()))?
                        == super::record::sha256_file(&self.path)
                            .with_context(|| format!("reading {}", self.path.display()))?
            }
            Content::Remove => false,
        };
        Ok(!same)
    }
}

fn same_bytes(path: &Path, len: u64, want: &[u8]) -> anyhow::Result<bool> {
    if len != want.len() as u64 {
        return Ok(false);
    }
    Ok(fs::read(path).with_context(|| format!("reading {}", path.display()))? == want)
}

impl Plan {
    /// Whether the plan does nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.remove_dirs_if_empty.is_empty()
    }

    /// Directories missing on the way to the files this plan writes, outermost first.
    pub fn missing_dirs(&self) -> Vec<PathBuf> {
        missing_dirs(
            self.changes
                .iter()
                .filter(|c| c.content != Content::Remove)
                .map(|c| c.path.as_path()),
        )
    }

    /// Checks, before anything is written, that every file can be: the nearest existing
    /// directory on the way to each is a directory, writable, on a writable file system.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        for c in &self.changes {
            let mut dir = c.path.parent();
            while let Some(d) = dir {
                if fs::symlink_metadata(d).is_ok() {
                    break;
                }
                dir = d.parent();
            }
            let Some(d) = dir else { continue };
            let problem = if !d.is_dir() {
                Some("it is not a directory".to_string())
            } else {
                writable(d).err()
            };
            if let Some(why) = problem {
                bail!(
                    "cannot write {} ({}): {} is not writable: {why}. Run as root, or pick a \
                     --prefix (or --containerd-config) you can write to. Nothing was changed.",
                    c.path.display(),
                    c.what,
                    d.display()
                );
            }
        }
        Ok(())
    }

    /// A unified diff of every file the plan writes or removes (binary files summarised), then
    /// the directories it would remove.
    pub fn diff(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        for d in self.missing_dirs() {
            out.push_str(&format!("would create directory {}\n", d.display()));
        }
        for c in &self.changes {
            out.push_str(&diff::change(c)?);
        }
        for d in &self.remove_dirs_if_empty {
            out.push_str(&format!(
                "would remove directory {} if empty\n",
                d.display()
            ));
        }
        Ok(out)
    }

    /// Applies the plan; returns one line per thing done.
    pub fn apply(&self) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        for d in self.missing_dirs() {
            fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            done.push(format!("created {}", d.display()));
        }
        for c in &self.changes {
            let existed = c.path.exists();
            match &c.content {
                Content::Remove => {
                    fs::remove_file(&c.path)
                        .with_context(|| format!("removing {}", c.path.display()))?;
                    done.push(format!("removed {} ({})", c.path.display(), c.what));
                    continue;
                }
                Content::Text(t) => write_replacing(&c.path, c.mode, |tmp| fs::write(tmp, t))?,
                Content::Bytes(b) => write_replacing(&c.path, c.mode, |tmp| fs::write(tmp, b))?,
                Content::Copy(src) => {
                    write_replacing(&c.path, c.mode, |tmp| fs::copy(src, tmp).map(drop))?
                }
            }
            let verb = if existed { "updated" } else { "wrote" };
            done.push(format!("{verb} {} ({})", c.path.display(), c.what));
        }
        for d in &self.remove_dirs_if_empty {
            match fs::remove_dir(d) {
                Ok(()) => done.push(format!("removed {}", d.display())),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                    done.push(format!("kept {} (not empty)", d.display()));
                }
                Err(e) => return Err(e).with_context(|| format!("removing {}", d.display())),
            }
        }
        Ok(done)
    }
}

/// Directories missing on the way to `files`, outermost first, each once.
pub fn missing_dirs<'a>(files: impl IntoIterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for f in files {
        let mut missing = Vec::new();
        let mut dir = f.parent();
        while let Some(d) = dir {
            if d.exists() {
                break;
            }
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// Writes `path` through a temporary file beside it (renamed over it), with `mode`, and the old
/// file's owner when root replaces a file.
fn write_replacing(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".moat-new");
    let tmp = PathBuf::from(tmp);
    let owner = fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let result = (|| {
        fill(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner
            && crate::install::running_as_root()
        {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Whether the process may create files in `dir`: `access(W_OK)` and a file system not mounted
/// read-only (root passes `access` even there).
fn writable(dir: &Path) -> Result<(), String> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| "the path holds a NUL byte")?;
    // SAFETY: `c` is a valid NUL-terminated path; access reads it and has no other effect.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: statvfs is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid path and `st` a valid, writable statvfs the call fills in.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_flag & libc::ST_RDONLY != 0 {
        return Err("its file system is mounted read-only".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &Path, t: &str) -> Change {
        Change {
            path: path.to_path_buf(),
            content: Content::Text(t.into()),
            mode: 0o644,
            what: "test file",
        }
    }

    #[test]
    fn applies_writes_and_removals_and_knows_when_nothing_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("x/y/a.txt");
        let src = dir.path().join("src.bin");
        fs::write(&src, [0u8, 159, 146, 150]).unwrap();
        let b = dir.path().join("x/b.bin");
        let plan = Plan {
            changes: vec![
                text(&a, "one\n"),
                Change {
                    path: b.clone(),
                    content: Content::Copy(src.clone()),
                    mode: 0o755,
                    what: "binary",
                },
            ],
            remove_dirs_if_empty: Vec::new(),
        };
        assert_eq!(
            plan.missing_dirs(),
            vec![dir.path().join("x"), dir.path().join("x/y")]
        );
        let d = plan.diff().unwrap();
        assert!(d.contains("+++ ") && d.contains("+one"), "{d}");
        assert!(d.contains("binary"), "{d}");
        assert!(!a.exists(), "a diff writes nothing");
        plan.check_writable().unwrap();
        let done = plan.apply().unwrap();
        assert_eq!(done.len(), 4, "{done:?}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "one\n");
        assert_eq!(fs::read(&b).unwrap(), fs::read(&src).unwrap());
        assert_eq!(
            fs::metadata(&b).unwrap().permissions().mode() & 0o777,
            0o755
        );
        for c in &plan.changes {
            assert!(!c.needed().unwrap(), "{c:?}");
        }
        assert!(text(&a, "two\n").needed().unwrap());
        let rm = Plan {
            changes: vec![Change {
                content: Content::Remove,
                ..text(&a, "")
            }],
            remove_dirs_if_empty: vec![dir.path().join("x/y"), dir.path().join("x")],
        };
        let done = rm.apply().unwrap();
        assert!(!a.exists());
        assert!(!dir.path().join("x/y").exists());
        assert!(dir.path().join("x").exists(), "x still holds b.bin");
        assert!(done.iter().any(|l| l.contains("not empty")), "{done:?}");
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prefix");
        fs::write(&file, "").unwrap();
        let plan = Plan {
            changes: vec![text(&file.join("etc/moat/ns.toml"), "x")],
            remove_dirs_if_empty: Vec::new(),
        };
        let e = plan.check_writable().unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("Nothing was changed"), "{e}");
    }
}
