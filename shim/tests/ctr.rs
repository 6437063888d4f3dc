//! The shim through containerd's `ctr`: `ctr run --runtime io.containerd.moat.v2` with each backend
//! this build and host can run — stdout, exit codes, exec, kill, metrics — and what happens when the
//! shim or containerd dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Handlers, RUNTIME, containerd, eventually, shim_pids};
use moat_artifacts::image::BUSYBOX_REF;
use moat_testkit::{Containerd, LeakCheck, skip_if};

fn run_args<'a>(cfg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "--runtime", RUNTIME, "--runtime-config-path", cfg];
    v.extend_from_slice(extra);
    v
}

fn task_status(ctd: &Containerd, id: &str) -> String {
    let out = ctd.ctr_ok(&["tasks", "ls"]).unwrap();
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_string()
}

#[test]
fn ctr_runs_busybox_on_every_backend() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    if handlers.usable.is_empty() {
        moat_testkit::skip!("no moat backend is usable here");
    }
    let leaks = LeakCheck::new();
    let ctd = containerd(&handlers, false);
    for (kind, cfg) in &handlers.usable {
        let cfg = cfg.to_str().unwrap();
        let id = format!("run-{kind}");
        let out = ctd
            .ctr(&run_args(
                cfg,
                &[
                    "--rm",
                    BUSYBOX_REF,
                    &id,
                    "sh",
                    "-c",
                    "echo hello from $0; exit 3",
                ],
            ))
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{kind}: {out:?}\n{}",
            ctd.log_tail(30)
        );
        assert_eq!(out.stdout, "hello from sh\n", "{kind}: {out:?}");

        let out = ctd
            .ctr(&run_args(
                cfg,
                &[
                    "--rm",
                    BUSYBOX_REF,
                    &format!("{id}-err"),
                    "sh",
                    "-c",
                    "echo oops >&2",
                ],
            ))
            .unwrap();
        assert!(out.success(), "{kind}: {out:?}");
        assert_eq!(out.stderr, "oops\n", "{kind}: {out:?}");

        // stdin reaches the process and its end of file too.
        let mut cmd = ctd.ctr_command();
        cmd.args(run_args(
            cfg,
            &["--rm", BUSYBOX_REF, &format!("{id}-in"), "wc", "-c"],
        ));
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"12345").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{kind}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5", "{kind}");
    }
    assert!(
        shim_pids(&ctd).is_empty(),
        "every shim exits after its task is deleted"
    );
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn ctr_exec_kill_metrics_and_pids() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    if handlers.usable.is_empty() {
        moat_testkit::skip!("no moat backend is usable here");
    }
    let leaks = LeakCheck::new();
    let ctd = containerd(&handlers, false);
    for (kind, cfg) in &handlers.usable {
        let cfg = cfg.to_str().unwrap();
        let id = format!("long-{kind}");
        ctd.ctr_ok(&run_args(cfg, &["-d", BUSYBOX_REF, &id, "sleep", "1000"]))
            .unwrap();
        assert!(eventually(Duration::from_secs(30), || task_status(
            &ctd, &id
        ) == "RUNNING"));

        let out = ctd
            .ctr_ok(&[
                "tasks",
                "exec",
                "--exec-id",
                "e1",
                &id,
                "sh",
                "-c",
                "echo in; exit 0",
            ])
            .unwrap();
        assert_eq!(out, "in\n", "{kind}");
        let out = ctd
            .ctr(&[
                "tasks",
                "exec",
                "--exec-id",
                "e2",
                &id,
                "sh",
                "-c",
                "exit 4",
            ])
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{kind}: {out:?}");

        let metrics = ctd.ctr_ok(&["tasks", "metrics", &id]).unwrap();
        assert!(
            metrics.contains("memory.usage_in_bytes") || metrics.contains("memory.usage"),
            "{kind}: {metrics}"
        );
        let ps = ctd.ctr_ok(&["tasks", "ps", &id]).unwrap();
        assert!(ps.lines().count() >= 2, "{kind}: {ps}");

        ctd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", &id])
            .unwrap();
        assert!(
            eventually(Duration::from_secs(30), || task_status(&ctd, &id)
                == "STOPPED"),
            "{kind}: task never stopped"
        );
        ctd.ctr_ok(&["tasks", "delete", &id]).unwrap();
        ctd.ctr_ok(&["containers", "delete", &id]).unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || shim_pids(&ctd).is_empty()));
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn killed_shim_reports_an_exit_and_cleans_up() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    let Some(cfg) = handlers.usable.first().map(|(_, p)| p.clone()) else {
        moat_testkit::skip!("no moat backend is usable here");
    };
    let leaks = LeakCheck::new();
    let ctd = containerd(&handlers, false);
    let cfg = cfg.to_str().unwrap();
    ctd.ctr_ok(&run_args(
        cfg,
        &["-d", BUSYBOX_REF, "victim", "sleep", "1000"],
    ))
    .unwrap();
    assert!(eventually(Duration::from_secs(30), || task_status(
        &ctd, "victim"
    ) == "RUNNING"));
    let shims = shim_pids(&ctd);
    assert_eq!(shims.len(), 1, "{shims:?}");
    // Watch containerd's event stream for the exit it publishes once the shim is gone.
    let mut events = ctd.ctr_command();
    events.args(["events"]).stdout(std::process::Stdio::piped());
    let mut events = events.spawn().unwrap();
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("/tasks/exit") && line.contains("victim") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill has no memory arguments; the pid is the shim this test started.
    unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) };
    let exit = rx.recv_timeout(Duration::from_secs(30));
    let _ = events.kill();
    let _ = events.wait();
    let exit = exit
        .unwrap_or_else(|_| panic!("no /tasks/exit after the shim died:\n{}", ctd.log_tail(30)));
    assert!(
        exit.contains("exit_status=137") || exit.contains("137"),
        "{exit}"
    );
    assert!(
        eventually(Duration::from_secs(30), || task_status(&ctd, "victim")
            != "RUNNING"),
        "the task still shows as running"
    );
    let _ = ctd.ctr(&["tasks", "delete", "victim"]);
    ctd.ctr_ok(&["containers", "delete", "victim"]).unwrap();
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn tasks_survive_a_containerd_restart() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    let Some(cfg) = handlers.usable.first().map(|(_, p)| p.clone()) else {
        moat_testkit::skip!("no moat backend is usable here");
    };
    let leaks = LeakCheck::new();
    let mut ctd = containerd(&handlers, false);
    let cfg = cfg.to_str().unwrap();
    ctd.ctr_ok(&run_args(
        cfg,
        &["-d", BUSYBOX_REF, "durable", "sleep", "1000"],
    ))
    .unwrap();
    assert!(eventually(Duration::from_secs(30), || task_status(
        &ctd, "durable"
    ) == "RUNNING"));
    let before = shim_pids(&ctd);
    ctd.kill_daemon();
    ctd.restart().unwrap();
    assert_eq!(task_status(&ctd, "durable"), "RUNNING");
    assert_eq!(shim_pids(&ctd), before, "the same shim serves the task");
    let out = ctd
        .ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "after",
            "durable",
            "echo",
            "still here",
        ])
        .unwrap();
    assert_eq!(out, "still here\n");
    ctd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", "durable"])
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || task_status(
        &ctd, "durable"
    ) == "STOPPED"));
    ctd.ctr_ok(&["tasks", "delete", "durable"]).unwrap();
    ctd.ctr_ok(&["containers", "delete", "durable"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || shim_pids(&ctd).is_empty()));
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn log_uri_terminal_and_oom() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    if handlers.usable.is_empty() {
        moat_testkit::skip!("no moat backend is usable here");
    }
    let leaks = LeakCheck::new();
    let ctd = containerd(&handlers, false);
    for (kind, cfg) in &handlers.usable {
        let cfg = cfg.to_str().unwrap();

        // file:// log URI: stdout and stderr appended to the file.
        let log = dir.path().join(format!("{kind}.log"));
        let uri = format!("file://{}", log.display());
        let out = ctd
            .ctr(&run_args(
                cfg,
                &[
                    "--rm",
                    "--log-uri",
                    &uri,
                    BUSYBOX_REF,
                    &format!("log-{kind}"),
                    "sh",
                    "-c",
                    "echo out; echo err >&2",
                ],
            ))
            .unwrap();
        assert!(out.success(), "{kind}: {out:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("out\n") && text.contains("err\n"),
            "{kind}: {text:?}"
        );

        // A terminal: the process sees a tty on stdin and stdout.
        if moat_testkit::have_cmd("script") {
            let mut cmd = std::process::Command::new("script");
            let ctr_line = format!(
                "ctr --address {} --namespace {} run -t --rm --runtime {RUNTIME} --runtime-config-path {cfg} {BUSYBOX_REF} tty-{kind} sh -c 'test -t 0 && test -t 1 && echo on-a-tty'",
                ctd.address().display(),
                ctd.namespace()
            );
            cmd.args(["-qec", &ctr_line, "/dev/null"])
                .stdin(std::process::Stdio::null());
            let out = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("on-a-tty"),
                "{kind}: {out:?}"
            );
        } else {
            eprintln!("SKIPPED: terminal check: util-linux `script` is not installed");
        }

        // The memory limit kills the process: 137, and containerd hears /tasks/oom.
        let mut events = ctd.ctr_command();
        events.args(["events"]).stdout(std::process::Stdio::piped());
        let mut events = events.spawn().unwrap();
        let stdout = events.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let id = format!("oom-{kind}");
        let want = id.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("/tasks/oom") && line.contains(&want) {
                    let _ = tx.send(line);
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let out = ctd
            .ctr(&run_args(
                cfg,
                &[
                    "--rm",
                    "--memory-limit",
                    "33554432",
                    BUSYBOX_REF,
                    &id,
                    "sh",
                    "-c",
                    "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
                ],
            ))
            .unwrap();
        let oom = rx.recv_timeout(Duration::from_secs(20));
        let _ = events.kill();
        let _ = events.wait();
        assert_eq!(out.status.code(), Some(137), "{kind}: {out:?}");
        assert!(oom.is_ok(), "{kind}: no /tasks/oom event");
    }
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}
