//! Where `moat install` puts things: the standard paths (`/usr/local/bin`, `/etc/moat`,
//! `/usr/local/share/moat`, `/etc/containerd/config.toml`), or the same tree below `--prefix`.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The install tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `--prefix`, made absolute; `None` for `/`.
    pub prefix: Option<PathBuf>,
    root: PathBuf,
}

/// The name of the install record inside [`Layout::share_dir`].
pub const RECORD_NAME: &str = "install-record.json";
/// What a backup's name adds to the file it backs up.
pub const BACKUP_SUFFIX: &str = ".moat-backup";

impl Layout {
    /// The layout for `prefix` (`None`: the real system paths). A relative prefix is taken from
    /// the current directory: the configs moat writes must hold absolute paths.
    pub fn new(prefix: Option<&Path>) -> anyhow::Result<Layout> {
        let prefix = match prefix {
            None => None,
            Some(p) if p.is_absolute() => Some(p.to_path_buf()),
            Some(p) => Some(
                std::env::current_dir()
                    .context("--prefix is relative and the current directory is unknown")?
                    .join(p),
            ),
        };
        let root = prefix.clone().unwrap_or_else(|| PathBuf::from("/"));
        Ok(Layout { prefix, root })
    }

    /// `<root>/<rel>` for a path written relative to `/`.
    fn under(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Binaries: `/usr/local/bin`.
    pub fn bin_dir(&self) -> PathBuf {
        self.under("usr/local/bin")
    }

    /// Handler configs and the trace policy: `/etc/moat`.
    pub fn etc_dir(&self) -> PathBuf {
        self.under("etc/moat")
    }

    /// The guest kernel, initramfs and the install record: `/usr/local/share/moat`.
    pub fn share_dir(&self) -> PathBuf {
        self.under("usr/local/share/moat")
    }

    /// containerd's config when `--containerd-config` is not given: `/etc/containerd/config.toml`.
    pub fn default_containerd_config(&self) -> PathBuf {
        self.under("etc/containerd/config.toml")
    }

    /// What `moat install` did, for `moat install` again and `moat uninstall`.
    pub fn record(&self) -> PathBuf {
        self.share_dir().join(RECORD_NAME)
    }

    /// Rewrites the standard paths inside `text` (a handler config written for `/`) to this
    /// layout's: `/usr/local/...` and `/etc/moat/...` where they start a path (after a quote, a
    /// space or a line start). Unchanged without a prefix.
    pub fn relocate(&self, text: &str) -> String {
        let Some(prefix) = &self.prefix else {
            return text.to_string();
        };
        let prefix = prefix.to_string_lossy();
        let prefix = prefix.trim_end_matches('/');
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut prev: Option<char> = None;
        while let Some(c) = rest.chars().next() {
            let starts_path = matches!(prev, None | Some('"' | '\'' | ' ' | '\n' | '('));
            if starts_path && (rest.starts_with("/usr/local/") || rest.starts_with("/etc/moat/")) {
                out.push_str(prefix);
            }
            out.push(c);
            prev = Some(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// The backup of `file`: `<file>.moat-backup`, beside it.
pub fn backup_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(BACKUP_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_paths_and_prefixed_ones() {
        let l = Layout::new(None).unwrap();
        assert_eq!(l.bin_dir(), Path::new("/usr/local/bin"));
        assert_eq!(l.etc_dir(), Path::new("/etc/moat"));
        assert_eq!(
            l.record(),
            Path::new("/usr/local/share/moat/install-record.json")
        );
        assert_eq!(
            l.default_containerd_config(),
            Path::new("/etc/containerd/config.toml")
        );
        let p = Layout::new(Some(Path::new("/tmp/x"))).unwrap();
        assert_eq!(p.share_dir(), Path::new("/tmp/x/usr/local/share/moat"));
        assert_eq!(
            backup_of(Path::new("/tmp/x/config.toml")),
            Path::new("/tmp/x/config.toml.moat-backup")
        );
        let rel = Layout::new(Some(Path::new("rel"))).unwrap();
        assert!(rel.bin_dir().is_absolute(), "{:?}", rel.bin_dir());
    }

    #[test]
    fn relocate_moves_paths_not_words() {
        let p = Layout::new(Some(Path::new("/opt/t/"))).unwrap();
        let text = "# lives in /etc/moat/ns.toml\nkernel = \"/usr/local/share/moat/vmlinux\"\n\
                    policy = '/etc/moat/p.toml'\nother = \"/srv/usr/local/x\"\n";
        assert_eq!(
            p.relocate(text),
            "# lives in /opt/t/etc/moat/ns.toml\nkernel = \"/opt/t/usr/local/share/moat/vmlinux\"\n\
             policy = '/opt/t/etc/moat/p.toml'\nother = \"/srv/usr/local/x\"\n"
        );
        assert_eq!(Layout::new(None).unwrap().relocate(text), text);
    }
}
