//! `moat-rig`: run a command inside an L1 Linux whose KVM is real (see the `moat_rig` library).
//!
//! Exit status: CMD's own, or 122 (KVM failed to load in L1), 123 (L1 failed to boot or died),
//! 124 (timeout), 125 (the rig could not start, or bad options), 126 (CMD not executable),
//! 127 (CMD not found), 128+N (moat-rig was stopped by signal N).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use moat_rig::run::{self, EXIT_SETUP, RunConfig, Streams};

/// Runs commands inside an L1 Linux under QEMU TCG, where Debian's kvm_amd gives a real KVM.
#[derive(Parser)]
#[command(name = "moat-rig", version, after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

const EXIT_HELP: &str = "Exit status of `run`: CMD's own, or 122 KVM failed to load in L1, 123 L1 failed to \
boot or died, 124 timeout, 125 the rig could not start (or bad options), 126 CMD not executable, \
127 CMD not found, 128+N stopped by signal N.";

#[derive(Subcommand)]
enum Sub {
    /// Run CMD as root inside L1: host filesystem read-only, TMPDIR writable, same working directory.
    Run(RunArgs),
    /// Fetch and cache L1's kernel and build its initramfs (a run does this on first use).
    Prepare,
}

#[derive(clap::Args)]
struct RunArgs {
    /// vCPUs of L1.
    #[arg(long, default_value_t = 1)]
    smp: u32,
    /// Memory of L1 (e.g. 2G, 1536M; a plain number is MiB).
    #[arg(long, default_value = "2G")]
    mem: String,
    /// Stop L1 after this many seconds (boot included); 0 for no limit.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Keep L1's serial console log in FILE.
    #[arg(long, value_name = "FILE")]
    keep_log: Option<PathBuf>,
    /// Share this host directory writable at the same path (repeatable).
    #[arg(long, value_name = "DIR")]
    rw: Vec<PathBuf>,
    /// Set a variable for CMD (repeatable); PATH, HOME, LANG, LC_*, RUST_*, CARGO_*, MOAT_* are passed anyway.
    #[arg(long, short = 'e', value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// QEMU CPU model; it must offer SVM for kvm_amd to load.
    #[arg(long, default_value = "EPYC")]
    cpu: String,
    /// Load a further kernel module in L1 (repeatable): vhost_vsock, vhost_net or tun.
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// Print where the time went (L1 boot, module loading, CMD) on stderr.
    #[arg(long)]
    timings: bool,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    cmd: Vec<OsString>,
}

/// `2G`, `1536M`, `1536` (MiB), `1T` -> MiB.
fn parse_mem(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1.0 / 1024.0),
        Some('M' | 'm') => (&t[..t.len() - 1], 1.0),
        Some('G' | 'g') => (&t[..t.len() - 1], 1024.0),
        Some('T' | 't') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("--mem {s}: give a size like 2G or 1536M"))?;
    if !n.is_finite() || n <= 0.0 {
        bail!("--mem {s}: give a size like 2G or 1536M");
    }
    Ok((n * mul) as u64)
}

fn config(a: RunArgs) -> anyhow::Result<(RunConfig, bool)> {
    let mut cfg = RunConfig::new(a.cmd);
    cfg.smp = a.smp;
    cfg.mem_mib = parse_mem(&a.mem)?;
    cfg.timeout = (a.timeout > 0).then(|| Duration::from_secs(a.timeout));
    cfg.keep_log = a.keep_log;
    cfg.rw = a.rw;
    cfg.cpu = a.cpu;
    cfg.modules = a.modules;
    for kv in a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv}: give NAME=VALUE");
        };
        cfg.env.push((k.into(), v.into()));
    }
    Ok((cfg, a.timings))
}

fn run_cmd(a: RunArgs) -> i32 {
    // Signals become readable on a signalfd, so the run loop can stop QEMU and clean up.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    let cancel = mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    let cancel = match cancel {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(
                "cannot watch for SIGINT/SIGTERM ({e}); interrupting may leave QEMU to die alone"
            );
            None
        }
    };
    let (cfg, timings) = match config(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moat-rig: {e:#}");
            return i32::from(EXIT_SETUP);
        }
    };
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr());
    let result = run::run(
        &cfg,
        Streams {
            stdout: &mut stdout,
            stderr: &mut stderr,
            cancel: cancel.as_ref(),
        },
    );
    match result {
        Ok(o) => {
            if timings {
                let t = o.timings;
                eprintln!(
                    "moat-rig: timings: L1 boot {:.2} s, modules {:.2} s, CMD {:.2} s, total {:.2} s",
                    t.boot.as_secs_f64(),
                    t.modules.as_secs_f64(),
                    t.cmd.as_secs_f64(),
                    t.total.as_secs_f64()
                );
            }
            o.status
        }
        Err(e) => {
            eprintln!("moat-rig: {e}");
            e.exit_code()
        }
    }
}

fn prepare() -> anyhow::Result<()> {
    let kernel = moat_rig::kernel::prepare()?;
    let initrd = moat_rig::initrd::prepare(&kernel)?;
    println!("package   {} {}", kernel.package, kernel.version);
    println!("release   {}", kernel.release);
    println!("kernel    {}", kernel.image().display());
    println!("initramfs {}", initrd.display());
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            std::process::exit(i32::from(EXIT_SETUP));
        }
    };
    let code = match cli.command {
        Sub::Run(a) => run_cmd(a),
        Sub::Prepare => match prepare() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("moat-rig: {e:#}");
                i32::from(EXIT_SETUP)
            }
        },
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_sizes() {
        assert_eq!(parse_mem("2G").unwrap(), 2048);
        assert_eq!(parse_mem("1536M").unwrap(), 1536);
        assert_eq!(parse_mem("1536").unwrap(), 1536);
        assert_eq!(parse_mem("3GiB").unwrap(), 3072);
        assert!(parse_mem("lots").is_err());
        assert!(parse_mem("-1G").is_err());
    }
}
