//! What moat remembers about a container between processes: `<root>/<id>/state.json`, and the
//! runtime-spec state derived from it and from the live process.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Error, IoContext, Result};

/// The default state root.
pub const DEFAULT_ROOT: &str = "/run/moat";

/// The name of the state file in a container's directory.
pub const STATE_FILE: &str = "state.json";

/// The name of the exec FIFO in a container's directory.
pub const FIFO: &str = "exec.fifo";

/// A container's lifecycle status (runtime-spec, plus runc's `paused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Set up, its init blocked before `execve` until `start`.
    Created,
    /// Started and alive.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// Its init has exited (or was never reaped and is a zombie).
    Stopped,
}

impl Status {
    /// The runtime-spec / runc word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runtime-spec state of a container (`moat state` prints it as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciState {
    /// Runtime-spec version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: Status,
    /// Host pid of the init (0 once stopped, as runc reports).
    pub pid: i32,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Annotations from the spec.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// The saved state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// Runtime-spec version of the config.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Host pid of the init.
    pub pid: i32,
    /// The init's start time (`/proc/<pid>/stat` field 22), to tell it from a reused pid.
    pub pid_start_time: u64,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Rootfs on the host.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Annotations from the spec.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The container's cgroup.
    pub cgroup: Cgroup,
    /// The spec's seccomp profile (exec'd processes get it too).
    #[serde(default)]
    pub seccomp: Option<LinuxSeccomp>,
    /// The spec's `process.noNewPrivileges` (the default for exec'd processes).
    #[serde(default)]
    pub no_new_privs: bool,
}

impl Saved {
    /// Writes `dir/state.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".state.json.tmp");
        let data =
            serde_json::to_vec(self).map_err(|e| Error::State(format!("encoding state: {e}")))?;
        let mut f = fs::File::create(&tmp).ctx(|| format!("writing {}", tmp.display()))?;
        f.write_all(&data)
            .ctx(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, dir.join(STATE_FILE)).ctx(|| format!("renaming {}", tmp.display()))
    }

    /// Reads `dir/state.json`.
    pub fn read(dir: &Path) -> Result<Saved> {
        let path = dir.join(STATE_FILE);
        let data = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display())))
    }
}

/// State and start time of a process from `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: 18 more fields on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether `pid` is still the process started at `start_time` and has not exited.
pub fn alive(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((s, t)) if t == start_time && s != 'Z' && s != 'X')
}

/// Now as RFC 3339 UTC (`2026-11-24T15:02:01.123456789Z`).
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id() as i32;
        let (state, start) = proc_stat(pid).unwrap();
        assert!(state == 'R' || state == 'S');
        assert!(alive(pid, start));
        assert!(!alive(pid, start + 1));
        assert!(proc_stat(i32::MAX).is_none());
    }

    #[test]
    fn timestamps_look_right() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
