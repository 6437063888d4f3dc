//! Builds erofs and ext4 images of a small busybox tree and reads them back with the filesystems'
//! own tools (no mount needed): the files, links and owners must be there, and a second build must
//! be a cache hit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use moat_artifacts::cache::Cache;
use moat_artifacts::rootfs_image::{CACHE_KIND, Format, build_in};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A busybox root: the binary, a few applet links, /etc files, an owned home and an empty /tmp.
fn busybox_tree(root: &Path) {
    for d in ["bin", "etc", "tmp", "home/user", "proc", "dev"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "uname"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/hostname"), "moat-guest\n").unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
}

#[test]
fn erofs_and_ext4_images_hold_the_tree() {
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: /bin/busybox (busybox-static) is not installed; run scripts/deps.sh");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    busybox_tree(src.path());
    let cache_root = tempfile::tempdir().unwrap();
    let cache = Cache::with_root(cache_root.path(), CACHE_KIND);
    let extract = tempfile::tempdir().unwrap();

    if have("mkfs.erofs") && have("fsck.erofs") {
        let img = build_in(&cache, src.path(), Format::Erofs).unwrap();
        let head = fs::read(&img.path).unwrap();
        assert_eq!(
            &head[1024..1028],
            &0xE0F5_E1E2u32.to_le_bytes(),
            "erofs superblock magic"
        );
        let out = extract.path().join("erofs");
        let st = Command::new("fsck.erofs")
            .arg(format!("--extract={}", out.display()))
            .arg(&img.path)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert_eq!(
            fs::read_to_string(out.join("etc/hostname")).unwrap(),
            "moat-guest\n"
        );
        assert_eq!(
            fs::read_link(out.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read(out.join("bin/busybox")).unwrap(),
            fs::read("/bin/busybox").unwrap()
        );
        // Same tree, same image: from the cache.
        let again = build_in(&cache, src.path(), Format::Erofs).unwrap();
        assert_eq!(again, img);
    } else {
        eprintln!(
            "SKIPPED: erofs part: mkfs.erofs/fsck.erofs missing (apt-get install erofs-utils)"
        );
    }

    if have("mkfs.ext4") && have("debugfs") {
        let img = build_in(&cache, src.path(), Format::Ext4).unwrap();
        let head = fs::read(&img.path).unwrap();
        assert_eq!(
            &head[1024 + 0x38..1024 + 0x3a],
            &0xEF53u16.to_le_bytes(),
            "ext4 magic"
        );
        let cat = |what: &str| {
            let o = Command::new("debugfs")
                .args(["-R", what])
                .arg(&img.path)
                .output()
                .unwrap();
            assert!(o.status.success());
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        assert_eq!(cat("cat /etc/hostname"), "moat-guest\n");
        let stat = cat("stat /home/user");
        assert!(stat.contains("User:  1000"), "{stat}");
        let e2 = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&img.path)
            .output()
            .unwrap();
        assert!(
            e2.status.success(),
            "{}",
            String::from_utf8_lossy(&e2.stdout)
        );
        // Damage the cached image: the next build notices and rebuilds it.
        fs::write(&img.path, b"garbage").unwrap();
        let again = build_in(&cache, src.path(), Format::Ext4).unwrap();
        assert_eq!(again.path, img.path);
        assert_eq!(fs::read(&again.path).unwrap().len() as u64, img.size);
    } else {
        eprintln!("SKIPPED: ext4 part: mkfs.ext4/debugfs missing (apt-get install e2fsprogs)");
    }
}
