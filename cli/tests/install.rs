//! `moat install` and `moat uninstall` on a temp prefix, as an admin meets them: the dry-run diff
//! that changes nothing, installing twice being installing once, uninstall putting containerd's
//! config back byte for byte, edits kept, and bad input refused before anything is touched.
//! (`install_pods.rs` runs pods through a containerd started from the installed config.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod install_common;

use std::path::Path;

use install_common::{
    DEBIAN_CONFIG, DEFAULT_CONFIG, Prefix, assert_same_tree, installed_handlers, moat, moat_ok,
    require_binaries,
};
use moat_testkit::LeakCheck;

/// `containerd --config FILE config dump`: containerd itself parses the file; `None` without a
/// containerd binary.
fn containerd_dump(config: &Path) -> Option<String> {
    if !moat_testkit::have_cmd("containerd") {
        eprintln!("SKIPPED: containerd's own parse of the merged config: no containerd binary");
        return None;
    }
    let out = std::process::Command::new("containerd")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "containerd rejects {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn dry_run_prints_every_file_it_would_write_and_changes_nothing() {
    require_binaries();
    let leaks = LeakCheck::new();
    let p = Prefix::new(Some(DEBIAN_CONFIG));
    let before = p.tree();
    let out = moat_ok(&p.install_args(&["--dry-run"]));
    let config = p.config.display().to_string();
    // The containerd config as a unified diff: context from the file, moat's tables added.
    assert!(
        out.contains(&format!("--- a{config}\n+++ b{config}\n")),
        "{out}"
    );
    assert!(
        out.contains("       conf_dir = \"/etc/cni/net.d\"\n+\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "+        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.moat-ns]\n"
        ),
        "{out}"
    );
    // The backup, the handler configs and the record as new files; binaries summarised.
    for f in [
        format!("{config}.moat-backup"),
        format!("{}/etc/moat/ns.toml", p.path().display()),
        format!("{}/etc/moat/trace.toml", p.path().display()),
        format!(
            "{}/usr/local/share/moat/install-record.json",
            p.path().display()
        ),
    ] {
        assert!(
            out.contains(&format!("--- /dev/null\n+++ b{f}\n")),
            "{f}:\n{out}"
        );
    }
    assert!(
        out.contains("/usr/local/bin/containerd-shim-moat-v2 (binary): would copy"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert_same_tree(&before, &p.tree(), "--dry-run changed files");
    // Dry-run of an uninstall after a real install changes nothing either.
    moat_ok(&p.install_args(&[]));
    let installed = p.tree();
    let out = moat_ok(&p.uninstall_args(&["--dry-run"]));
    assert!(out.contains(&format!("+++ b{config}\n")), "{out}");
    assert!(out.contains("+++ /dev/null"), "{out}");
    assert_same_tree(&installed, &p.tree(), "uninstall --dry-run changed files");
    moat_ok(&p.uninstall_args(&[]));
    assert_same_tree(&before, &p.tree(), "install + uninstall");
    drop(p);
    leaks.assert_clean();
}

#[test]
fn install_twice_is_once_and_uninstall_restores_the_config_byte_for_byte() {
    require_binaries();
    let leaks = LeakCheck::new();
    for (name, original) in [
        ("Debian's shipped config", DEBIAN_CONFIG),
        ("config default", DEFAULT_CONFIG),
    ] {
        let p = Prefix::new(Some(original));
        let before = p.tree();
        let out = moat_ok(&p.install_args(&[]));
        let prefix = p.path().display().to_string();
        assert!(
            out.contains(&format!("wrote {prefix}/etc/moat/ns.toml (handler config)")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "updated {} (containerd config)",
                p.config.display()
            )),
            "{out}"
        );
        assert!(out.contains("added moat-ns"), "{out}");
        assert!(out.contains("containerd must be restarted"), "{out}");

        // The entries point into the prefix, and containerd itself reads them.
        let handlers = installed_handlers(&p.config);
        assert!(
            handlers.contains(&"moat-ns".to_string()),
            "{name}: {handlers:?}"
        );
        assert!(
            handlers.contains(&"moat-trace".to_string()),
            "{name}: {handlers:?}"
        );
        let rt = install_common::v2_runtimes(&p.config);
        for h in &handlers {
            let backend = h.trim_start_matches("moat-");
            let cfg = rt[h]["options"]["ConfigPath"].as_str().unwrap();
            assert_eq!(cfg, format!("{prefix}/etc/moat/{backend}.toml"), "{name}");
            assert!(Path::new(cfg).is_file(), "{cfg}");
            let shim = rt[h]["runtime_path"].as_str().unwrap();
            assert_eq!(
                shim,
                format!("{prefix}/usr/local/bin/containerd-shim-moat-v2")
            );
        }
        if handlers.contains(&"moat-vm".to_string()) {
            let vm = std::fs::read_to_string(p.path().join("etc/moat/vm.toml")).unwrap();
            assert!(vm.contains(&format!(
                "kernel = \"{prefix}/usr/local/share/moat/vmlinux\""
            )));
            assert!(p.path().join("usr/local/share/moat/vmlinux").is_file());
        } else {
            assert!(out.contains("left out moat-vm"), "{out}");
        }
        if let Some(dump) = containerd_dump(&p.config) {
            for h in &handlers {
                assert!(
                    dump.contains(&format!(
                        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{h}]"
                    )),
                    "{name}: containerd does not see {h}:\n{dump}"
                );
            }
            assert!(
                dump.contains(&format!("ConfigPath = \"{prefix}/etc/moat/ns.toml\"")),
                "{dump}"
            );
        }
        let backup = std::fs::read(format!("{}.moat-backup", p.config.display())).unwrap();
        assert_eq!(
            backup,
            original.as_bytes(),
            "{name}: the backup is the original"
        );

        // Twice is once: nothing is written, the backup is not replaced.
        let once = p.tree();
        let out = moat_ok(&p.install_args(&[]));
        assert!(
            out.contains("already installed as asked: nothing to change"),
            "{out}"
        );
        assert_same_tree(&once, &p.tree(), "the second install");

        let out = moat_ok(&p.uninstall_args(&[]));
        assert!(out.contains("restored from its backup"), "{out}");
        assert_eq!(
            std::fs::read(&p.config).unwrap(),
            original.as_bytes(),
            "{name}: byte for byte"
        );
        assert_same_tree(&before, &p.tree(), "after uninstall");
        let again = moat(&p.uninstall_args(&[]));
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to uninstall"));
    }

    // No config at all: install writes one, uninstall removes it.
    let p = Prefix::new(None);
    let before = p.tree();
    moat_ok(&p.install_args(&[]));
    let text = std::fs::read_to_string(&p.config).unwrap();
    assert!(
        text.starts_with("# containerd config written by `moat install`"),
        "{text}"
    );
    assert!(installed_handlers(&p.config).contains(&"moat-ns".to_string()));
    containerd_dump(&p.config);
    moat_ok(&p.uninstall_args(&[]));
    assert_same_tree(&before, &p.tree(), "install + uninstall without a config");
    drop(p);
    leaks.assert_clean();
}

