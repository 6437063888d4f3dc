//! What `moat install` would do, worked out in full before anything is written: the files to copy
//! and write, the runtime entries merged into containerd's config (and its backup), the record.
//!
//! Twice is once: files already as wanted are not written again, an existing backup is never
//! replaced, merging the entries into a config that has them changes nothing, and the record of
//! an unchanged install is the same bytes. Handler configs and the trace policy are the admin's to
//! edit: an edited one is kept (and said so), as a package manager keeps a changed conffile.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use moat_backend::BackendKind;

use super::containerd_config::{self, Version};
use super::handlers::{self, Selection};
use super::layout::{self, Layout};
use super::plan::{self, Change, Content, Plan};
use super::record::{self, ContainerdRecord, FileRecord, Record};
use super::sources::{self, Sources};

/// The install worked out.
#[derive(Debug)]
pub struct InstallPlan {
    /// The file changes.
    pub plan: Plan,
    /// Which handlers are installed and which are left out.
    pub selection: Selection,
    /// containerd's config file.
    pub containerd_config: PathBuf,
    /// What happens to it: handlers added or updated (empty: left as it is).
    pub config_summary: Vec<String>,
    /// Things to tell the admin: handlers left out, edited files kept, config warnings.
    pub notes: Vec<String>,
}

impl InstallPlan {
    /// Whether containerd's config changes (so containerd must be restarted).
    pub fn changes_containerd_config(&self) -> bool {
        self.plan
            .changes
            .iter()
            .any(|c| c.path == self.containerd_config)
    }
}

/// A file install wants in place.
struct Wanted {
    path: PathBuf,
    content: Content,
    mode: u32,
    what: &'static str,
    /// The admin may edit it; an edit is kept.
    conffile: bool,
}

/// Works out the install of moat from `src` into `layout`, merging into `containerd_config` (default:
/// the one the record names, else `<prefix>/etc/containerd/config.toml`).
pub fn plan(
    layout: &Layout,
    src: &Sources,
    containerd_config: Option<&Path>,
) -> anyhow::Result<InstallPlan> {
    let moat = src.binary(sources::MOAT).map_err(anyhow::Error::msg)?;
    let shim = src
        .binary(sources::SHIM)
        .map_err(|e| anyhow::anyhow!("cannot install: {e}"))?;
    let selection = handlers::select(src);
    let old = Record::load(&layout.record())?;
    let config = match (containerd_config, &old) {
        (Some(c), Some(o)) if absolute(c)? != o.containerd.config => bail!(
            "moat is installed with containerd config {} (see {}), not {}: run `moat uninstall` \
             first to move it",
            o.containerd.config.display(),
            layout.record().display(),
            c.display()
        ),
        (Some(c), _) => absolute(c)?,
        (None, Some(o)) => o.containerd.config.clone(),
        (None, None) => layout.default_containerd_config(),
    };

    let mut notes = host_notes(layout, &selection);
    let wanted = wanted_files(layout, src, &selection, &moat, &shim)?;
    let (mut plan, files, kept) = plan_files(wanted, old.as_ref())?;
    notes.extend(kept);
    let ctd = plan_containerd(layout, &selection, &config, old.as_ref())?;
    notes.extend(ctd.warnings);
    plan.changes.extend(ctd.changes);

    let record_path = layout.record();
    let new_dirs = plan::missing_dirs(
        plan.changes
            .iter()
            .map(|c| c.path.as_path())
            .chain([record_path.as_path()]),
    );
    let rec = record(old.as_ref(), &selection, files, new_dirs, ctd.record);
    let rec_change = Change {
        path: record_path,
        content: Content::Text(rec.to_text()),
        mode: 0o644,
        what: "install record",
    };
    if rec_change.needed()? {
        plan.changes.push(rec_change);
    }
    Ok(InstallPlan {
        plan,
        selection,
        containerd_config: config,
        config_summary: ctd.summary,
        notes,
    })
}

/// What the admin should know about this host: handlers left out, a containerd that ignores
/// `runtime_path` under a prefix, a vm handler installed where KVM cannot run it.
fn host_notes(layout: &Layout, selection: &Selection) -> Vec<String> {
    let mut notes: Vec<String> = selection
        .skipped
        .iter()
        .map(|(k, why)| format!("left out {}: {why}", k.handler()))
        .collect();
    if let (Some(prefix), Some(release)) = (&layout.prefix, containerd_release())
        && containerd_config::ignores_runtime_path(&release)
    {
        notes.push(format!(
            "containerd {release} ignores runtime_path (fixed in 1.6.21 and 1.7.1) and runs the \
             first {} on its PATH: put {} on containerd's PATH for the shim under {} to be used",
            sources::SHIM,
            layout.bin_dir().display(),
            prefix.display()
        ));
    }
    if selection.included.contains(&BackendKind::Vm) {
        let kvm = moat_host::kvm::probe();
        if !kvm.runs_linux_guests() {
            notes.push(format!(
                "installed {} although this host cannot run its pods: {} (`moat check --backend \
                 vm` says more)",
                BackendKind::Vm.handler(),
                kvm.explanation
            ));
        }
    }
    notes
}

