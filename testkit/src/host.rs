//! What the host offers: root, commands on `PATH`.

use std::path::{Path, PathBuf};

/// Whether the test runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `name` is an executable file on `PATH` (or, if it has a slash, at that path).
pub fn have_cmd(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return executable(Path::new(name));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(name))))
}

/// A Python tool `scripts/deps.sh` installs into its venv (`<moat cache root>/venv/bin/<name>`,
/// e.g. `kubernetes-validate`, `yamllint`), or the same command on `PATH`; `None` if neither.
pub fn python_tool(name: &str) -> Option<PathBuf> {
    let venv = moat_artifacts::cache::root().join("venv/bin").join(name);
    if venv.is_file() {
        return Some(venv);
    }
    have_cmd(name).then(|| PathBuf::from(name))
}

/// The commands of `names` that are not on `PATH`.
pub fn missing_cmds<'a>(names: &[&'a str]) -> Vec<&'a str> {
    names.iter().copied().filter(|n| !have_cmd(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_not_nonsense() {
        assert!(have_cmd("sh"));
        assert!(have_cmd("/bin/sh"));
        assert_eq!(
            missing_cmds(&["sh", "no-such-cmd-moat"]),
            vec!["no-such-cmd-moat"]
        );
    }
}
