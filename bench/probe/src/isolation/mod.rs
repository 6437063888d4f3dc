//! Isolation probes: each tries one thing a sandbox should stop (or hide) and reports what the
//! kernel actually answered, as one JSON line:
//! `{"probe":"<id>","isolated":true|false|null,"observed":"<what happened>"}`.
//!
//! A verdict comes only from a system call's result, never from configuration. `null` means the
//! probe could not decide (a host fact it compares against was not passed, or the answer says
//! nothing about the sandbox). A probe that fails in an unexpected way still prints its line, and
//! the next probe runs; children are always killed and reaped before the next probe starts.

mod calls;
mod cgroup;
mod files;
mod procs;

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};

use crate::{out, process};

/// What the probes compare against: facts about the host, passed by the benchmark.
#[derive(Debug, Default)]
pub struct Host {
    /// A pid on the host (the benchmark's own), which a pid namespace must hide.
    pub pid: Option<u32>,
    /// The host's `/proc/sys/kernel/random/boot_id`.
    pub boot_id: Option<String>,
    /// The host's kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// A TCP address listening on the host, which network isolation must keep out of reach.
    pub addr: Option<SocketAddr>,
    /// How many processes `fork_bomb` tries to hold at once.
    pub fork_limit: u32,
    /// The sandbox's memory limit in MiB, if it has one: `memory_limit` tries twice that.
    pub memory_mib: Option<u64>,
}

impl Host {
    /// Parses the `isolation` flags.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut host = Host {
            fork_limit: 512,
            ..Host::default()
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let bad = || format!("bad {flag} value {value:?}");
            match flag.as_str() {
                "--host-pid" => host.pid = Some(value.parse().map_err(|_| bad())?),
                "--host-boot-id" => host.boot_id = Some(value.trim().to_string()),
                "--host-kernel" => host.kernel = Some(value.trim().to_string()),
                "--host-addr" => host.addr = Some(value.parse().map_err(|_| bad())?),
                "--fork-limit" => host.fork_limit = value.parse().map_err(|_| bad())?,
                "--memory-mib" => host.memory_mib = Some(value.parse().map_err(|_| bad())?),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(host)
    }
}

/// A probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the sandbox stopped (or hid) it; `None` when the probe could not tell.
    pub isolated: Option<bool>,
    /// What actually happened, briefly.
    pub observed: String,
}

impl Verdict {
    /// The sandbox stopped it.
    pub fn isolated(observed: impl Into<String>) -> Self {
        Verdict {
            isolated: Some(true),
            observed: observed.into(),
        }
    }

    /// It went through.
    pub fn exposed(observed: impl Into<String>) -> Self {
        Verdict {
            isolated: Some(false),
            observed: observed.into(),
        }
    }

    /// Undecided.
    pub fn unknown(observed: impl Into<String>) -> Self {
        Verdict {
            isolated: None,
            observed: observed.into(),
        }
    }

    /// `isolated` if `stopped`, else `exposed`.
    pub fn when(stopped: bool, observed: impl Into<String>) -> Self {
        if stopped {
            Self::isolated(observed)
        } else {
            Self::exposed(observed)
        }
    }
}

/// A probe: its id and the function that runs it.
type Probe = (&'static str, fn(&Host) -> Verdict);

/// Every probe, in the order they run.
const PROBES: &[Probe] = &[
    ("kernel", files::kernel),
    ("boot_id", files::boot_id),
    ("host_pids", files::host_pids),
    ("proc_kcore", files::proc_kcore),
    ("proc_keys", files::proc_keys),
    ("sys_firmware", files::sys_firmware),
    ("mount", calls::mount),
    ("raw_socket", calls::raw_socket),
    ("keyctl", calls::keyctl),
    ("bpf", calls::bpf),
    ("ptrace_sibling", procs::ptrace_sibling),
    ("unshare_user", procs::unshare_user),
    ("module_load", calls::module_load),
    ("proc_sys_write", files::proc_sys_write),
    ("cgroup_escape", cgroup::cgroup_escape),
    ("host_network", calls::host_network),
    // Last, as they are the ones a sandbox may answer by killing it all (a cgroup with
    // `memory.oom.group` set takes the probe down with its child): the lines before are out.
    ("fork_bomb", procs::fork_bomb),
    ("memory_limit", procs::memory_limit),
];

/// The JSON line of one verdict.
pub fn record(id: &str, v: &Verdict) -> String {
    let isolated = match v.isolated {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    };
    format!(
        "{{\"probe\":{},\"isolated\":{isolated},\"observed\":{}}}",
        out::json_string(id),
        out::json_string(&v.observed)
    )
}

/// Runs every probe and prints its line.
pub fn run(host: &Host) {
    for (id, probe) in PROBES {
        let v = panic::catch_unwind(AssertUnwindSafe(|| probe(host)))
            .unwrap_or_else(|_| Verdict::unknown("the probe panicked"));
        out::line(&record(id, &v));
        // As PID 1 of a pid namespace the probe inherits orphans; collect any that ended.
        process::reap_ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let args: Vec<String> = [
            "--host-pid",
            "7",
            "--host-addr",
            "10.0.0.1:80",
            "--fork-limit",
            "9",
        ]
        .map(String::from)
        .into();
        let h = Host::parse(&args).unwrap();
        assert_eq!(h.pid, Some(7));
        assert_eq!(h.fork_limit, 9);
        assert_eq!(h.addr, Some("10.0.0.1:80".parse().unwrap()));
        assert!(Host::parse(&["--bogus".into(), "1".into()]).is_err());
        assert!(Host::parse(&["--host-pid".into()]).is_err());
    }

    #[test]
    fn record_is_json() {
        let v = Verdict::unknown("say \"hi\"");
        assert_eq!(
            record("x", &v),
            r#"{"probe":"x","isolated":null,"observed":"say \"hi\""}"#
        );
    }
}
