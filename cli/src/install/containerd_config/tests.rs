//! Merging into Debian's shipped config, containerd 1.6's `config default` output and a version 3
//! config; what is kept, what is refused, and that the drop-in files under `runtimeclass/`
//! hold exactly the entries install merges.

use std::path::Path;

use super::*;

/// Debian 12's `/etc/containerd/config.toml`, as the containerd package ships it.
const DEBIAN: &str = include_str!("../testdata/debian-12-containerd-config.toml");
/// `containerd config default` of containerd 1.6.20.
const DEFAULT_16: &str = include_str!("../testdata/containerd-1.6.20-config-default.toml");
/// A containerd 2.x config (version 3), abridged from its `config default`, single quotes and all.
const V3: &str = "\
version = 3
root = '/var/lib/containerd'
state = '/run/containerd'

[grpc]
  address = '/run/containerd/containerd.sock'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        # runc stays the default
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
          sandboxer = 'podsandbox'

          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            SystemdCgroup = false
";

fn p() -> &'static Path {
    Path::new("/etc/containerd/config.toml")
}

fn entries(prefix: &str) -> Vec<Entry> {
    ["ns", "vm", "trace"]
        .iter()
        .map(|b| Entry {
            handler: format!("moat-{b}"),
            comment: format!("moat-{b}: test"),
            runtime_path: format!("{prefix}/usr/local/bin/containerd-shim-moat-v2").into(),
            config_path: format!("{prefix}/etc/moat/{b}.toml").into(),
        })
        .collect()
}

/// The runtimes table of a config, as containerd would read it.
fn runtimes(text: &str, v: Version) -> toml::Table {
    let mut t: toml::Table = toml::from_str(text).unwrap();
    for k in v.runtimes_path() {
        t = t.remove(k).unwrap().as_table().unwrap().clone();
    }
    t
}

/// Every line of `old` appears in `new`, in order: the merge only inserted.
fn only_inserted(old: &str, new: &str) {
    let mut new_lines = new.lines();
    for line in old.lines() {
        assert!(
            new_lines.any(|l| l == line),
            "line {line:?} of the original is missing or moved:\n{new}"
        );
    }
}

