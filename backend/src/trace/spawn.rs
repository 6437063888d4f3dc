//! Starting a `moat-trace attach` supervisor for a held process, and turning its decision lines
//! back into `tracing` events of this process (so they reach `moat run`'s stderr, the `--log`
//! file or the shim's log like any other line).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use moat_trace::Policy;
use moat_trace::audit::Decision;
use moat_trace::bpf::Filter;

use crate::ns::Supervise;
use crate::{Error, Result, reaper};

/// The supervisor binary: `$MOAT_TRACE_BIN`, else `moat-trace` next to this executable (or one
/// directory up, for test executables under `target/*/deps`), else on `PATH`.
pub fn supervisor_binary() -> Result<PathBuf> {
    crate::binary::find(
        "moat-trace",
        "MOAT_TRACE_BIN",
        "build it (cargo build --release -p moat-trace)",
    )
}

/// The trace wall's hooks into the `ns` wall.
#[derive(Debug)]
pub(crate) struct Spawner {
    bin: PathBuf,
    policy_json: String,
    filter: moat_sandbox::BpfProgram,
}

impl Spawner {
    pub(crate) fn new(bin: PathBuf, policy: &Policy) -> Result<Self> {
        let policy_json = serde_json::to_string(policy)
            .map_err(|e| Error::internal("serialising the trace policy", e))?;
        let filter = Filter::new(policy)
            .instructions()
            .iter()
            .map(|i| seccompiler::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        Ok(Self {
            bin,
            policy_json,
            filter,
        })
    }
}

/// How long a supervisor may take to seize its process.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

impl Supervise for Spawner {
    fn extra_seccomp(&self) -> Vec<moat_sandbox::BpfProgram> {
        vec![self.filter.clone()]
    }

    fn attach(&self, pid: u32, what: &str) -> Result<()> {
        let reaper = reaper::global().map_err(|e| Error::internal("starting the reaper", e))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["attach", "--pid", &pid.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let sp = reaper
            .spawn(&mut cmd)
            .map_err(|e| Error::internal(format!("starting the supervisor for {what}"), e))?;
        let failed = |why: String| -> Error {
            let _ = sp.watch.signal(libc::SIGKILL);
            Error::internal(format!("supervising {what}"), why)
        };
        let (Some(mut stdin), Some(stdout)) = (sp.stdin, sp.stdout) else {
            return Err(failed("the supervisor has no pipes".into()));
        };
        if let Err(e) = stdin.write_all(self.policy_json.as_bytes()) {
            return Err(failed(format!("sending the policy: {e}")));
        }
        drop(stdin);
        // The first line says it is attached; the rest are decisions, re-emitted here.
        let (tx, rx) = std::sync::mpsc::channel();
        let name = what.to_string();
        std::thread::Builder::new()
            .name("moat-trace-log".into())
            .spawn(move || relay(stdout, tx, &name))
            .map_err(|e| Error::internal("starting the supervisor's log reader", e))?;
        match rx.recv_timeout(ATTACH_TIMEOUT) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => {
                let status = sp.watch.wait_timeout(Duration::from_secs(1)).ok().flatten();
                Err(failed(format!(
                    "the supervisor did not attach (exit: {status:?}; its error is on stderr)"
                )))
            }
        }
    }
}

fn relay(stdout: std::process::ChildStdout, ready: std::sync::mpsc::Sender<bool>, what: &str) {
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next();
    let ok = matches!(&first, Some(Ok(l)) if l == "ready");
    let _ = ready.send(ok);
    if !ok {
        return;
    }
    for line in lines.map_while(|l| l.ok()) {
        match serde_json::from_str::<Decision>(&line) {
            Ok(d) => d.emit(),
            Err(_) => tracing::warn!("trace supervisor of {what}: {line}"),
        }
    }
}
