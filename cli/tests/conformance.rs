//! The conformance suite: what every backend must do, checked by running `moat run` like a user.
//!
//! Written once; `MOAT_TEST_BACKENDS` (or `moat check`) picks the backends. A case that differs by
//! design on some backend names it and why in `differs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::Case;

#[test]
fn lifecycle_leaves_nothing_behind() {
    Case {
        name: "lifecycle",
        differs: &[],
    }
    .run(|ctx| {
        let out = ctx.run(&[], &["true"]);
        assert_eq!(out.code, 0, "{out:#?}");
        // `ctx.run` already checked: no state, cgroup or mount is left.
        let out = ctx.run(&[], &["/bin/echo", "hello", "world"]);
        assert_eq!(out.ok(), "hello world\n");
    });
}

#[test]
fn stdout_and_stderr_stay_apart() {
    Case {
        name: "stdio",
        differs: &[],
    }
    .run(|ctx| {
        let out = ctx.sh("echo out; echo err >&2; echo out2");
        assert_eq!(out.code, 0, "{out:#?}");
        assert_eq!(out.stdout, "out\nout2\n");
        assert_eq!(out.stderr, "err\n");
    });
}

#[test]
fn exit_codes_propagate() {
    Case {
        name: "exit codes",
        differs: &[],
    }
    .run(|ctx| {
        assert_eq!(ctx.sh("exit 7").code, 7);
        assert_eq!(ctx.sh("exit 0").code, 0);
        // A process killed by a signal inside the container: its shell sees 128+N.
        assert_eq!(ctx.sh("sh -c 'kill -TERM $$'; echo $?").ok(), "143\n");
        // The init is pid 1 of its namespace: the kernel drops signals it has no handler for,
        // even its own (runc and docker behave the same).
        assert_eq!(ctx.sh("kill -TERM $$; echo alive").ok(), "alive\n");
        let out = ctx.run(&[], &["/no/such/program"]);
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(out.stderr.contains("/no/such/program"), "{out:#?}");
    });
}

#[test]
fn init_killed_by_a_signal_is_128_plus_n() {
    Case {
        name: "signals",
        differs: &[],
    }
    .run(|ctx| {
        // A fault kills even a pid namespace's init: 128 + SIGSEGV.
        let rootfs = support::rootfs_with(
            ctx.dir.path(),
            &support::image_rootfs(),
            &[(&support::probe_binary(), "probe")],
        );
        let out = ctx.run(&["--rootfs", rootfs.to_str().unwrap()], &["/probe", "segv"]);
        assert_eq!(out.code, 128 + libc::SIGSEGV, "{out:#?}");

        // SIGKILL from the host to the process `--pid-file` names (the init; for vm the VMM,
        // which holds the whole guest): 137, and not mistaken for an OOM kill.
        use std::io::BufRead;
        let id = ctx.fresh_id();
        let pid_file = ctx.dir.path().join(format!("{id}.pid"));
        let mut cmd = ctx.run_command(
            &id,
            &["--pid-file", pid_file.to_str().unwrap()],
            &["sh", "-c", "echo ready; exec sleep 600"],
        );
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signalling the process this test's container runs as.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(137));
        ctx.assert_clean(&id);
    });
}

#[test]
fn signals_to_moat_run_reach_the_container() {
    Case {
        name: "signal forwarding",
        differs: &[],
    }
    .run(|ctx| {
        use std::io::BufRead;
        let id = ctx.fresh_id();
        let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done";
        let mut cmd = ctx.run_command(&id, &[], &["sh", "-c", script]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        // SAFETY: signalling the moat process this test started.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
        assert_eq!(child.wait().unwrap().code(), Some(3));
        ctx.assert_clean(&id);
    });
}

#[test]
fn env_cwd_and_user() {
    Case {
        name: "env/cwd/user",
        differs: &[],
    }
    .run(|ctx| {
        let out = ctx.run(
            &["--env", "FOO=bar baz", "--env", "EMPTY="],
            &["sh", "-c", "echo \"$FOO|$EMPTY|$PATH\""],
        );
        assert_eq!(
            out.ok(),
            "bar baz||/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        );
        let out = ctx.run(&["--cwd", "/tmp"], &["pwd"]);
        assert_eq!(out.ok(), "/tmp\n");
        let out = ctx.run(&["--user", "1000:1001"], &["sh", "-c", "id -u; id -g"]);
        assert_eq!(out.ok(), "1000\n1001\n");
        let out = ctx.sh("id -u");
        assert_eq!(out.ok(), "0\n");
    });
}

#[test]
fn init_is_pid_1() {
    Case {
        name: "pid 1",
        differs: &[],
    }
    .run(|ctx| {
        assert_eq!(ctx.sh("echo $$").ok(), "1\n");
    });
}

#[test]
fn hostname_is_not_the_hosts() {
    Case {
        name: "hostname",
        differs: &[],
    }
    .run(|ctx| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let inside = ctx.run(&[], &["hostname"]);
        assert_ne!(inside.ok().trim(), host.trim());
        let named = ctx.run(&["--hostname", "moat-test"], &["hostname"]);
        assert_eq!(named.ok(), "moat-test\n");
    });
}

#[test]
fn no_host_processes_visible() {
    Case {
        name: "pid namespace",
        differs: &[],
    }
    .run(|ctx| {
        // A shell loop (no child processes): the shell itself is the only process.
        let out = ctx.sh("for p in /proc/[0-9]*; do echo $p; done");
        assert_eq!(out.ok(), "/proc/1\n");
    });
}

#[test]
fn proc_kcore_and_keys_are_masked() {
    Case {
        name: "masked paths",
        differs: &[],
    }
    .run(|ctx| {
        // Masked files read as empty (a /dev/null bind); check those the container's kernel has
        // (the vm guest's kernel leaves most of them out). Under the trace wall the built-in
        // policy denies opening the sensitive ones outright (stricter).
        let mut checked = 0;
        for path in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/proc/sched_debug",
        ] {
            let out = ctx.sh(&format!(
                "if [ -e {path} ]; then wc -c < {path}; else echo absent; fi"
            ));
            if out.stdout.trim() == "absent" {
                eprintln!("note: {path} does not exist in the container; nothing to mask");
                continue;
            }
            let denied = ctx.backend.0 == "trace"
                && out.code != 0
                && out.stderr.contains("Permission denied")
                && out.stderr.contains("syscall denied");
            if !denied {
                assert_eq!(out.ok().trim(), "0", "{path}: {out:#?}");
            }
            checked += 1;
        }
        assert!(
            checked > 0 || ctx.backend.0 == "vm",
            "no masked /proc file exists on the host's kernel"
        );
        // Masked directories are empty read-only tmpfs mounts.
        let out = ctx.sh("ls -A /sys/firmware | wc -l; touch /sys/firmware/x");
        assert_eq!(out.stdout.trim(), "0", "{out:#?}");
        assert_ne!(out.code, 0, "{out:#?}");
    });
}

