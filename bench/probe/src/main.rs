//! `moat-bench-probe`: the one program `moat bench` runs inside every sandbox it compares (runc, crun,
//! and moat's ns, trace and vm backends), so that every number and every verdict comes from the
//! same code.
//!
//! It has to run in a bare busybox rootfs with no libc and inside a microVM guest, so it is a
//! static binary with no crates at all: std plus raw system calls (`sys`, `process`). It is built
//! by `moat_artifacts::static_bin::probe` (`-C target-feature=+crt-static`), or
//! `cargo build --release -p moat-bench-probe` for a dynamic host-only copy.
//!
//! Every subcommand writes one record per line on stdout, flushed as it goes:
//!
//! - `moat-bench-probe getpid N`: N raw `getpid` calls; prints `ns/call <float>`.
//! - `moat-bench-probe open PATH N`: N × (`openat(PATH, O_RDONLY)` + `close`); prints `ns/call <float>`.
//! - `moat-bench-probe io DIR MIB`: writes, fsyncs, reads back and removes `DIR/moat-bench-probe-io`; prints
//!   `write_mib_s <float>` and `read_mib_s <float>`.
//! - `moat-bench-probe idle`: prints `ready`, then waits for SIGTERM/SIGINT, or EOF on a piped stdin.
//! - `moat-bench-probe isolation [--host-pid PID] [--host-boot-id ID] [--host-kernel RELEASE]
//!   [--host-addr IP:PORT] [--fork-limit N] [--memory-mib M]`: tries what a sandbox should stop and
//!   prints one JSON object per probe: `{"probe":"..","isolated":true|false|null,"observed":".."}`.
//!
//! Usage errors exit 2; a benchmark that cannot run (an open or a write failing) exits 1 with the
//! reason on stderr. Isolation probes never abort the run: each prints its line and the next runs.

mod idle;
mod io;
mod isolation;
mod out;
mod process;
mod sys;
mod timing;

/// The usage text, for errors.
const USAGE: &str = "usage: moat-bench-probe getpid N | open PATH N | io DIR MIB | idle | isolation \
[--host-pid PID] [--host-boot-id ID] [--host-kernel RELEASE] [--host-addr IP:PORT] \
[--fork-limit N] [--memory-mib M]";

/// Exits 2 with `why` and the usage text.
fn usage(why: &str) -> ! {
    eprintln!("moat-bench-probe: {why}\n{USAGE}");
    std::process::exit(2)
}

/// Parses a positive count argument.
fn count(what: &str, arg: Option<&String>) -> u64 {
    match arg.map(|s| s.parse::<u64>()) {
        Some(Ok(n)) if n > 0 => n,
        _ => usage(&format!("{what} must be a positive integer")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        usage("no subcommand")
    };
    match (cmd.as_str(), rest.len()) {
        ("getpid", 1) => timing::getpid(count("N", rest.first())),
        ("open", 2) => timing::open(&rest[0], count("N", rest.get(1))),
        ("io", 2) => io::run(&rest[0], count("MIB", rest.get(1))),
        ("idle", 0) => idle::run(),
        ("isolation", _) => {
            let host = isolation::Host::parse(rest).unwrap_or_else(|e| usage(&e));
            isolation::run(&host);
        }
        _ => usage(&format!("bad arguments: {}", args.join(" "))),
    }
}
