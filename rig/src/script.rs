//! The two small shell files that tell L1's init what to run: `rig.env` (mounts) and `run.sh` (CMD).
//!
//! Both are written into the scratch share before QEMU starts; the init sources `rig.env`, and runs
//! `run.sh` with the host's `/bin/sh` after chrooting into the host's root. Every value is single-quoted,
//! so any byte except NUL (which cannot occur in arguments or the environment) passes unchanged.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The marker variable set for CMD inside the rig: code can tell it runs in L1.
pub const MARKER: &str = "MOAT_RIG";

/// Exit status `run.sh` uses when CMD's working directory does not exist inside L1.
pub const NO_CWD_STATUS: u8 = 125;

/// `'...'` quoting for POSIX sh: the only special character inside single quotes is `'` itself.
pub fn quote(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(b'\'');
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// True for the caller's variables that CMD inherits: the search path and locale, the Rust and cargo
/// test harness variables (`RUST_*`, `CARGO_*`), and moat's own (`MOAT_*`).
pub fn inherited(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    matches!(
        name,
        "PATH" | "HOME" | "USER" | "LOGNAME" | "LANG" | "TERM" | "TZ" | "NO_COLOR"
    ) || ["LC_", "RUST_", "CARGO_", "MOAT_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// A name `sh` can `export`: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn exportable(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// The environment CMD gets: the inherited part of `caller`, then `extra` (which wins), then
/// `TMPDIR` and the [`MARKER`]. Names `sh` cannot export are dropped.
pub fn environment(
    caller: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(OsString, OsString)],
    tmpdir: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> =
        caller.into_iter().filter(|(k, _)| inherited(k)).collect();
    let fixed = [
        (OsString::from("TMPDIR"), tmpdir.as_os_str().to_owned()),
        (OsString::from(MARKER), OsString::from("1")),
    ];
    for (k, v) in extra.iter().cloned().chain(fixed) {
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    }
    env.retain(|(k, _)| exportable(k));
    env.sort();
    env
}

/// `run.sh`: enter `cwd`, export `env`, exec `cmd`.
pub fn run_sh(cwd: &Path, env: &[(OsString, OsString)], cmd: &[OsString]) -> Vec<u8> {
    let mut s =
        b"# Written by moat-rig: CMD's working directory, environment and command line.\n".to_vec();
    s.extend_from_slice(b"umask 022\ncd -- ");
    s.extend_from_slice(&quote(cwd.as_os_str().as_bytes()));
    s.extend_from_slice(
        format!(
            " || {{ echo \"moat-rig: the working directory does not exist inside L1\" >&2; exit {NO_CWD_STATUS}; }}\n"
        )
        .as_bytes(),
    );
    for (k, v) in env {
        s.extend_from_slice(b"export ");
        s.extend_from_slice(k.as_bytes());
        s.push(b'=');
        s.extend_from_slice(&quote(v.as_bytes()));
        s.push(b'\n');
    }
    s.extend_from_slice(b"exec");
    for arg in cmd {
        s.push(b' ');
        s.extend_from_slice(&quote(arg.as_bytes()));
    }
    s.push(b'\n');
    s
}

/// One writable share: its 9p mount tag and the path it is mounted at (the same as on the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The 9p mount tag.
    pub tag: String,
    /// The host path, which is also its path inside L1.
    pub path: PathBuf,
}

/// `rig.env`: where the scratch share and the writable shares go, where `run.sh` is, and which
/// further modules to load (names, dependencies first).
pub fn rig_env(scratch: &Path, run_sh: &Path, rw: &[Share], modules: &[String]) -> Vec<u8> {
    let mut s = b"# Written by moat-rig: read by L1's init.\n".to_vec();
    let mut assign = |name: &str, value: &[u8]| {
        s.extend_from_slice(name.as_bytes());
        s.push(b'=');
        s.extend_from_slice(&quote(value));
        s.push(b'\n');
    };
    assign("RIG_SCRATCH", scratch.as_os_str().as_bytes());
    assign("RIG_RUN", run_sh.as_os_str().as_bytes());
    assign("RIG_MODULES", modules.join(" ").as_bytes());
    assign("RIG_RW_COUNT", rw.len().to_string().as_bytes());
    for (i, share) in rw.iter().enumerate() {
        assign(&format!("RIG_RW_TAG_{i}"), share.tag.as_bytes());
        assign(
            &format!("RIG_RW_PATH_{i}"),
            share.path.as_os_str().as_bytes(),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn environment_keeps_the_relevant_variables_only() {
        let caller = [
            ("PATH", "/usr/bin"),
            ("RUST_LOG", "debug"),
            ("CARGO_MANIFEST_DIR", "/src"),
            ("MOAT_CACHE_DIR", "/c"),
            ("SSH_AUTH_SOCK", "/secret"),
            ("TMPDIR", "/host/tmp"),
            ("CARGO_BIN_EXE_moat-rig", "/x"),
        ]
        .map(|(k, v)| (os(k), os(v)));
        let env = environment(caller, &[(os("FOO"), os("bar"))], Path::new("/s/tmp"));
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "CARGO_MANIFEST_DIR",
                "FOO",
                "MOAT_CACHE_DIR",
                "MOAT_RIG",
                "PATH",
                "RUST_LOG",
                "TMPDIR"
            ]
        );
        assert!(env.contains(&(os("TMPDIR"), os("/s/tmp"))));
    }

    /// The generated script, run by the host's own `sh`, reproduces arguments and values exactly.
    #[test]
    fn run_sh_round_trips_awkward_values_through_sh() {
        let dir = tempfile::tempdir().unwrap();
        let weird = "it's a \"test\" $HOME `x` \\ \n new line";
        let env = vec![(os("PATH"), os("/usr/bin:/bin")), (os("WEIRD"), os(weird))];
        let cmd = [
            "sh",
            "-c",
            "printf '%s|' \"$PWD\" \"$1\" \"$WEIRD\"; exit 3",
            "arg0",
            weird,
        ]
        .map(os);
        let script = dir.path().join("run.sh");
        std::fs::write(&script, run_sh(dir.path(), &env, &cmd)).unwrap();
        let out = Command::new("/bin/sh")
            .arg(&script)
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let want = format!("{}|{weird}|{weird}|", dir.path().display());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }

    #[test]
    fn run_sh_reports_a_missing_working_directory() {
        let script = tempfile::NamedTempFile::new().unwrap();
        let sh = run_sh(Path::new("/nonexistent/dir"), &[], &[os("true")]);
        std::fs::write(script.path(), sh).unwrap();
        let out = Command::new("/bin/sh").arg(script.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(i32::from(NO_CWD_STATUS)));
        assert!(String::from_utf8_lossy(&out.stderr).contains("working directory"));
    }

    #[test]
    fn rig_env_is_sourceable() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let rw = [Share {
            tag: "moat.rw0".into(),
            path: PathBuf::from("/var/cache/it's"),
        }];
        std::fs::write(
            file.path(),
            rig_env(
                Path::new("/tmp/s"),
                Path::new("/tmp/s/run.sh"),
                &rw,
                &["tun".into()],
            ),
        )
        .unwrap();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                ". {}; printf '%s|%s|%s|%s|%s' \"$RIG_SCRATCH\" \"$RIG_RW_COUNT\" \"$RIG_RW_TAG_0\" \"$RIG_RW_PATH_0\" \"$RIG_MODULES\"",
                file.path().display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "/tmp/s|1|moat.rw0|/var/cache/it's|tun"
        );
    }
}
