//! What `moat uninstall` would do, from the install record: put containerd's config back byte for
//! byte (or, if someone changed it after moat did, take only moat's entries out of it), remove the
//! files moat installed that are still as it wrote them, then the record and the directories
//! install created, if empty.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::Context;

use super::containerd_config;
use super::layout::Layout;
use super::plan::{Change, Content, Plan};
use super::record::{self, Record};

/// The uninstall worked out.
#[derive(Debug)]
pub struct UninstallPlan {
    /// The file changes.
    pub plan: Plan,
    /// containerd's config file.
    pub containerd_config: PathBuf,
    /// Things to tell the admin: files kept because they changed, how the config was undone.
    pub notes: Vec<String>,
}

impl UninstallPlan {
    /// Whether containerd's config changes (so containerd must be restarted).
    pub fn changes_containerd_config(&self) -> bool {
        self.plan
            .changes
            .iter()
            .any(|c| c.path == self.containerd_config)
    }
}

/// Works out the uninstall of what the record in `layout` says was installed.
pub fn plan(layout: &Layout) -> anyhow::Result<UninstallPlan> {
    let record_path = layout.record();
    let rec = Record::load(&record_path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "nothing to uninstall: there is no install record at {} (was moat installed with \
             another --prefix?)",
            record_path.display()
        )
    })?;
    let mut plan = Plan::default();
    let mut notes = Vec::new();
    let c = &rec.containerd;
    let current = match fs::read(&c.config) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", c.config.display()));
        }
    };
    let untouched = !c.changed_by_others
        && current.as_deref().map(record::sha256).as_deref() == Some(c.written_sha256.as_str());
    let backup = c.backup.as_ref().filter(|b| b.exists());
    match (untouched, &c.backup, backup, &current) {
        (true, None, _, _) => plan.changes.push(Change {
            path: c.config.clone(),
            content: Content::Remove,
            mode: 0,
            what: "containerd config moat created",
        }),
        (true, Some(_), Some(b), _) => {
            let bytes = fs::read(b).with_context(|| format!("reading {}", b.display()))?;
            let mode = fs::metadata(b)
                .with_context(|| format!("reading {}", b.display()))?
                .permissions()
                .mode()
                & 0o7777;
            plan.changes.push(Change {
                path: c.config.clone(),
                content: Content::Bytes(bytes),
                mode,
                what: "containerd config, restored from its backup",
            });
            plan.changes.push(Change {
                path: b.clone(),
                content: Content::Remove,
                mode: 0,
                what: "backup of the containerd config",
            });
        }
        (_, _, _, None) => notes.push(format!(
            "{} is gone: nothing to take moat's entries out of",
            c.config.display()
        )),
        (_, _, _, Some(bytes)) => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!("{} is not UTF-8 text: fix it by hand", c.config.display())
            })?;
            let handlers: Vec<&str> = rec.handlers.iter().map(String::as_str).collect();
            let (stripped, removed) = containerd_config::strip(text, &c.config, &handlers)?;
            let why = if untouched {
                "its backup is missing".to_string()
            } else {
                "it changed after moat install wrote it".to_string()
            };
            let kept = match &c.backup {
                Some(b) if b.exists() => {
                    format!("; the pre-moat original is still at {}", b.display())
                }
                _ => String::new(),
            };
            notes.push(format!(
                "{}: {why}, so moat took out only its entries ({}) instead of restoring the \
                 original{kept}",
                c.config.display(),
                if removed.is_empty() {
                    "there were none".to_string()
                } else {
                    removed.join(", ")
                }
            ));
            if stripped != text {
                plan.changes.push(Change {
                    path: c.config.clone(),
                    content: Content::Text(stripped),
                    mode: fs::metadata(&c.config)
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o644),
                    what: "containerd config",
                });
            }
        }
    }
    for f in &rec.files {
        match record::sha256_file(&f.path) {
            Ok(sha) if sha == f.sha256 => plan.changes.push(Change {
                path: f.path.clone(),
                content: Content::Remove,
                mode: 0,
                what: "installed file",
            }),
            Ok(_) => notes.push(format!(
                "kept {}: it changed after moat installed it",
                f.path.display()
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", f.path.display())),
        }
    }
    plan.changes.push(Change {
        path: record_path,
        content: Content::Remove,
        mode: 0,
        what: "install record",
    });
    let mut dirs = rec.created_dirs.clone();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    plan.remove_dirs_if_empty = dirs;
    Ok(UninstallPlan {
        plan,
        containerd_config: c.config.clone(),
        notes,
    })
}
