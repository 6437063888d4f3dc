//! The `moat` command line: `run`, `check`, `bench`, `install`/`uninstall` and the OCI runtime verbs. `main.rs` only calls [`main`];
//! each verb lives in its own module so tests and other front ends can reuse them.

pub mod args;
pub mod bench;
pub mod check;
pub mod forward;
pub mod install;
pub mod logging;
pub mod oci;
pub mod rootfs;
pub mod run;
pub mod signal;
pub mod size;
pub mod spec;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use args::{Cli, Command};
use logging::LogFile;

/// Parses `std::env::args`, runs the verb, and turns its outcome into the process's exit code.
/// Errors go to stderr and, with `--log`, to the log file (where containerd looks for them).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = match &cli.log {
        Some(path) => match LogFile::open(path, cli.log_format) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                eprintln!("moat: cannot open log file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    logging::init(cli.debug, log.clone());
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            let msg = render_error(&e);
            eprintln!("moat: {msg}");
            if let Some(log) = &log {
                log.write("error", &msg);
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once (some errors repeat their source in
/// their own message).
pub fn render_error(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// Checks the global flags moat cannot honour, then runs the verb. Returns the exit code.
pub fn dispatch(cli: &Cli) -> anyhow::Result<i32> {
    if cli.systemd_cgroup {
        anyhow::bail!(
            "--systemd-cgroup is not supported: moat manages cgroups through cgroupfs; set \
             SystemdCgroup = false in containerd's runc options"
        );
    }
    if let Some(r) = cli.rootless.as_deref()
        && !matches!(r, "false" | "auto")
    {
        anyhow::bail!("--rootless={r} is not supported: moat runs containers as root only");
    }
    use oci::{lifecycle, process, resources};
    match &cli.command {
        Command::Run(a) => run::run(cli, a),
        Command::Check(a) => check::run(a),
        Command::Create(a) => lifecycle::create(cli, a),
        Command::Start(a) => lifecycle::start(cli, a),
        Command::State(a) => lifecycle::state(cli, a),
        Command::Kill(a) => lifecycle::kill(cli, a),
        Command::Delete(a) => lifecycle::delete(cli, a),
        Command::List(a) => lifecycle::list(cli, a),
        Command::Ps(a) => process::ps(cli, a),
        Command::Exec(a) => process::exec(cli, a),
        Command::Events(a) => resources::events(cli, a),
        Command::Pause(a) => resources::pause(cli, a),
        Command::Resume(a) => resources::resume(cli, a),
        Command::Update(a) => resources::update(cli, a),
        Command::Features => resources::features(),
        Command::Install(a) => install::install(a),
        Command::Uninstall(a) => install::uninstall(a),
        Command::Bench(a) => bench::run(a),
    }
}
