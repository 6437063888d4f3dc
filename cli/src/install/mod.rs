//! `moat install` and `moat uninstall`: from a bare node to three RuntimeClass handlers, and back.
//!
//! Install copies moat's binaries (from the directory of the running `moat`), the guest kernel
//! and initramfs, the handler configs and the trace policy, and merges the runtime entries into
//! containerd's config (see [`containerd_config`]), backing the original up beside it. Everything
//! is worked out first ([`install_plan`], [`uninstall_plan`]) as a [`plan::Plan`], which
//! `--dry-run` prints as a diff and otherwise is checked for writability and applied. A record of
//! what was installed ([`record`]) makes a second install change nothing and lets uninstall put
//! containerd's config back byte for byte.

pub mod containerd_config;
pub mod diff;
pub mod handlers;
pub mod install_plan;
pub mod layout;
pub mod plan;
pub mod record;
pub mod restart;
pub mod sources;
pub mod uninstall_plan;

use std::io::Write;

use crate::args::{InstallArgs, UninstallArgs};
use layout::Layout;
use sources::Sources;

/// Whether the process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `moat install`; returns the exit code.
pub fn install(args: &InstallArgs) -> anyhow::Result<i32> {
    let layout = Layout::new(args.prefix.as_deref())?;
    let src = Sources::for_running_moat()?;
    let p = install_plan::plan(&layout, &src, args.containerd_config.as_deref())?;
    let mut out = std::io::stdout().lock();
    let handlers: Vec<&str> = p.selection.included.iter().map(|k| k.handler()).collect();
    writeln!(
        out,
        "moat install: handlers {} into {} (containerd config {})",
        handlers.join(", "),
        layout
            .prefix
            .as_deref()
            .map_or("/".to_string(), |p| p.display().to_string()),
        p.containerd_config.display()
    )?;
    for n in &p.notes {
        writeln!(out, "note: {n}")?;
    }
    let config_changes = p.changes_containerd_config();
    if args.dry_run {
        out.write_all(p.plan.diff()?.as_bytes())?;
        if let Err(e) = p.plan.check_writable() {
            writeln!(out, "would fail: {e:#}")?;
        }
        if config_changes {
            restart_note(&mut out, args.restart_containerd, true)?;
        }
        writeln!(out, "dry run: nothing was changed")?;
        return Ok(0);
    }
    if p.plan.is_empty() {
        writeln!(out, "moat is already installed as asked: nothing to change")?;
        return Ok(0);
    }
    p.plan.check_writable()?;
    for line in p.plan.apply()? {
        writeln!(out, "{line}")?;
    }
    if config_changes {
        let backup = layout::backup_of(&p.containerd_config);
        writeln!(
            out,
            "containerd config {}: {}{}",
            p.containerd_config.display(),
            if p.config_summary.is_empty() {
                "rewritten".to_string()
            } else {
                p.config_summary.join("; ")
            },
            if backup.exists() {
                format!(" (the original is kept at {})", backup.display())
            } else {
                String::new()
            }
        )?;
        restart_note(&mut out, args.restart_containerd, false)?;
    }
    Ok(0)
}

/// Runs `moat uninstall`; returns the exit code.
pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<i32> {
    let layout = Layout::new(args.prefix.as_deref())?;
    let p = uninstall_plan::plan(&layout)?;
    let mut out = std::io::stdout().lock();
    for n in &p.notes {
        writeln!(out, "note: {n}")?;
    }
    let config_changes = p.changes_containerd_config();
    if args.dry_run {
        out.write_all(p.plan.diff()?.as_bytes())?;
        if let Err(e) = p.plan.check_writable() {
            writeln!(out, "would fail: {e:#}")?;
        }
        if config_changes {
            restart_note(&mut out, args.restart_containerd, true)?;
        }
        writeln!(out, "dry run: nothing was changed")?;
        return Ok(0);
    }
    p.plan.check_writable()?;
    for line in p.plan.apply()? {
        writeln!(out, "{line}")?;
    }
    if config_changes {
        restart_note(&mut out, args.restart_containerd, false)?;
    }
    Ok(0)
}

/// Restarts containerd (with `--restart-containerd`) or says that it must be.
fn restart_note(out: &mut impl Write, restart_asked: bool, dry_run: bool) -> anyhow::Result<()> {
    let method = restart::method();
    match (restart_asked, restart::command_line(&method)) {
        (true, Some(argv)) if dry_run => {
            writeln!(out, "would restart containerd: {}", argv.join(" "))?;
        }
        (true, Some(_)) => {
            let ran = restart::restart()?;
            writeln!(out, "restarted containerd ({ran})")?;
        }
        (true, None) => {
            let restart::Method::Manual(why) = method else {
                return Ok(());
            };
            writeln!(
                out,
                "containerd was not restarted: {why}; restart it yourself: {}",
                restart::manual_hint()
            )?;
        }
        (false, _) => writeln!(
            out,
            "containerd must be restarted to load the change (or pass --restart-containerd): {}",
            restart::manual_hint()
        )?,
    }
    Ok(())
}