#[test]
fn proc_sys_is_read_only() {
    Case {
        name: "read-only /proc/sys",
        differs: &[],
    }
    .run(|ctx| {
        let out = ctx.sh("echo x > /proc/sys/kernel/hostname");
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(out.stderr.contains("Read-only file system"), "{out:#?}");
        let out = ctx.sh("grep ' /proc/sys ' /proc/mounts");
        assert!(out.ok().contains(" ro,"), "{out:#?}");
    });
}

#[test]
fn mount_is_denied_without_cap_sys_admin() {
    Case {
        name: "mount denied",
        differs: &[],
    }
    .run(|ctx| {
        let out = ctx.sh("mount -t tmpfs none /mnt");
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(
            out.stderr.contains("denied") || out.stderr.contains("not permitted"),
            "{out:#?}"
        );
    });
}

#[test]
fn memory_limit_kill_is_137() {
    Case {
        name: "memory limit",
        differs: &[],
    }
    .run(|ctx| {
        let out = ctx.run(&["--memory", "32M"], &["sh", "-c", "tail /dev/zero"]);
        assert_eq!(out.code, 137, "{out:#?}");
    });
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    Case {
        name: "pids limit",
        differs: &[],
    }
    .run(|ctx| {
        // 100 background sleeps against a limit of 20: forks start failing, the shell says so.
        let out = ctx.run(
            &["--pids-limit", "20"],
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo done",
            ],
        );
        assert!(out.stderr.contains("fork"), "{out:#?}");
    });
}

#[test]
fn default_seccomp_denies_keyctl_and_user_namespaces() {
    Case {
        name: "seccomp",
        differs: &[],
    }
    .run(|ctx| {
        let out = ctx.sh("unshare -U true");
        assert_ne!(out.code, 0, "{out:#?}");
        let rootfs = support::rootfs_with(
            ctx.dir.path(),
            &support::image_rootfs(),
            &[(&support::probe_binary(), "probe")],
        );
        let r = rootfs.to_str().unwrap();
        let out = ctx.run(&["--rootfs", r], &["/probe", "getpid"]);
        assert_eq!(out.code, 0, "{out:#?}");
        let out = ctx.run(&["--rootfs", r], &["/probe", "keyctl"]);
        assert_eq!(out.code, libc::EPERM, "{out:#?}");
        let out = ctx.run(&["--rootfs", r], &["/probe", "unshare-user"]);
        assert_eq!(out.code, libc::EPERM, "{out:#?}");
    });
}

#[test]
fn bad_config_is_a_clear_error_and_leaves_nothing() {
    Case { name: "bad config.json", differs: &[] }.run(|ctx| {
        let cases: &[(&str, &str, &str)] = &[
            ("malformed", "{ not json", "config.json"),
            ("unknown namespace", r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"bogus"}]}}"#, "bogus"),
            ("missing rootfs", r#"{"ociVersion":"1.0.2","root":{"path":"no-such-rootfs"},"process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#, "no-such-rootfs"),
        ];
        for (what, config, needle) in cases {
            let bundle = ctx.dir.path().join(what.replace(' ', "-"));
            std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
            std::fs::write(bundle.join("config.json"), config).unwrap();
            let out = ctx.run(&["--bundle", bundle.to_str().unwrap()], &["true"]);
            assert_ne!(out.code, 0, "{what}: {out:#?}");
            assert!(out.stderr.contains(needle), "{what}: error should name {needle:?}: {out:#?}");
        }
    });
}