#[test]
fn edits_after_install_are_kept() {
    require_binaries();
    let leaks = LeakCheck::new();
    let p = Prefix::new(Some(DEBIAN_CONFIG));
    moat_ok(&p.install_args(&[]));
    // The admin tunes a handler config and containerd's config.
    let ns = p.path().join("etc/moat/ns.toml");
    let edited_ns = "# mine\nbackend = \"ns\"\n";
    std::fs::write(&ns, edited_ns).unwrap();
    let mut config = std::fs::read_to_string(&p.config).unwrap();
    config.push_str("\n# the admin's own line\n[plugins.\"io.containerd.gc.v1.scheduler\"]\n  pause_threshold = 0.05\n");
    std::fs::write(&p.config, &config).unwrap();

    let out = moat_ok(&p.install_args(&[]));
    assert!(out.contains(&format!("kept {}", ns.display())), "{out}");
    assert_eq!(std::fs::read_to_string(&ns).unwrap(), edited_ns);
    assert_eq!(
        std::fs::read_to_string(&p.config).unwrap(),
        config,
        "entries already there"
    );

    let out = moat_ok(&p.uninstall_args(&[]));
    assert!(
        out.contains("it changed after moat install wrote it"),
        "{out}"
    );
    assert!(out.contains(&format!("kept {}", ns.display())), "{out}");
    let after = std::fs::read_to_string(&p.config).unwrap();
    assert!(
        after.contains("pause_threshold = 0.05"),
        "the admin's edit stays:\n{after}"
    );
    assert!(
        installed_handlers(&p.config).is_empty(),
        "moat's entries are gone:\n{after}"
    );
    let t: toml::Table = toml::from_str(&after).unwrap();
    let o: toml::Table = toml::from_str(DEBIAN_CONFIG).unwrap();
    assert_eq!(
        t["plugins"]["io.containerd.grpc.v1.cri"],
        o["plugins"]["io.containerd.grpc.v1.cri"]
    );
    let backup = format!("{}.moat-backup", p.config.display());
    assert_eq!(
        std::fs::read_to_string(&backup).unwrap(),
        DEBIAN_CONFIG,
        "the original is kept"
    );
    assert_eq!(
        std::fs::read_to_string(&ns).unwrap(),
        edited_ns,
        "an edited file stays"
    );
    assert!(!p.path().join("usr").exists(), "everything else is gone");
    drop(p);
    leaks.assert_clean();
}

