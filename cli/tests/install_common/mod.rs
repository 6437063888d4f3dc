//! Helpers for the `moat install` tests: running the built `moat`, a temp install prefix with a
//! containerd config in it, and snapshots of a directory tree to compare byte for byte.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod procs;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian 12's shipped `/etc/containerd/config.toml`.
pub const DEBIAN_CONFIG: &str =
    include_str!("../../src/install/testdata/debian-12-containerd-config.toml");
/// containerd 1.6.20's `containerd config default`.
pub const DEFAULT_CONFIG: &str =
    include_str!("../../src/install/testdata/containerd-1.6.20-config-default.toml");

/// The handlers moat installs, in its order.
pub const HANDLERS: [&str; 3] = ["moat-ns", "moat-vm", "moat-trace"];

/// Makes sure the binaries `moat install` copies from beside `moat` are built (the shim and
/// `moat-trace` are other packages' binaries: cargo does not build them for this package's tests).
/// Panics with the `cargo build` command otherwise.
pub fn require_binaries() {
    for name in ["containerd-shim-moat-v2", "moat-trace"] {
        moat_testkit::bin(name);
    }
}

/// Runs the built `moat` with `args`, capturing its output.
pub fn moat<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .output()
        .unwrap()
}

/// [`moat`], which must succeed; returns its stdout.
pub fn moat_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = moat(args);
    assert!(
        out.status.success(),
        "moat {:?} failed ({}):\nstdout: {}\nstderr: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A temp dir named so that the leak checker would notice it left behind.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("moat-install-test-")
        .tempdir()
        .unwrap()
}

/// A prefix with `config.toml` in it (when `config` is given).
pub struct Prefix {
    /// The temp dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// `<dir>/config.toml`.
    pub config: PathBuf,
}

impl Prefix {
    /// A fresh prefix; `config`: what `config.toml` holds, or no file.
    pub fn new(config: Option<&str>) -> Prefix {
        let dir = tempdir();
        let path = dir.path().join("config.toml");
        if let Some(c) = config {
            std::fs::write(&path, c).unwrap();
        }
        Prefix { dir, config: path }
    }

    /// The prefix directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `moat install --prefix <dir> --containerd-config <dir>/config.toml` plus `extra`.
    pub fn install_args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            "install".to_string(),
            "--prefix".into(),
            self.path().display().to_string(),
            "--containerd-config".into(),
            self.config.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// `moat uninstall --prefix <dir>` plus `extra`.
    pub fn uninstall_args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            "uninstall".to_string(),
            "--prefix".into(),
            self.path().display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Snapshot of the prefix tree.
    pub fn tree(&self) -> Tree {
        Tree::of(self.path())
    }
}

/// One entry of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory and its permission bits.
    Dir(u32),
    /// A file: permission bits and its exact bytes' SHA-256.
    File(u32, String),
    /// A symlink and its target.
    Link(PathBuf),
}

/// Every path below a directory, with what it is; two trees are equal only if every file has
/// the same bytes and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<PathBuf, Node>);

impl Tree {
    /// Walks `root`.
    pub fn of(root: &Path) -> Tree {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let mode = m.permissions().mode() & 0o7777;
                if m.file_type().is_symlink() {
                    out.insert(rel, Node::Link(std::fs::read_link(&p).unwrap()));
                } else if m.is_dir() {
                    out.insert(rel, Node::Dir(mode));
                    walk(root, &p, out);
                } else {
                    out.insert(rel, Node::File(mode, sha256(&std::fs::read(&p).unwrap())));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        Tree(out)
    }

    /// The paths in `self` or `other` that differ, for assertion messages.
    pub fn differences(&self, other: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        for (p, n) in &self.0 {
            match other.0.get(p) {
                None => out.push(format!("only before: {}", p.display())),
                Some(m) if m != n => out.push(format!("changed: {} ({n:?} -> {m:?})", p.display())),
                Some(_) => {}
            }
        }
        for p in other.0.keys() {
            if !self.0.contains_key(p) {
                out.push(format!("only after: {}", p.display()));
            }
        }
        out
    }
}

/// Asserts two trees are the same, naming every difference.
pub fn assert_same_tree(before: &Tree, after: &Tree, what: &str) {
    let d = before.differences(after);
    assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The runtimes table of a version 2 containerd config file (empty if it has none).
pub fn v2_runtimes(config: &Path) -> toml::Table {
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    t.get("plugins")
        .and_then(|v| v.get("io.containerd.grpc.v1.cri"))
        .and_then(|v| v.get("containerd"))
        .and_then(|v| v.get("runtimes"))
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default()
}

/// The handlers `moat install` put into `config`.
pub fn installed_handlers(config: &Path) -> Vec<String> {
    let rt = v2_runtimes(config);
    HANDLERS
        .iter()
        .filter(|h| rt.contains_key(**h))
        .map(|h| h.to_string())
        .collect()
}

/// The `runtimeclass/` directory of the source tree.
pub fn runtimeclass_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass")
}

/// `overhead.podFixed.memory` of RuntimeClass `handler` (`runtimeclass/<handler>.yaml`), in MiB.
/// The manifests write it as `memory: "<n>Mi"`.
pub fn pod_fixed_memory_mib(handler: &str) -> u64 {
    let path = runtimeclass_dir().join(format!("{handler}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("memory:"))
        .unwrap_or_else(|| panic!("no podFixed memory in {}", path.display()));
    let v = line["memory:".len()..].trim().trim_matches('"');
    v.strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: podFixed memory {v:?} is not <n>Mi", path.display()))
}
