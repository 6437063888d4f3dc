//! Reading the host's state from `/proc` and `/sys`: processes, mounts, cgroup hierarchies.

use std::fs;
use std::path::{Path, PathBuf};

/// One process as `/proc` shows it.
#[derive(Clone, Debug)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its command name (`/proc/<pid>/comm`, at most 15 bytes).
    pub comm: String,
    /// Its arguments joined by spaces.
    pub cmdline: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The contents of `/proc/<pid>/cgroup`.
    pub cgroups: String,
}

impl Process {
    /// `pid comm cmdline`, for messages.
    pub fn describe(&self) -> String {
        format!("pid {} ({}): {}", self.pid, self.comm, self.cmdline)
    }

    /// The value following `flag` in the command line (`-address /x/y.sock` -> `/x/y.sock`).
    pub fn arg_after(&self, flag: &str) -> Option<String> {
        let mut it = self.args.iter();
        it.by_ref().find(|a| *a == flag)?;
        it.next().cloned()
    }
}

/// Parses `/proc/<pid>/stat` for (comm, ppid); the comm is in parentheses and may contain both.
fn stat(pid: i32) -> Option<(String, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// One process, if it (still) exists.
pub fn process(pid: i32) -> Option<Process> {
    let (comm, ppid) = stat(pid)?;
    let args: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let cmdline = args.join(" ");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    Some(Process {
        pid,
        ppid,
        comm,
        cmdline,
        args,
        cgroups,
    })
}

/// Every process visible in `/proc` (those that vanish while listing are left out).
pub fn processes() -> Vec<Process> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(process)
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = text
        .rfind(')')
        .and_then(|i| text.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether `pid` is `ancestor` or one of its descendants.
pub fn descends_from(pid: i32, ancestor: i32, all: &[Process]) -> bool {
    let mut cur = pid;
    for _ in 0..64 {
        if cur == ancestor {
            return true;
        }
        match all.iter().find(|p| p.pid == cur) {
            Some(p) if p.ppid > 0 && p.ppid != cur => cur = p.ppid,
            _ => return false,
        }
    }
    false
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of this process's mount namespace, in mount order.
pub fn mounts() -> Vec<Mount> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fstype: fields.get(sep + 1)?.to_string(),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect()
}

/// The mount points of every cgroup hierarchy (v1 controllers and cgroup2).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// Every directory below `root` down to `depth` levels, as paths.
pub fn dirs_below(root: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, d)) = stack.pop() {
        if d >= depth {
            continue;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                out.push(p.clone());
                stack.push((p, d + 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_itself() {
        let me = std::process::id() as i32;
        let all = processes();
        let p = all.iter().find(|p| p.pid == me).unwrap();
        assert!(p.ppid > 0);
        assert!(descends_from(me, me, &all));
        assert!(alive(me));
    }

    #[test]
    fn mountinfo_has_root_and_unescapes() {
        assert!(mounts().iter().any(|m| m.mount_point == Path::new("/")));
        assert_eq!(unescape(r"a\040b"), "a b");
        assert_eq!(unescape(r"tail\"), r"tail\");
    }
}