/// The changes for the wanted files that differ from what is there, the record of every file
/// that is moat's, and notes on edited files kept.
fn plan_files(
    wanted: Vec<Wanted>,
    old: Option<&Record>,
) -> anyhow::Result<(Plan, Vec<FileRecord>, Vec<String>)> {
    let mut plan = Plan::default();
    let mut files = Vec::new();
    let mut notes = Vec::new();
    for w in wanted {
        let change = Change {
            path: w.path,
            content: w.content,
            mode: w.mode,
            what: w.what,
        };
        let needed = change.needed()?;
        if needed && w.conffile && change.path.exists() {
            let edited = match old.and_then(|o| o.file(&change.path)) {
                Some(f) => record::sha256_file(&change.path)? != f.sha256,
                None => true,
            };
            if edited {
                notes.push(format!(
                    "kept {}: it differs from what moat would write (edited, or not moat's); \
                     remove it and install again to get moat's",
                    change.path.display()
                ));
                continue;
            }
        }
        files.push(FileRecord {
            path: change.path.clone(),
            sha256: content_sha(&change.content)?,
        });
        if needed {
            plan.changes.push(change);
        }
    }
    Ok((plan, files, notes))
}

/// The new record: this install's files, handlers and directories, and those of the installs
/// before it that are still there.
fn record(
    old: Option<&Record>,
    selection: &Selection,
    mut files: Vec<FileRecord>,
    new_dirs: Vec<PathBuf>,
    containerd: ContainerdRecord,
) -> Record {
    let mut handlers: Vec<String> = old.map(|o| o.handlers.clone()).unwrap_or_default();
    let mut created_dirs = old.map(|o| o.created_dirs.clone()).unwrap_or_default();
    if let Some(o) = old {
        for f in &o.files {
            if !files.iter().any(|n| n.path == f.path) && f.path.exists() {
                files.push(f.clone());
            }
        }
    }
    for k in &selection.included {
        if !handlers.iter().any(|h| h == k.handler()) {
            handlers.push(k.handler().to_string());
        }
    }
    for d in new_dirs {
        if !created_dirs.contains(&d) {
            created_dirs.push(d);
        }
    }
    Record {
        format: record::FORMAT,
        handlers,
        files,
        created_dirs,
        containerd,
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("the current directory is unknown")?
            .join(p)
    })
}

fn content_sha(c: &Content) -> anyhow::Result<String> {
    Ok(match c {
        Content::Text(t) => record::sha256(t.as_bytes()),
        Content::Bytes(b) => record::sha256(b),
        Content::Copy(src) => {
            record::sha256_file(src).with_context(|| format!("reading {}", src.display()))?
        }
        Content::Remove => String::new(),
    })
}

/// The binaries, guest artifacts, handler configs and policy of the selected handlers.
fn wanted_files(
    layout: &Layout,
    src: &Sources,
    selection: &Selection,
    moat: &Path,
    shim: &Path,
) -> anyhow::Result<Vec<Wanted>> {
    let bin = |name: &str, from: PathBuf| Wanted {
        path: layout.bin_dir().join(name),
        content: Content::Copy(from),
        mode: 0o755,
        what: "binary",
        conffile: false,
    };
    let mut out = vec![
        bin(sources::MOAT, moat.to_path_buf()),
        bin(sources::SHIM, shim.to_path_buf()),
    ];
    for kind in &selection.included {
        match kind {
            BackendKind::Ns => {}
            BackendKind::Trace => {
                let p = src.binary(sources::TRACE).map_err(anyhow::Error::msg)?;
                out.push(bin(sources::TRACE, p));
            }
            BackendKind::Vm => {
                let p = src.binary(sources::VMM).map_err(anyhow::Error::msg)?;
                out.push(bin(sources::VMM, p));
                let guest = src.guest.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                for (name, from) in [
                    (sources::KERNEL_NAME, &guest.kernel),
                    (sources::INITRAMFS_NAME, &guest.initramfs),
                ] {
                    out.push(Wanted {
                        path: layout.share_dir().join(name),
                        content: Content::Copy(from.clone()),
                        mode: 0o644,
                        what: "guest artifact",
                        conffile: false,
                    });
                }
            }
        }
    }
    for kind in &selection.included {
        out.push(Wanted {
            path: handlers::config_path(*kind, layout),
            content: Content::Text(handlers::config_text(*kind, layout)),
            mode: 0o644,
            what: "handler config",
            conffile: true,
        });
        if *kind == BackendKind::Trace {
            out.push(Wanted {
                path: handlers::trace_policy_path(layout),
                content: Content::Text(handlers::trace_policy_text(layout)),
                mode: 0o644,
                what: "trace policy",
                conffile: true,
            });
        }
    }
    Ok(out)
}

