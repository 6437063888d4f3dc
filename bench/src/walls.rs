//! The walls a run compares, and how each one runs a bundle in the foreground: runc and crun
//! through their own CLIs, moat's `ns`, `trace` and `vm` through `moat run`, and QEMU microvm
//! (boot and memory rows only: it runs no containers).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::results::{BackendInfo, Place};

/// A backend name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// runc (the OCI reference runtime).
    Runc,
    /// crun.
    Crun,
    /// moat's namespaces backend.
    Ns,
    /// moat's ptrace-supervised backend.
    Trace,
    /// moat's microVM backend.
    Vm,
    /// QEMU microvm booting moat's guest: the VM reference.
    Qemu,
}

impl Kind {
    /// Every backend, in table order.
    pub const ALL: [Kind; 6] = [
        Kind::Runc,
        Kind::Crun,
        Kind::Ns,
        Kind::Trace,
        Kind::Vm,
        Kind::Qemu,
    ];

    /// The name used on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Runc => "runc",
            Kind::Crun => "crun",
            Kind::Ns => "ns",
            Kind::Trace => "trace",
            Kind::Vm => "vm",
            Kind::Qemu => "qemu",
        }
    }

    /// Parses a name of [`Kind::name`].
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether it needs a KVM that runs Linux guests (else it runs in the rig).
    pub fn needs_kvm(self) -> bool {
        matches!(self, Kind::Vm | Kind::Qemu)
    }

    /// Whether it runs containers (QEMU only boots the guest).
    pub fn runs_containers(self) -> bool {
        self != Kind::Qemu
    }
}

/// A usable backend of this run.
#[derive(Clone, Debug)]
pub struct Wall {
    /// Which.
    pub kind: Kind,
    /// The binary it is run with (`runc`, `crun`, `moat`, QEMU).
    pub bin: PathBuf,
    /// A state root of its own (runtimes keep container state there).
    pub root: PathBuf,
    /// The trace policy (trace only).
    pub policy: Option<PathBuf>,
}

impl Wall {
    /// The command that runs `bundle` as container `id` in the foreground, stdio attached, and
    /// removes it when its process exits.
    pub fn run_bundle(&self, bundle: &Path, id: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        match self.kind {
            Kind::Runc | Kind::Crun => {
                c.args(["run", "--bundle"]).arg(bundle).arg(id);
            }
            Kind::Ns | Kind::Trace | Kind::Vm => {
                c.args(["run", "--backend", self.kind.name()]);
                if let Some(p) = &self.policy {
                    c.arg("--policy").arg(p);
                }
                c.arg("--bundle").arg(bundle).arg(id);
            }
            Kind::Qemu => {}
        }
        c
    }
}

/// `runc,ns,...`: the names of `kinds`, as `--backends` takes them.
pub fn names(kinds: &[Kind]) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
}

/// Finds `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The first line of `bin --version`.
pub fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown version".into())
}

/// A backend that did not run, and why.
pub fn missing(kind: Kind, place: Place, why: impl Into<String>) -> BackendInfo {
    BackendInfo {
        name: kind.name().into(),
        version: String::new(),
        place,
        usable: false,
        why: Some(why.into()),
    }
}
