//! Validation: every refusal names the field, before anything is created.

use super::*;
use crate::defaults;

fn bundle() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("rootfs")).unwrap();
    t
}

fn base() -> Spec {
    let mut s = defaults::spec("rootfs");
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec!["/bin/sh".into()]));
    s.set_process(Some(p));
    s
}

fn err(spec: &Spec, dir: &Path) -> String {
    build(spec, dir).unwrap_err().to_string()
}

#[test]
fn default_spec_builds() {
    let b = bundle();
    let built = build(&base(), b.path()).unwrap();
    let p = &built.init.process;
    assert_eq!(p.args[0].to_str().unwrap(), "/bin/sh");
    assert!(p.no_new_privs);
    assert!(p.seccomp.is_some());
    assert_eq!(p.caps.unwrap().bounding.count_ones(), 14);
    assert_eq!(p.rlimits, vec![(libc::RLIMIT_NOFILE, 1024, 1024)]);
    let r = built.init.rootfs.as_ref().unwrap();
    assert!(r.setup_dev && !r.bind_devices);
    assert_eq!(r.mounts.len(), 7);
    assert_eq!(r.masked.len(), 11);
    assert_eq!(r.propagation, libc::MS_SLAVE);
    assert!(!built.init.new_userns);
    assert_eq!(
        built.ns.clone_flags & libc::CLONE_NEWPID,
        libc::CLONE_NEWPID
    );
}

#[test]
fn parse_errors_name_the_field() {
    let json = r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]}}"#;
    let e = parse(json.as_bytes()).unwrap_err().to_string();
    assert!(
        e.contains("linux.namespaces[1].type") && e.contains("bogus"),
        "{e}"
    );
    let e = parse(r#"{"ociVersion": 1}"#.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ociVersion"), "{e}");
    let e = parse("{".as_bytes()).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
    let e = load(Path::new("/nonexistent-bundle"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent-bundle/config.json"), "{e}");
}

#[test]
fn refusals() {
    let b = bundle();
    let dir = b.path();

    let mut s = base();
    s.root_mut().as_mut().unwrap().set_path("missing".into());
    assert!(err(&s, dir).contains("root.path"));

    let mut s = base();
    s.set_hostname(Some("h".into()));
    let mut l = s.linux().clone().unwrap();
    l.set_namespaces(Some(
        l.namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Uts)
            .collect(),
    ));
    s.set_linux(Some(l));
    assert!(err(&s, dir).contains("hostname: needs a UTS namespace"));

    let mut s = base();
    let mut l = s.linux().clone().unwrap();
    l.set_sysctl(Some([("kernel.panic".to_string(), "1".to_string())].into()));
    s.set_linux(Some(l.clone()));
    assert!(err(&s, dir).contains("linux.sysctl.kernel.panic"));
    l.set_sysctl(Some(
        [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
    ));
    s.set_linux(Some(l.clone()));
    let built = build(&s, dir).unwrap();
    assert_eq!(
        built.init.sysctls[0].0,
        Path::new("/proc/sys/net/ipv4/ip_forward")
    );
    l.set_sysctl(Some([("net/../../x".to_string(), "1".to_string())].into()));
    s.set_linux(Some(l));
    assert!(err(&s, dir).contains("not a sysctl name"));

    let mut s = base();
    let mut m = s.mounts().clone().unwrap();
    m[0].set_destination("proc".into());
    s.set_mounts(Some(m));
    assert!(err(&s, dir).contains("mounts[0].destination"));

    let mut s = base();
    let mut m = s.mounts().clone().unwrap();
    m[1].set_options(Some(vec!["idmap".into()]));
    s.set_mounts(Some(m));
    assert!(err(&s, dir).contains("mounts[1].options"));

    let mut s = base();
    let mut m = s.mounts().clone().unwrap();
    m[2].set_typ(Some("bind".into()));
    m[2].set_source(Some("/nonexistent".into()));
    s.set_mounts(Some(m));
    assert!(err(&s, dir).contains("mounts[2].source"));

    let mut s = base();
    s.set_version("0.9".into());
    assert!(err(&s, dir).contains("ociVersion"));

    let mut s = base();
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec![]));
    s.set_process(Some(p));
    assert!(err(&s, dir).contains("process.args"));

    let mut s = base();
    let mut p = s.process().clone().unwrap();
    p.set_selinux_label(Some("system_u:system_r:container_t:s0".into()));
    s.set_process(Some(p));
    assert!(err(&s, dir).contains("process.selinuxLabel"));

    let mut s = base();
    let mut p = s.process().clone().unwrap();
    p.set_oom_score_adj(Some(5000));
    s.set_process(Some(p));
    assert!(err(&s, dir).contains("process.oomScoreAdj"));

    let mut s = base();
    let mut l = s.linux().clone().unwrap();
    l.set_rootfs_propagation(Some("sideways".into()));
    s.set_linux(Some(l));
    assert!(err(&s, dir).contains("linux.rootfsPropagation"));

    let mut s = base();
    let mut h = oci_spec::runtime::Hooks::default();
    h.set_prestart(Some(vec![oci_spec::runtime::Hook::default()]));
    s.set_hooks(Some(h));
    assert!(err(&s, dir).contains("hooks"));
}
