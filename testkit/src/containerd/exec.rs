//! Running a command with captured output and a time limit.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{CtrOutput, Error, Result};

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with stdin closed, capturing stdout and stderr; kills it after `timeout`.
pub fn output(mut cmd: Command, timeout: Duration) -> Result<CtrOutput> {
    let line = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io {
            op: "spawn",
            path: line.clone().into(),
            source,
        })?;
    let pid = child.id();
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = Vec::new();
        let reader = std::thread::spawn(move || {
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut stderr);
            }
            stderr
        });
        let mut stdout = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut stdout);
        }
        let stderr = reader.join().unwrap_or_default();
        let status = child.wait();
        let _ = tx.send((status, stdout, stderr));
    });
    match rx.recv_timeout(timeout) {
        Ok((status, stdout, stderr)) => Ok(CtrOutput {
            status: status.map_err(|source| Error::Io {
                op: "wait",
                path: line.into(),
                source,
            })?,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet
                // (its waiter thread is blocked on its pipes), so the pid is still ours.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            Err(Error::Timeout {
                cmd: line,
                secs: timeout.as_secs(),
            })
        }
    }
}

/// Turns a non-zero exit into [`Error::Ctr`], else returns stdout.
pub fn check<S: AsRef<OsStr>>(out: CtrOutput, args: &[S]) -> Result<String> {
    if out.success() {
        return Ok(out.stdout);
    }
    let cmd = std::iter::once(OsStr::new("ctr"))
        .chain(args.iter().map(AsRef::as_ref))
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    Err(Error::Ctr {
        cmd,
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_both_streams() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let o = output(c, Duration::from_secs(10)).unwrap();
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert_eq!(o.status.code(), Some(3));
        let e = check(o, &["x"]).unwrap_err().to_string();
        assert!(e.contains("ctr x") && e.contains("err"), "{e}");
    }

    #[test]
    fn kills_on_timeout() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let e = output(c, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
    }
}
