//! The isolation matrix: `moat-bench-probe isolation` run once in every wall, with a 64 MiB memory limit
//! and a 100-process limit, and the host's facts (its pid, boot id, kernel release and a TCP port
//! it listens on) to compare with. Every cell is what the probe observed in that sandbox.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::Deserialize;

use crate::exec;
use crate::fixture::{Limits, PROBE};
use crate::results::ProbeResult;
use crate::run::{Bench, limit};
use crate::{Error, Result, machine};

/// The memory limit of the probe's sandbox, MiB (the `memory_limit` probe touches twice that).
pub const MEMORY_MIB: u64 = 64;
/// The pids limit of the probe's sandbox (the `fork_bomb` probe tries 512 processes).
pub const PIDS: i64 = 100;

/// One line of the probe's output.
#[derive(Debug, Deserialize)]
struct Line {
    probe: String,
    isolated: Option<bool>,
    observed: String,
}

/// Parses the probe's JSON lines (other lines are ignored).
pub fn parse(out: &str) -> Vec<(String, Option<bool>, String)> {
    out.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .map(|l| (l.probe, l.isolated, l.observed))
        .collect()
}

/// This machine's address that a sandbox with a network would use to reach it (the source
/// address of its default route; no packet is sent), or loopback.
fn host_ip() -> Ipv4Addr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .ok()
        .and_then(|a| match a {
            SocketAddr::V4(v4) if !v4.ip().is_unspecified() => Some(*v4.ip()),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// Runs the probe in every wall and records its lines.
pub fn matrix(b: &mut Bench) -> Result<()> {
    if b.walls.is_empty() {
        return Ok(());
    }
    // The kernel completes connections to a listening socket on its own: nothing needs to accept.
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| {
        Error::Io(
            "listening on a TCP port for the host_network probe".into(),
            e,
        )
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::Io("the listening port".into(), e))?
        .port();
    let args = [
        PROBE.to_string(),
        "isolation".into(),
        "--host-pid".into(),
        std::process::id().to_string(),
        "--host-boot-id".into(),
        machine::boot_id(),
        "--host-kernel".into(),
        machine::kernel_release(),
        "--host-addr".into(),
        format!("{}:{port}", host_ip()),
        "--fork-limit".into(),
        "512".into(),
        "--memory-mib".into(),
        MEMORY_MIB.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let limits = Limits {
        memory_mib: Some(MEMORY_MIB),
        pids: Some(PIDS),
        tmpfs_mib: None,
    };
    let bundle = b.fixture.bundle(&args, &limits)?;
    b.progress.add(b.walls.len());
    for w in &b.walls {
        let name = w.kind.name();
        match exec::run(
            &mut w.run_bundle(&bundle, "moat-bench-isolation"),
            limit(b.place),
        ) {
            Ok(f) => {
                let lines = parse(&f.stdout);
                if lines.is_empty() {
                    b.results.fail(
                        "isolation",
                        name,
                        format!(
                            "the probe printed no results: {}",
                            exec::shorten(&f.stdout, 200)
                        ),
                    );
                }
                for (probe, isolated, observed) in lines {
                    b.results.isolation.push(ProbeResult {
                        probe,
                        backend: name.into(),
                        place: b.place,
                        isolated,
                        observed,
                    });
                }
            }
            Err(e) => b.results.fail("isolation", name, e),
        }
        b.progress.step(&format!("isolation {name}"));
    }
    drop(listener);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_lines_parse_and_noise_is_skipped() {
        let out = "starting\n{\"probe\":\"kernel\",\"isolated\":false,\"observed\":\"6.1\"}\n\
                   {\"probe\":\"boot_id\",\"isolated\":null,\"observed\":\"EACCES\"}\n{broken\n";
        let v = super::parse(out);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], ("kernel".into(), Some(false), "6.1".into()));
        assert_eq!(v[1].1, None);
    }
}