fn check_entries(text: &str, v: Version, prefix: &str) {
    let rt = runtimes(text, v);
    for b in ["ns", "vm", "trace"] {
        let e = &rt[&format!("moat-{b}")];
        assert_eq!(e["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        assert_eq!(
            e["runtime_path"].as_str(),
            Some(format!("{prefix}/usr/local/bin/containerd-shim-moat-v2").as_str())
        );
        assert_eq!(e["pod_annotations"][0].as_str(), Some(POD_ANNOTATIONS));
        assert_eq!(
            e["options"]["ConfigPath"].as_str(),
            Some(format!("{prefix}/etc/moat/{b}.toml").as_str())
        );
    }
}

#[test]
fn debian_config_gains_the_entries_and_loses_nothing() {
    let m = merge(Some(DEBIAN), p(), Version::V3, &entries("")).unwrap();
    assert_eq!(m.version, Version::V2, "the file's version wins");
    assert_eq!(m.added, ["moat-ns", "moat-vm", "moat-trace"]);
    assert!(m.updated.is_empty() && m.warnings.is_empty(), "{m:?}");
    only_inserted(DEBIAN, &m.text);
    check_entries(&m.text, Version::V2, "");
    let before: toml::Table = toml::from_str(DEBIAN).unwrap();
    let after: toml::Table = toml::from_str(&m.text).unwrap();
    let cri = |t: &toml::Table| t["plugins"]["io.containerd.grpc.v1.cri"]["cni"].clone();
    assert_eq!(cri(&before), cri(&after));
    assert_eq!(
        before["plugins"]["io.containerd.internal.v1.opt"],
        after["plugins"]["io.containerd.internal.v1.opt"]
    );
    // The new tables follow the file's two-space indentation and carry their comment.
    assert!(
        m.text.contains(
            "\n        # moat-ns: test\n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.moat-ns]\n          runtime_type = \"io.containerd.moat.v2\"\n"
        ),
        "{}",
        m.text
    );
}

#[test]
fn containerd_default_config_keeps_runc_and_every_other_table() {
    let m = merge(Some(DEFAULT_16), p(), Version::V2, &entries("/p")).unwrap();
    only_inserted(DEFAULT_16, &m.text);
    check_entries(&m.text, Version::V2, "/p");
    let rt = runtimes(&m.text, Version::V2);
    assert_eq!(
        rt["runc"]["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
    let before: toml::Table = toml::from_str(DEFAULT_16).unwrap();
    let mut after: toml::Table = toml::from_str(&m.text).unwrap();
    let rts = after
        .get_mut("plugins")
        .and_then(|v| v.get_mut("io.containerd.grpc.v1.cri"))
        .and_then(|v| v.get_mut("containerd"))
        .and_then(|v| v.get_mut("runtimes"))
        .and_then(toml::Value::as_table_mut)
        .unwrap();
    for h in ["moat-ns", "moat-vm", "moat-trace"] {
        rts.remove(h);
    }
    assert_eq!(before, after, "only the moat runtimes were added");
}

#[test]
fn merging_twice_is_merging_once_and_strip_undoes_it() {
    for (name, text) in [("debian", DEBIAN), ("default", DEFAULT_16), ("v3", V3)] {
        let once = merge(Some(text), p(), Version::V2, &entries("")).unwrap();
        let twice = merge(Some(&once.text), p(), Version::V2, &entries("")).unwrap();
        assert_eq!(once.text, twice.text, "{name}");
        assert!(
            twice.added.is_empty() && twice.updated.is_empty(),
            "{name}: {twice:?}"
        );
        let (stripped, removed) =
            strip(&once.text, p(), &["moat-ns", "moat-vm", "moat-trace"]).unwrap();
        assert_eq!(removed.len(), 3, "{name}");
        let a: toml::Table = toml::from_str(&stripped).unwrap();
        let b: toml::Table = toml::from_str(text).unwrap();
        assert_eq!(a, b, "{name}: strip leaves what was there");
        only_inserted(&stripped, text);
        let (same, none) = strip(text, p(), &["moat-ns"]).unwrap();
        assert_eq!((same.as_str(), none.len()), (text, 0), "{name}");
    }
}

#[test]
fn version_3_configs_get_the_cri_runtime_plugin_table() {
    let m = merge(Some(V3), p(), Version::V2, &entries("")).unwrap();
    assert_eq!(m.version, Version::V3);
    only_inserted(V3, &m.text);
    check_entries(&m.text, Version::V3, "");
    assert!(
        m.text
            .contains("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.moat-trace]"),
        "the file's own key quoting is kept:\n{}",
        m.text
    );
    assert!(m.text.contains("# runc stays the default"), "{}", m.text);
    let t: toml::Table = toml::from_str(&m.text).unwrap();
    assert!(
        t["plugins"].get("io.containerd.grpc.v1.cri").is_none(),
        "nothing under the 1.x plugin name"
    );
}

#[test]
fn an_existing_entry_keeps_the_admins_keys_and_gets_moats() {
    let text = "version = 2\n\
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.moat-ns]\n\
        runtime_type = \"io.containerd.moat.v2\" # moat's\n\
        privileged_without_host_devices = true\n\
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.moat-ns.options]\n\
        ConfigPath = \"/old/ns.toml\"\n";
    let m = merge(Some(text), p(), Version::V2, &entries("")[..1]).unwrap();
    assert_eq!(
        (m.added.len(), m.updated.as_slice()),
        (0, &["moat-ns".to_string()][..])
    );
    let rt = runtimes(&m.text, Version::V2);
    assert_eq!(
        rt["moat-ns"]["privileged_without_host_devices"].as_bool(),
        Some(true)
    );
    assert_eq!(
        rt["moat-ns"]["options"]["ConfigPath"].as_str(),
        Some("/etc/moat/ns.toml")
    );
    assert!(
        m.text.contains("\"io.containerd.moat.v2\" # moat's"),
        "{}",
        m.text
    );
}

#[test]
fn a_new_file_is_written_in_the_version_asked() {
    for v in [Version::V2, Version::V3] {
        let m = merge(None, p(), v, &entries("")).unwrap();
        assert_eq!(m.version, v);
        assert!(
            m.text
                .starts_with("# containerd config written by `moat install`"),
            "{}",
            m.text
        );
        assert!(m.text.ends_with('\n'));
        check_entries(&m.text, v, "");
        assert_eq!(detect_version(&m.text, p()).unwrap(), v);
    }
    assert_eq!(Version::for_release("1.6.20~ds1"), Version::V2);
    assert_eq!(Version::for_release("1.7.22"), Version::V2);
    assert_eq!(Version::for_release("v2.0.4"), Version::V3);
    assert_eq!(Version::for_release("garbage"), Version::V2);
}

#[test]
fn which_containerds_ignore_runtime_path() {
    for (release, ignores) in [
        ("1.5.9", true),
        ("1.6.20~ds1", true),
        ("1.6.21", false),
        ("1.7.0", true),
        ("1.7.1", false),
        ("v2.0.4", false),
    ] {
        assert_eq!(ignores_runtime_path(release), ignores, "{release}");
    }
}

#[test]
fn bad_configs_are_refused_with_the_file_and_what_to_do() {
    for (text, needle) in [
        ("version = 2\n[plugins\n", "is not valid TOML"),
        (
            "root = \"/var/lib/containerd\"\n",
            "version 1 (it has no `version` key)",
        ),
        ("version = 1\n", "version 1"),
        ("version = \"2\"\n", "`version = \"2\"`"),
        ("version = 2\nplugins = \"x\"\n", "`plugins` is a string"),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = { runc = {} }\n",
            "is an inline table",
        ),
    ] {
        let e = merge(Some(text), p(), Version::V2, &entries(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(e.contains("/etc/containerd/config.toml"), "{e}");
    }
}

#[test]
fn a_disabled_cri_plugin_is_warned_about() {
    // What Docker's containerd.io package ships.
    let text = "version = 2\ndisabled_plugins = [\"cri\"]\n";
    let m = merge(Some(text), p(), Version::V2, &entries("")).unwrap();
    assert_eq!(m.warnings.len(), 1, "{m:?}");
    assert!(m.warnings[0].contains("CRI plugin is off"), "{m:?}");
}

#[test]
fn the_drop_in_files_hold_what_install_merges() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass/containerd");
    for (file, v) in [
        ("moat-runtimes.containerd-1.x.toml", Version::V2),
        ("moat-runtimes.containerd-2.x.toml", Version::V3),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert_eq!(detect_version(&text, p()).unwrap(), v, "{file}");
        let empty = format!("version = {}\n", v.number());
        let merged = merge(Some(&empty), p(), v, &entries("")).unwrap();
        assert_eq!(runtimes(&text, v), runtimes(&merged.text, v), "{file}");
        let again = merge(Some(&text), p(), v, &entries("")).unwrap();
        assert_eq!(
            again.text, text,
            "{file}: install adds nothing to the drop-in's entries"
        );
    }
}