/// What install does to containerd's config.
struct ContainerdPlan {
    /// The backup (first, if new) and the merged config.
    changes: Vec<Change>,
    /// The record of it.
    record: ContainerdRecord,
    /// Handlers added or updated.
    summary: Vec<String>,
    /// Warnings about the file.
    warnings: Vec<String>,
}

/// Works out the containerd config's changes.
fn plan_containerd(
    layout: &Layout,
    selection: &Selection,
    config: &Path,
    old: Option<&Record>,
) -> anyhow::Result<ContainerdPlan> {
    let current: Option<(Vec<u8>, u32)> = match fs::read(config) {
        Ok(b) => {
            let mode = fs::metadata(config)
                .with_context(|| format!("reading {}", config.display()))?
                .permissions()
                .mode()
                & 0o7777;
            Some((b, mode))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read containerd config {}: check the path and its permissions, or \
                     name another with --containerd-config",
                    config.display()
                )
            });
        }
    };
    let text = match &current {
        Some((b, _)) => Some(std::str::from_utf8(b).map_err(|_| {
            anyhow::anyhow!(
                "containerd config {} is not UTF-8 text, so it is not TOML: fix it or name \
                 another with --containerd-config",
                config.display()
            )
        })?),
        None => None,
    };
    // The version of a new file: what the local containerd reads natively; version 2, which
    // every containerd from 1.5 on reads, when there is none to ask.
    let new_version = match (text, containerd_release()) {
        (None, Some(release)) => Version::for_release(&release),
        _ => Version::V2,
    };
    let entries: Vec<_> = selection
        .included
        .iter()
        .map(|k| handlers::entry(*k, layout))
        .collect();
    let merged = containerd_config::merge(text, config, new_version, &entries)?;

    let mut changes = Vec::new();
    let backup_path = layout::backup_of(config);
    let backup = match (old, &current) {
        (Some(o), _) => o.containerd.backup.clone(),
        (None, None) => None,
        (None, Some((bytes, mode))) => {
            if backup_path.exists() {
                // Ours, from an install interrupted before it wrote its record?
                let b = fs::read(&backup_path)
                    .with_context(|| format!("reading {}", backup_path.display()))?;
                let ours = b == *bytes
                    || std::str::from_utf8(&b).ok().is_some_and(|t| {
                        containerd_config::merge(Some(t), config, new_version, &entries)
                            .is_ok_and(|m| m.text.as_bytes() == bytes.as_slice())
                    });
                if !ours {
                    bail!(
                        "{} exists but moat has no record of making it (no {}): it may be the \
                         only copy of an older original. Restore or remove it by hand, then run \
                         moat install again. Nothing was changed.",
                        backup_path.display(),
                        layout.record().display()
                    );
                }
            } else {
                changes.push(Change {
                    path: backup_path.clone(),
                    content: Content::Bytes(bytes.clone()),
                    mode: *mode,
                    what: "backup of the containerd config",
                });
            }
            Some(backup_path)
        }
    };
    let current_sha = current.as_ref().map(|(b, _)| record::sha256(b));
    let changed_by_others = old.is_some_and(|o| {
        o.containerd.changed_by_others
            || current_sha.as_deref() != Some(&o.containerd.written_sha256)
    });
    let mut summary = Vec::new();
    if !merged.added.is_empty() {
        summary.push(format!("added {}", merged.added.join(", ")));
    }
    if !merged.updated.is_empty() {
        summary.push(format!("updated {}", merged.updated.join(", ")));
    }
    if text != Some(merged.text.as_str()) {
        changes.push(Change {
            path: config.to_path_buf(),
            content: Content::Text(merged.text.clone()),
            mode: current.as_ref().map_or(0o644, |(_, m)| *m),
            what: "containerd config",
        });
    }
    let rec = ContainerdRecord {
        config: config.to_path_buf(),
        backup,
        written_sha256: record::sha256(merged.text.as_bytes()),
        changed_by_others,
    };
    Ok(ContainerdPlan {
        changes,
        record: rec,
        summary,
        warnings: merged.warnings,
    })
}

/// The release of the containerd on `PATH` (`1.6.20~ds1`), if there is one to ask.
pub fn containerd_release() -> Option<String> {
    std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            // "containerd github.com/containerd/containerd 1.6.20~ds1 <commit>"
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.split_whitespace().nth(2).map(str::to_string)
        })
}
