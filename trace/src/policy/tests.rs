//! Policy parsing and checking: good files compile, bad ones name the line and the reason.

use super::*;

fn err(text: &str) -> String {
    Policy::parse(text, "p.toml").unwrap_err().to_string()
}

#[test]
fn builtin_default_compiles() {
    let p = Policy::builtin().unwrap();
    assert_eq!(p.rights(b"/etc/passwd"), Rights::ALL);
    assert_eq!(p.rights(b"/proc/kcore"), Rights::NONE);
    assert_eq!(p.rights(b"/proc/12/mem"), Rights::READ);
    assert_eq!(p.rights(b"/proc/12/maps"), Rights::ALL);
    assert!(!p.network.allows(libc::AF_INET, libc::SOCK_RAW));
    assert!(!p.network.allows(libc::AF_PACKET, libc::SOCK_DGRAM));
    assert!(p.network.allows(libc::AF_INET6, libc::SOCK_STREAM));
    let keyctl = crate::syscalls::nr("keyctl").unwrap();
    assert_eq!(p.action(keyctl).unwrap().action, Action::Errno(libc::EPERM));
}

#[test]
fn shipped_examples_compile() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            Policy::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(
        n >= 3,
        "expected the default and at least two examples, found {n}"
    );
}

#[test]
fn a_file_refines_the_default() {
    let p = Policy::parse(
        r#"
[[paths]]
path = "/etc/secret"
allow = []
errno = "ENOENT"

[[paths]]
path = "/proc/kcore"
allow = ["read"]

[syscalls]
keyctl = "ENOSYS"
getpid = "log"
"#,
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.rights(b"/etc/secret"), Rights::NONE);
    assert_eq!(p.rule_for(b"/etc/secret/x").unwrap().errno, libc::ENOENT);
    assert_eq!(p.rule_for(b"/etc/secret").unwrap().origin, "p.toml:2");
    assert_eq!(p.rights(b"/etc/secrets"), Rights::ALL);
    assert_eq!(p.rights(b"/proc/kcore"), Rights::READ);
    let keyctl = crate::syscalls::nr("keyctl").unwrap();
    assert_eq!(
        p.action(keyctl).unwrap().action,
        Action::Errno(libc::ENOSYS)
    );
    assert_eq!(p.action(39).unwrap().action, Action::Log);
    // Still there from the default.
    assert_eq!(p.rights(b"/dev/mem"), Rights::NONE);
}

#[test]
fn base_none_starts_empty() {
    let p = Policy::parse("base = \"none\"\n", "p.toml").unwrap();
    assert!(p.paths.is_empty());
    assert_eq!(p.rights(b"/bin/sh"), Rights::NONE);
    assert!(p.syscalls.is_empty());
}

#[test]
fn unknown_keys_are_rejected_with_the_line() {
    let e = err("[[paths]]\npath = \"/x\"\nallow = []\nmode = \"ro\"\n");
    assert!(e.starts_with("p.toml:4:1: unknown field `mode`"), "{e}");
    let e = err("\n\n[netwrok]\n");
    assert!(e.starts_with("p.toml:3:"), "{e}");
    assert!(e.contains("netwrok"), "{e}");
}

#[test]
fn malformed_rules_are_rejected() {
    let e = err("[[paths]]\npath = \"etc/secret\"\nallow = []\n");
    assert!(
        e.starts_with("p.toml:2:8: path \"etc/secret\" is not absolute"),
        "{e}"
    );
    let e = err("[[paths]]\npath = \"/etc\"\nallow = [\"read\", \"append\"]\n");
    assert!(
        e.starts_with("p.toml:3:18: unknown right \"append\""),
        "{e}"
    );
    let e = err("[[paths]]\npath = \"/etc\"\n");
    assert!(e.contains("neither allow nor deny"), "{e}");
    let e = err("[[paths]]\npath = \"/etc\"\nallow = []\ndeny = []\n");
    assert!(e.contains("both allow and deny"), "{e}");
    let e = err("[[paths]]\npath = \"/etc\"\nallow = []\nerrno = \"EWHAT\"\n");
    assert!(e.starts_with("p.toml:4:9: unknown errno"), "{e}");
    let e = err("[syscalls]\nopenatt = \"log\"\n");
    assert!(
        e.starts_with("p.toml:2:1: unknown system call \"openatt\""),
        "{e}"
    );
    let e = err("[syscalls]\ngetpid = \"maybe\"\n");
    assert!(
        e.starts_with("p.toml:2:10: unknown action \"maybe\""),
        "{e}"
    );
    let e = err("base = \"strict\"\n");
    assert!(e.starts_with("p.toml:1:8: base = \"strict\""), "{e}");
    let e = err("[network]\nfamilies = [\"inet\", \"ipx\"]\n");
    assert!(
        e.starts_with("p.toml:2:21: unknown address family \"ipx\""),
        "{e}"
    );
    let e = err("[[paths]]\npath = 3\nallow = []\n");
    assert!(e.starts_with("p.toml:2:8:"), "{e}");
}

