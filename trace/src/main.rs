//! `moat-trace`: the trace wall's supervisor process.
//!
//! - `moat-trace run [--policy FILE] [--json] -- CMD [ARGS...]`: run CMD (no namespaces) under the
//!   supervisor; decisions are logged to stderr; the exit status is CMD's.
//! - `moat-trace attach --pid PID`: supervise PID (held by its creator before `execve`); the
//!   compiled policy is read as JSON on stdin; `ready` is printed once PID is seized, then one
//!   JSON decision per line; exits when every tracee has.
//! - `moat-trace check [FILE]`: check a policy file (default: the built-in policy).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use moat_trace::Policy;
use moat_trace::launch;

fn usage() -> ExitCode {
    eprintln!(
        "usage: moat-trace run [--policy FILE] [--json] -- CMD [ARGS...]\n       moat-trace attach \
         --pid PID   (policy JSON on stdin)\n       moat-trace check [FILE]"
    );
    ExitCode::from(2)
}

fn load(path: Option<&OsString>) -> Result<Policy, String> {
    match path {
        Some(p) => Policy::load(Path::new(p)).map_err(|e| e.to_string()),
        None => Policy::builtin().map_err(|e| e.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(verb) = args.first().and_then(|a| a.to_str()) else {
        return usage();
    };
    match verb {
        "run" => run(&args[1..]),
        "attach" => attach(&args[1..]),
        "check" => match load(args.get(1)) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("moat-trace: {e}");
                ExitCode::FAILURE
            }
        },
        _ => usage(),
    }
}

fn run(args: &[OsString]) -> ExitCode {
    let mut policy = None;
    let mut json = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].to_str() {
            Some("--policy") => {
                policy = args.get(i + 1).cloned();
                i += 2;
            }
            Some("--json") => {
                json = true;
                i += 1;
            }
            Some("--") => {
                i += 1;
                break;
            }
            _ => break,
        }
    }
    let policy = match load(policy.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("moat-trace: {e}");
            return ExitCode::from(125);
        }
    };
    let sub = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        sub.json().init();
    } else {
        sub.without_time().init();
    }
    match launch::run_command(policy, &args[i..], |d| d.emit()) {
        Ok(exit) => exit.mirror(),
        Err(e) => {
            eprintln!("moat-trace: {e}");
            ExitCode::from(125)
        }
    }
}

fn attach(args: &[OsString]) -> ExitCode {
    let pid = match (args.first().and_then(|a| a.to_str()), args.get(1)) {
        (Some("--pid"), Some(p)) => p.to_str().and_then(|p| p.parse::<i32>().ok()),
        _ => None,
    };
    let Some(pid) = pid else {
        return usage();
    };
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("moat-trace: reading the policy: {e}");
        return ExitCode::FAILURE;
    }
    let policy: Policy = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("moat-trace: the policy on stdin is not a compiled policy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = |line: String| {
        let mut o = std::io::stdout().lock();
        // The reader went away: nothing left to tell.
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    let result = launch::attach(
        policy,
        pid,
        || out("ready".into()),
        move |d| {
            if let Ok(j) = serde_json::to_string(&d) {
                out(j);
            }
        },
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moat-trace: {e}");
            ExitCode::FAILURE
        }
    }
}
