//! `moat-probe`: a tiny helper the test suites run *inside* containers (syscalls busybox cannot
//! make) and *beside* them (the OCI steps from another process).
//!
//! Inside: `moat-probe keyctl | unshare-user | mount | ptrace | getpid N`. Each prints
//! `<probe>: ok` (exit 0) or `<probe>: <errno name>` (exit 1).
//! Beside: `moat-probe start ROOT ID` and `moat-probe state ROOT ID` (moat-sandbox from another
//! process).

use std::path::Path;
use std::process::ExitCode;

fn report(name: &str, ret: libc::c_long) -> ExitCode {
    if ret >= 0 {
        println!("{name}: ok");
        return ExitCode::SUCCESS;
    }
    let e = std::io::Error::last_os_error();
    let code = e.raw_os_error().unwrap_or(0);
    let errno = match code {
        libc::EPERM => "EPERM".to_string(),
        libc::EACCES => "EACCES".to_string(),
        libc::ENOSYS => "ENOSYS".to_string(),
        libc::EINVAL => "EINVAL".to_string(),
        libc::ENOTSUP => "ENOTSUP".to_string(),
        n => format!("errno {n}"),
    };
    println!("{name}: {errno}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        "keyctl" => {
            const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
            const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
            // SAFETY: keyctl with integer arguments.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_GET_KEYRING_ID,
                    KEY_SPEC_SESSION_KEYRING,
                    0,
                )
            };
            report("keyctl", r)
        }
        "unshare-user" => {
            // SAFETY: unshare with a flag.
            let r = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
            report("unshare-user", r.into())
        }
        "mount" => {
            // SAFETY: mount with static strings.
            let r = unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            report("mount", r.into())
        }
        "ptrace" => {
            // SAFETY: PTRACE_TRACEME with no other arguments.
            let r = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            report("ptrace", r)
        }
        "getpid" => {
            let n: u64 = arg(1).parse().unwrap_or(1_000_000);
            let t = std::time::Instant::now();
            for _ in 0..n {
                // SAFETY: getpid has no arguments; the raw syscall avoids any caching.
                unsafe { libc::syscall(libc::SYS_getpid) };
            }
            println!("getpid: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
            ExitCode::SUCCESS
        }
        "start" | "state" => {
            let c = match moat_sandbox::Container::load(Path::new(arg(1)), arg(2)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("moat-probe: {e}");
                    return ExitCode::from(2);
                }
            };
            if arg(0) == "state" {
                println!("{}", serde_json::to_string(&c.state()).unwrap_or_default());
                return ExitCode::SUCCESS;
            }
            match c.start() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("moat-probe: {e}");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!(
                "usage: moat-probe keyctl|unshare-user|mount|ptrace|getpid N|start ROOT ID|state ROOT ID"
            );
            ExitCode::from(2)
        }
    }
}
