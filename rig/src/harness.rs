//! Where a VM test runs: here when `/dev/kvm` is hardware KVM (or we already are inside the rig), in
//! the rig when it is PVM or absent. One decision, shared by every crate's VM tests.
//!
//! ```no_run
//! #[test]
//! fn boots_a_linux_guest() {
//!     moat_rig::harness::run_here_or_in_rig(|| {
//!         // Runs where Linux guests work: on hardware KVM directly, else inside L1.
//!     });
//! }
//! ```
//!
//! In the rig case the current test binary is run again under the rig as
//! `<test exe> --exact <test name> --include-ignored --nocapture --test-threads=1`; inside, [`script::MARKER`] is set,
//! so the same call runs the body. The nested run must report `1 passed`; its output is printed
//! through the test harness's capture. The test name is the libtest thread's name, so this must be
//! called on the test's own thread.
//!
//! Environment: `MOAT_RIG_TIMEOUT` (seconds, default 600) bounds the nested run. moat's cache
//! directory is shared writable with L1, so artifacts built inside persist.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use moat_host::kvm::Flavour;

use crate::run::{self, Error, RunConfig, Streams};
use crate::{kernel, script};

/// Where [`place`] says VM tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In this process: hardware KVM, or already inside the rig.
    Here,
    /// In the rig: `/dev/kvm` is PVM or absent.
    Rig,
}

/// True inside L1 (the rig sets [`script::MARKER`] for CMD).
pub fn inside_rig() -> bool {
    std::env::var_os(script::MARKER).is_some_and(|v| v == "1")
}

/// Decides where VM tests run on this host.
pub fn place() -> Place {
    if inside_rig() || moat_host::kvm::probe().flavour == Flavour::Hardware {
        Place::Here
    } else {
        Place::Rig
    }
}

/// Runs `body` here when Linux guests can run here; otherwise runs this very test inside the rig and
/// asserts that it passed there. Call it from a `#[test]` function, on the test's thread.
pub fn run_here_or_in_rig(body: impl FnOnce()) {
    match place() {
        Place::Here => body(),
        Place::Rig => rerun_in_rig(),
    }
}

/// Like [`run_here_or_in_rig`] but always uses the rig (unless already inside it): for tests of the
/// rig itself, or of behaviour that must be seen under the rig's KVM.
pub fn run_in_rig(body: impl FnOnce()) {
    if inside_rig() {
        body();
    } else {
        rerun_in_rig();
    }
}

/// Runs this very test inside the rig with extra environment variables for it (e.g. to narrow
/// what the nested run does), and asserts that it passed there. Inside the rig, returns at once:
/// the caller's own code then runs. Call it from a `#[test]` function, on the test's thread.
pub fn rerun_in_rig_with_env(env: &[(&str, &str)]) {
    if !inside_rig() {
        rerun(env, &[]);
    }
}

/// Like [`run_in_rig`], with extra L1 modules loaded (from [`kernel::EXTRA_MODULES`], e.g.
/// `overlay` for a containerd inside the rig).
pub fn run_in_rig_with_modules(modules: &[&str], body: impl FnOnce()) {
    if inside_rig() {
        body();
    } else {
        rerun(&[], modules);
    }
}

/// The name libtest gave the current test's thread.
fn test_name() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => name.to_string(),
        _ => panic!(
            "moat_rig::harness must be called on a libtest test thread (it takes the test name from \
             the thread name); run tests with the standard harness"
        ),
    }
}

fn rerun_in_rig() {
    rerun(&[], &[]);
}

fn rerun(env: &[(&str, &str)], modules: &[&str]) {
    let name = test_name();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("cannot find the current test executable: {e}"),
    };
    let mut cfg = RunConfig::new([exe.into_os_string()]);
    cfg.cmd.extend(
        [
            "--exact",
            &name,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(Into::into),
    );
    let secs = std::env::var("MOAT_RIG_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    cfg.timeout = (secs > 0).then(|| Duration::from_secs(secs));
    cfg.env
        .extend(env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    cfg.modules.extend(modules.iter().map(|m| m.to_string()));
    let cache = moat_artifacts::cache::root();
    if std::fs::create_dir_all(&cache).is_ok() {
        cfg.rw.push(cache);
    }
    // One L1 at a time per test process: each keeps a core busy, and parallel ones only slow each other.
    static ONE_L1: Mutex<()> = Mutex::new(());
    let _l1 = ONE_L1
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let result = run::run(
        &cfg,
        Streams {
            stdout: &mut out,
            stderr: &mut err,
            cancel: None,
        },
    );
    print!("{}", String::from_utf8_lossy(&out));
    eprint!("{}", String::from_utf8_lossy(&err));
    match result {
        Ok(o) => {
            let t = o.timings;
            eprintln!(
                "moat-rig: {name} ran in the rig: boot {:.1} s, modules {:.1} s, test {:.1} s, total {:.1} s",
                t.boot.as_secs_f64(),
                t.modules.as_secs_f64(),
                t.cmd.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            assert_eq!(
                o.status, 0,
                "test {name} failed inside the rig (exit status {})",
                o.status
            );
            let passed = String::from_utf8_lossy(&out).contains("test result: ok. 1 passed");
            assert!(
                passed,
                "test {name} did not run inside the rig (no `1 passed` in its output)"
            );
        }
        Err(Error::NoQemu(q)) => {
            eprintln!("SKIPPED: {name} needs the KVM rig, and {q} is not installed");
        }
        Err(Error::Kernel(e @ kernel::Error::MissingTool { .. })) => {
            eprintln!("SKIPPED: {name} needs the KVM rig: {e}");
        }
        Err(e) => panic!("test {name} could not run in the rig: {e}"),
    }
}