#[test]
fn conflicting_rules_are_rejected() {
    let e = err(
        "[[paths]]\npath = \"/x\"\nallow = []\n\n[[paths]]\npath = \"/x\"\nallow = [\"read\"]\n",
    );
    assert!(
        e.starts_with("p.toml:5:1: conflicting rules: \"/x\" already has a rule at line 1"),
        "{e}"
    );
    let e = err(
        "[[paths]]\npath = \"/proc/*/status\"\nallow = []\n\n[[paths]]\npath = \"/proc/1/*\"\nallow = [\"read\"]\n",
    );
    assert!(
        e.contains("conflicting rules: /proc/1/* (p.toml:5) and /proc/*/status"),
        "{e}"
    );
    let e = err(
        "[[paths]]\npath = \"/usr\"\ndeny = [\"exec\"]\n\n[exec]\nallow = [\"/usr/bin/cat\"]\n",
    );
    assert!(
        e.starts_with("p.toml:6:1: conflicting rules: exec allow-list entry /usr/bin/cat"),
        "{e}"
    );
    let e = err("[syscalls]\nopenat = \"allow\"\n");
    assert!(e.contains("would bypass the [[paths]] rules"), "{e}");
    let e = err("[syscalls]\nptrace = \"allow\"\n");
    assert!(e.contains("always denied under the trace backend"), "{e}");
    let e = err("[syscalls]\nsocket = \"allow\"\n");
    assert!(e.contains("would bypass the [network] rules"), "{e}");
    let e = err("[network]\nenabled = false\nfamilies = [\"inet\"]\n");
    assert!(
        e.starts_with("p.toml:3:12: conflicting rules: enabled = false"),
        "{e}"
    );
    let e = err("[network]\nfamilies = [\"packet\"]\n");
    assert!(e.contains("packet sockets are raw sockets"), "{e}");
}

#[test]
fn network_sections() {
    let p = Policy::parse("[network]\nenabled = false\n", "p.toml").unwrap();
    assert!(p.network.allows(libc::AF_UNIX, libc::SOCK_STREAM));
    assert!(!p.network.allows(libc::AF_INET, libc::SOCK_STREAM));
    let p = Policy::parse("[network]\nfamilies = [\"unix\", \"inet\"]\n", "p.toml").unwrap();
    assert!(p.network.allows(libc::AF_INET, libc::SOCK_DGRAM));
    assert!(!p.network.allows(libc::AF_INET6, libc::SOCK_DGRAM));
    assert!(!p.network.allows(libc::AF_INET, libc::SOCK_RAW));
    let p = Policy::parse("[network]\nraw = true\n", "p.toml").unwrap();
    assert!(p.network.allows(libc::AF_INET, libc::SOCK_RAW));
    assert!(!p.network.restricts());
}

#[test]
fn exec_allow_list() {
    let p = Policy::parse("[exec]\nallow = [\"/bin\", \"/usr/bin/cat\"]\n", "p.toml").unwrap();
    assert!(p.exec_listed(b"/bin/sh"));
    assert!(p.exec_listed(b"/usr/bin/cat"));
    assert!(!p.exec_listed(b"/usr/bin/id"));
    assert!(Policy::builtin().unwrap().exec_listed(b"/anything"));
}

#[test]
fn policies_survive_json() {
    let p = Policy::builtin().unwrap();
    let j = serde_json::to_string(&p).unwrap();
    let q: Policy = serde_json::from_str(&j).unwrap();
    assert_eq!(q.rights(b"/proc/kcore"), Rights::NONE);
}
