//! The busybox test image end to end: built into a private cache, then read back by the tools that
//! consume it (skopeo, umoci, GNU tar, the kernel via chroot).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use moat_artifacts::cache::Cache;
use moat_artifacts::image::{self, BusyboxImage};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds the image into a temporary cache, or says why it cannot.
fn build(cache_root: &Path) -> Option<BusyboxImage> {
    if !image::busybox_binary().exists() {
        eprintln!(
            "SKIPPED: no {} (install busybox-static)",
            image::busybox_binary().display()
        );
        return None;
    }
    let cache = Cache::with_root(cache_root, image::CACHE_KIND);
    Some(image::busybox_in(&cache, &image::busybox_binary()).unwrap())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rootfs_has_applets_users_and_placeholders() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = build(tmp.path()) else { return };
    let r = &img.rootfs;
    assert!(r.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("../bin/busybox")
    );
    assert!(
        r.join("usr/bin/env").exists(),
        "applet links resolve on the host too"
    );
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(passwd.contains("user:x:1000:1000"), "{passwd}");
    for f in ["etc/group", "etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        assert!(r.join(f).is_file(), "{f}");
    }
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(r.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    for d in ["proc", "sys", "dev", "root", "home/user", "var"] {
        assert!(r.join(d).is_dir(), "{d}");
    }
}

#[test]
fn second_call_is_a_cache_hit_with_the_same_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(first) = build(tmp.path()) else {
        return;
    };
    let before = std::fs::metadata(&first.archive)
        .unwrap()
        .modified()
        .unwrap();
    let second = build(tmp.path()).unwrap();
    assert_eq!(first, second);
    let after = std::fs::metadata(&second.archive)
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "the entry was rebuilt instead of reused");
}

#[test]
fn rebuild_is_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let Some(x) = build(a.path()) else { return };
    let y = build(b.path()).unwrap();
    assert_eq!(
        std::fs::read(&x.archive).unwrap(),
        std::fs::read(&y.archive).unwrap()
    );
    assert_eq!(
        std::fs::read(&x.pause_archive).unwrap(),
        std::fs::read(&y.pause_archive).unwrap()
    );
}

#[test]
fn rootfs_runs_under_chroot() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("SKIPPED: chroot needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = build(tmp.path()) else { return };
    let out = run(Command::new("chroot").arg(&img.rootfs).args([
        "/bin/sh",
        "-c",
        "id -u user; id -gn nobody; cat /etc/hostname; ls /usr/bin/env",
    ]));
    assert_eq!(out, "1000\nnobody\nmoat\n/usr/bin/env\n");
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn skopeo_reads_layouts_and_archives() {
    if !have("skopeo") {
        eprintln!("SKIPPED: no skopeo (scripts/deps.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = build(tmp.path()) else { return };
    let policy = tmp.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    for (src, cmd) in [
        (format!("oci:{}", img.oci_layout.display()), "\"sh\""),
        (format!("oci:{}:latest", img.oci_layout.display()), "\"sh\""),
        (format!("oci-archive:{}", img.archive.display()), "\"sh\""),
        (
            format!("docker-archive:{}", img.archive.display()),
            "\"sh\"",
        ),
        (
            format!("oci:{}:3.6", img.pause_oci_layout.display()),
            "trap",
        ),
        (
            format!("docker-archive:{}", img.pause_archive.display()),
            "trap",
        ),
    ] {
        let out = run(Command::new("skopeo")
            .args(["--policy"])
            .arg(&policy)
            .args(["inspect", "--config", &src]));
        let cfg: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(cfg["architecture"], "amd64", "{src}");
        assert!(cfg["config"].to_string().contains(cmd), "{src}: {cfg}");
        assert!(
            cfg["rootfs"]["diff_ids"][0]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
}

#[test]
fn umoci_unpacks_the_layer_to_the_same_tree() {
    if !have("umoci") {
        eprintln!("SKIPPED: no umoci (scripts/deps.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = build(tmp.path()) else { return };
    // umoci writes into the layout (it may add blobs), so give it a copy.
    let layout = tmp.path().join("layout");
    image::copy_tree(&img.oci_layout, &layout).unwrap();
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&img.rootfs)
        .arg(bundle.join("rootfs"))
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "unpacked layer differs from the rootfs dir:\n{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

/// The cached rootfs, referenced read-only from a bundle, runs under a real OCI runtime.
#[test]
fn runc_runs_a_bundle_over_the_shared_rootfs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 || !have("runc") {
        eprintln!("SKIPPED: needs root and runc (scripts/deps.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = build(tmp.path()) else { return };
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo $$; id -un; touch /x 2>/dev/null || echo read-only".into(),
    ]));
    spec.set_process(Some(process));
    spec.set_hostname(Some("bundle-test".into()));
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(true));
    spec.set_root(Some(root));
    let bundle = tmp.path().join("bundle");
    image::write_bundle(&bundle, &img.rootfs, &spec).unwrap();
    let id = format!("moat-image-test-{}", std::process::id());
    let out = run(Command::new("runc")
        .arg("--root")
        .arg(tmp.path().join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id));
    assert_eq!(out, "1\nroot\nread-only\n");
    // The runtime wrote nothing into the shared rootfs: the cache entry still verifies.
    let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let again = build(tmp.path()).unwrap();
    assert_eq!(
        modified(&again.archive),
        modified(&img.archive),
        "cache entry was rebuilt"
    );
}