/// Runs a failing install and checks its message names `needles` and that nothing changed.
fn refused(p: &Prefix, args: &[String], needles: &[&str]) {
    let before = p.tree();
    let out = moat(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in: {err}");
    }
    assert_same_tree(&before, &p.tree(), "a refused install changed files");
}

#[test]
fn bad_input_is_refused_and_nothing_changes() {
    require_binaries();
    let leaks = LeakCheck::new();
    let config = |p: &Prefix| p.config.display().to_string();
    for (text, needle) in [
        ("version = 2\n[plugins\n", "is not valid TOML"),
        (
            "root = \"/var/lib/containerd\"\n",
            "containerd config migrate",
        ),
        (
            "version = 2\nplugins = 3\n",
            "rewrite it as [plugins] sections",
        ),
    ] {
        let p = Prefix::new(Some(text));
        refused(&p, &p.install_args(&[]), &[&config(&p), needle]);
        refused(&p, &p.install_args(&["--dry-run"]), &[&config(&p), needle]);
    }
    // A config that cannot be read.
    {
        let p = Prefix::new(None);
        std::fs::create_dir(&p.config).unwrap();
        refused(
            &p,
            &p.install_args(&[]),
            &[
                "cannot read containerd config",
                &config(&p),
                "--containerd-config",
            ],
        );
    }
    // A prefix that is a file.
    {
        let p = Prefix::new(Some(DEBIAN_CONFIG));
        let file = p.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let args: Vec<String> = [
            "install",
            "--prefix",
            &file.display().to_string(),
            "--containerd-config",
            &config(&p),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        refused(
            &p,
            &args,
            &[
                "is not a directory",
                &file.display().to_string(),
                "Nothing was changed",
            ],
        );
    }
    // A backup moat did not make.
    {
        let p = Prefix::new(Some(DEBIAN_CONFIG));
        std::fs::write(
            format!("{}.moat-backup", config(&p)),
            "version = 2\n# older\n",
        )
        .unwrap();
        refused(
            &p,
            &p.install_args(&[]),
            &["moat has no record of making it", "Nothing was changed"],
        );
    }
    // A prefix on a read-only file system.
    if moat_testkit::is_root() {
        let p = Prefix::new(Some(DEBIAN_CONFIG));
        let ro = p.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let before = p.tree();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "ro,size=1m",
                "moat-install-test",
                &ro.display().to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let args: Vec<String> = [
            "install",
            "--prefix",
            &ro.display().to_string(),
            "--containerd-config",
            &config(&p),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = moat(&args);
        let umount = std::process::Command::new("umount")
            .arg(&ro)
            .status()
            .unwrap();
        assert!(umount.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.to_lowercase().contains("read-only") && err.contains(&ro.display().to_string()),
            "{err}"
        );
        assert_same_tree(&before, &p.tree(), "a refused install changed files");
    } else {
        eprintln!("SKIPPED: the read-only prefix case needs root to mount a read-only tmpfs");
    }
    leaks.assert_clean();
}

#[test]
fn uninstall_without_an_install_says_so() {
    let leaks = LeakCheck::new();
    let p = Prefix::new(Some(DEBIAN_CONFIG));
    let out = moat(&p.uninstall_args(&[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing to uninstall") && err.contains("install-record.json"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&p.config).unwrap(), DEBIAN_CONFIG);
    drop(p);
    leaks.assert_clean();
}

#[test]
fn restart_containerd_without_systemd_says_how_instead() {
    use moat::install::restart::{Method, method};
    if !matches!(method(), Method::Manual(_)) {
        moat_testkit::skip!("systemd runs this host: the test would restart its real containerd");
    }
    require_binaries();
    let leaks = LeakCheck::new();
    let p = Prefix::new(Some(DEBIAN_CONFIG));
    for args in [
        p.install_args(&["--restart-containerd"]),
        p.uninstall_args(&["--restart-containerd"]),
    ] {
        let out = moat_ok(&args);
        assert!(
            out.contains("containerd was not restarted: systemd does not run this machine"),
            "{out}"
        );
        assert!(
            out.contains("`systemctl restart containerd` where systemd runs it"),
            "{out}"
        );
    }
    assert_eq!(std::fs::read_to_string(&p.config).unwrap(), DEBIAN_CONFIG);
    drop(p);
    leaks.assert_clean();
}
