//! `moat run`'s options applied to an OCI spec: command, env, cwd, user, hostname and limits.
//!
//! Validation happens here, before anything is created, so a bad option changes nothing.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxPids, Process, Root, Spec, User};

/// What `moat run` may change in a spec.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replaces `process.args` when non-empty.
    pub args: Vec<String>,
    /// `K=V` pairs added to (or replacing in) `process.env`.
    pub env: Vec<String>,
    /// `process.cwd`.
    pub cwd: Option<String>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// Memory limit in bytes (swap is limited to the same, so the limit is a real one).
    pub memory: Option<u64>,
    /// CPUs (quota over a 100 ms period).
    pub cpus: Option<f64>,
    /// Pids limit.
    pub pids: Option<i64>,
    /// `root.path` (absolute).
    pub root: Option<PathBuf>,
    /// `linux.cgroupsPath`.
    pub cgroups_path: Option<String>,
}

/// The CFS period moat uses for `--cpus`.
const CPU_PERIOD_US: u64 = 100_000;

/// Applies `o` to `spec`; errors name the option and say what is accepted.
pub fn apply(spec: &mut Spec, o: &Overrides) -> Result<(), String> {
    let mut process = spec.process().clone().unwrap_or_default();
    apply_process(&mut process, o)?;
    spec.set_process(Some(process));
    if let Some(h) = &o.hostname {
        if h.is_empty() || h.len() > 64 || h.contains(['/', '\0']) {
            return Err(format!(
                "--hostname {h:?}: give 1 to 64 characters, without '/' or NUL"
            ));
        }
        spec.set_hostname(Some(h.clone()));
    }
    if let Some(r) = &o.root {
        let mut root = spec.root().clone().unwrap_or_else(|| {
            let mut r = Root::default();
            r.set_readonly(Some(false));
            r
        });
        root.set_path(r.clone());
        spec.set_root(Some(root));
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    if let Some(p) = &o.cgroups_path {
        linux.set_cgroups_path(Some(PathBuf::from(p)));
    }
    if o.memory.is_some() || o.cpus.is_some() || o.pids.is_some() {
        let mut res = linux.resources().clone().unwrap_or_default();
        if let Some(m) = o.memory {
            let bytes = i64::try_from(m).map_err(|_| format!("--memory {m}: too large"))?;
            if bytes < 4 << 20 {
                return Err(format!(
                    "--memory {m}: too small for a container to start; give at least 4M"
                ));
            }
            let mut mem = res.memory().unwrap_or_default();
            mem.set_limit(Some(bytes));
            mem.set_swap(Some(bytes));
            res.set_memory(Some(mem));
        }
        if let Some(c) = o.cpus {
            if !(c.is_finite() && c > 0.0 && c <= 4096.0) {
                return Err(format!(
                    "--cpus {c}: give a positive number such as 0.5 or 2"
                ));
            }
            let mut cpu = res.cpu().clone().unwrap_or_default();
            cpu.set_period(Some(CPU_PERIOD_US));
            cpu.set_quota(Some((c * CPU_PERIOD_US as f64).round().max(1000.0) as i64));
            res.set_cpu(Some(cpu));
        }
        if let Some(p) = o.pids {
            if p < 1 {
                return Err(format!("--pids-limit {p}: give a positive number"));
            }
            let mut pids = LinuxPids::default();
            pids.set_limit(p);
            res.set_pids(Some(pids));
        }
        linux.set_resources(Some(res));
    }
    spec.set_linux(Some(linux));
    Ok(())
}

fn apply_process(p: &mut Process, o: &Overrides) -> Result<(), String> {
    if !o.args.is_empty() {
        p.set_args(Some(o.args.clone()));
    }
    if !o.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &o.env {
            let Some((k, _)) = kv.split_once('=') else {
                return Err(format!("--env {kv:?}: write it as KEY=VALUE"));
            };
            if k.is_empty() {
                return Err(format!("--env {kv:?}: the name before '=' is empty"));
            }
            env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(cwd) = &o.cwd {
        if !cwd.starts_with('/') {
            return Err(format!(
                "--cwd {cwd:?}: give an absolute path inside the container"
            ));
        }
        p.set_cwd(PathBuf::from(cwd));
    }
    if let Some(u) = &o.user {
        let (uid, gid) = parse_user(u)?;
        let mut user = User::default();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err("no command to run: give one after `--` (e.g. moat run -- sh)".into());
    }
    Ok(())
}

/// What Docker and the CRI give a container and containerd's bare default spec does not: its own
/// cgroup namespace and a read-only `cgroup` mount at `/sys/fs/cgroup`, so the workload sees its
/// own limits (and nothing above its cgroup).
pub fn add_cgroup_view(spec: &mut Spec) {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Mount};
    if let Some(linux) = spec.linux_mut() {
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        if !ns.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup)
            && let Ok(n) = LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()
        {
            ns.push(n);
        }
        linux.set_namespaces(Some(ns));
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if !mounts
        .iter()
        .any(|m| m.destination() == std::path::Path::new("/sys/fs/cgroup"))
    {
        let mut m = Mount::default();
        m.set_destination("/sys/fs/cgroup".into());
        m.set_typ(Some("cgroup".into()));
        m.set_source(Some("cgroup".into()));
        m.set_options(Some(
            ["ro", "nosuid", "noexec", "nodev"]
                .map(String::from)
                .to_vec(),
        ));
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
}

/// `UID[:GID]`, numeric (the image's /etc/passwd is not consulted).
pub fn parse_user(u: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--user {u:?}: give numeric UID[:GID], e.g. 1000 or 1000:1000");
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid: u32 = uid.parse().map_err(|_| bad())?;
    let gid: u32 = match gid {
        Some(g) => g.parse().map_err(|_| bad())?,
        None => uid,
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_land_in_the_spec() {
        let mut spec = Spec::default();
        let o = Overrides {
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into(), "A=b=c".into()],
            cwd: Some("/tmp".into()),
            user: Some("1000:1001".into()),
            hostname: Some("h".into()),
            memory: Some(32 << 20),
            cpus: Some(0.5),
            pids: Some(20),
            root: Some("/r".into()),
            cgroups_path: Some("/moat/x".into()),
        };
        apply(&mut spec, &o).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap()[0], "sh");
        let env = p.env().as_ref().unwrap();
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(env.contains(&"A=b=c".to_string()));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 20);
        assert_eq!(spec.root().as_ref().unwrap().path(), &PathBuf::from("/r"));
    }

    #[test]
    fn bad_options_are_named() {
        for (o, needle) in [
            (
                Overrides {
                    env: vec!["NOEQ".into()],
                    ..Default::default()
                },
                "--env",
            ),
            (
                Overrides {
                    cwd: Some("rel".into()),
                    ..Default::default()
                },
                "--cwd",
            ),
            (
                Overrides {
                    user: Some("root".into()),
                    ..Default::default()
                },
                "--user",
            ),
            (
                Overrides {
                    memory: Some(1024),
                    ..Default::default()
                },
                "--memory",
            ),
            (
                Overrides {
                    cpus: Some(-1.0),
                    ..Default::default()
                },
                "--cpus",
            ),
            (
                Overrides {
                    pids: Some(0),
                    ..Default::default()
                },
                "--pids-limit",
            ),
            (
                Overrides {
                    hostname: Some("a/b".into()),
                    ..Default::default()
                },
                "--hostname",
            ),
        ] {
            let mut spec = Spec::default();
            let err = apply(&mut spec, &o).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
