//! The small helpers: binaries, skipping, Python tools.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use moat_testkit::{bin, bin_dir, skip};

#[test]
fn bin_dir_is_the_profile_dir() {
    let dir = bin_dir();
    assert!(
        dir.ends_with("debug") || dir.ends_with("release"),
        "{}",
        dir.display()
    );
}

#[test]
fn bin_names_the_missing_build() {
    let err = std::panic::catch_unwind(|| bin("no-such-moat-binary")).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("cargo build") && msg.contains("-p no-such-moat-binary"),
        "{msg}"
    );
}

fn skipper(reached: &mut bool, why: Option<&str>) {
    moat_testkit::skip_if!(why);
    if why == Some("never") {
        skip!("unreachable {}", 0);
    }
    *reached = true;
}

#[test]
fn skip_returns_early_only_with_a_reason() {
    let mut reached = false;
    skipper(&mut reached, Some("testing skip_if"));
    assert!(!reached);
    skipper(&mut reached, None);
    assert!(reached);
}

#[test]
fn python_tools_from_deps_sh() {
    for tool in ["kubernetes-validate", "yamllint"] {
        let Some(path) = moat_testkit::python_tool(tool) else {
            skip!("{tool} is not installed (scripts/deps.sh installs it)");
        };
        let out = std::process::Command::new(&path)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", path.display());
    }
}
