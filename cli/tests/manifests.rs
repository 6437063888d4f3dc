//! The manifests in `runtimeclass/`, checked offline as a cluster would take them:
//! `kubernetes-validate --strict` against four Kubernetes minor versions, `yamllint --strict`,
//! the kustomizations listing every manifest, and the RuntimeClasses, example pods, installer
//! DaemonSet and its script agreeing with each other and with what `moat install` writes.
//! The Python tools come from `scripts/deps.sh` (a venv found by `moat_testkit::python_tool`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod install_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use install_common::{pod_fixed_memory_mib, runtimeclass_dir};
use moat::install::layout::Layout;
use moat_backend::BackendKind;
use moat_testkit::{python_tool, skip};
use serde_json::Value;

/// Kubernetes versions the manifests must validate against (kubernetes-validate 1.37.0 bundles
/// schemas for 1.25 to 1.37).
const VERSIONS: [&str; 4] = ["1.29.0", "1.32.0", "1.35.0", "1.37.0"];
/// The node label the installer sets and the RuntimeClasses select on.
const LABEL: &str = "moat.dev/runtime";

/// Every manifest: the `.yaml` files below `runtimeclass/` except the kustomizations.
fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&runtimeclass_dir(), &mut out);
    out.sort();
    assert!(out.len() >= 9, "{out:?}");
    out
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every YAML document of `files`, as JSON, by file (parsed by the venv's PyYAML).
fn documents(files: &[PathBuf]) -> Option<BTreeMap<PathBuf, Vec<Value>>> {
    let python = python_tool("python3")?;
    let script = "import json, sys, yaml\n\
                  print(json.dumps({f: [d for d in yaml.safe_load_all(open(f)) if d is not None] \
                  for f in sys.argv[1:]}))";
    let (ok, text) = run(Command::new(python).arg("-c").arg(script).args(files));
    if !ok {
        eprintln!("SKIPPED: the structure checks: PyYAML is not there: {text}");
        return None;
    }
    let map: BTreeMap<String, Vec<Value>> = serde_json::from_str(&text).unwrap();
    Some(
        map.into_iter()
            .map(|(k, v)| (PathBuf::from(k), v))
            .collect(),
    )
}

#[test]
fn every_manifest_validates_for_four_kubernetes_versions() {
    let Some(tool) = python_tool("kubernetes-validate") else {
        skip!("kubernetes-validate is not installed (scripts/deps.sh installs it)");
    };
    let files = manifests();
    let docs: usize = documents(&files)
        .map(|d| d.values().map(Vec::len).sum())
        .unwrap_or(0);
    for v in VERSIONS {
        let (ok, text) = run(Command::new(&tool)
            .args(["--strict", "--kubernetes-version", v])
            .args(&files));
        assert!(ok, "Kubernetes {v}:\n{text}");
        let minor = v.trim_end_matches(".0");
        let passed = text
            .lines()
            .filter(|l| {
                l.contains(" passed for resource ")
                    && l.ends_with(&format!("against version {minor}"))
            })
            .count();
        assert!(
            passed >= files.len(),
            "Kubernetes {v}: {passed} passed:\n{text}"
        );
        if docs > 0 {
            assert_eq!(
                passed, docs,
                "Kubernetes {v}: every document checked:\n{text}"
            );
        }
    }
    // The validator is strict: a misspelt field fails, so the passes above mean something.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: x\nhandler: x\n\
         overhead:\n  podfixed:\n    memory: 1Mi\n",
    )
    .unwrap();
    let (ok, text) = run(Command::new(&tool)
        .args(["--strict", "--kubernetes-version", VERSIONS[0]])
        .arg(&bad));
    assert!(!ok && text.contains("podfixed"), "{text}");
}

#[test]
fn manifests_pass_yamllint_strict() {
    let Some(tool) = python_tool("yamllint") else {
        skip!("yamllint is not installed (scripts/deps.sh installs it)");
    };
    let dir = runtimeclass_dir();
    let config = dir.join(".yamllint");
    let (ok, text) = run(Command::new(&tool)
        .arg("--strict")
        .arg("-c")
        .arg(&config)
        .arg(&dir));
    assert!(ok, "{text}");
    // And it does complain: a line too long and a missing document start.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, format!("key: {}\n", "x".repeat(120))).unwrap();
    let (ok, text) = run(Command::new(&tool)
        .arg("--strict")
        .arg("-c")
        .arg(&config)
        .arg(&bad));
    assert!(
        !ok && text.contains("line too long") && text.contains("document-start"),
        "{text}"
    );
}

fn kind<'a>(docs: &'a BTreeMap<PathBuf, Vec<Value>>, k: &str) -> Vec<&'a Value> {
    docs.values().flatten().filter(|d| d["kind"] == k).collect()
}

#[test]
fn runtimeclasses_and_example_pods_match_moats_handlers() {
    let Some(docs) = documents(&manifests()) else {
        skip!("no python3 with PyYAML (scripts/deps.sh's venv has one)");
    };
    let classes = kind(&docs, "RuntimeClass");
    let mut names: Vec<&str> = classes
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut handlers: Vec<&str> = BackendKind::ALL.iter().map(|k| k.handler()).collect();
    handlers.sort();
    assert_eq!(names, handlers);
    for c in &classes {
        let name = c["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            c["handler"], name,
            "{name}: the handler containerd knows it by"
        );
        assert_eq!(c["scheduling"]["nodeSelector"][LABEL], "true", "{name}");
        let fixed = &c["overhead"]["podFixed"];
        assert!(fixed["cpu"].is_string(), "{name}: {fixed}");
        let mem = fixed["memory"].as_str().unwrap();
        assert_eq!(mem, format!("{}Mi", pod_fixed_memory_mib(name)), "{name}");
    }
    let pods = kind(&docs, "Pod");
    let mut pod_classes: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["runtimeClassName"].as_str().unwrap())
        .collect();
    pod_classes.sort();
    assert_eq!(pod_classes, handlers, "one example pod per handler");
}

#[test]
fn the_installer_daemonset_writes_where_moat_install_does() {
    let Some(docs) = documents(&manifests()) else {
        skip!("no python3 with PyYAML (scripts/deps.sh's venv has one)");
    };
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds.len(), 1);
    let spec = &ds[0]["spec"]["template"]["spec"];
    assert_eq!(
        spec["hostPID"], true,
        "--restart-containerd reaches the node's systemd"
    );
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command, ["/bin/sh", "/opt/moat/installer.sh"]);
    let env = c["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName")
    );

    // Every directory moat install writes is the node's own, mounted at the same path.
    let volumes: BTreeMap<&str, &str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["hostPath"]["path"].as_str().unwrap(),
            )
        })
        .collect();
    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    for (name, path) in &mounts {
        assert_eq!(
            volumes[name], *path,
            "{name} is mounted where it is on the node"
        );
    }
    let layout = Layout::new(None).unwrap();
    let config = layout.default_containerd_config();
    for dir in [
        layout.bin_dir(),
        layout.etc_dir(),
        layout.share_dir(),
        config.parent().unwrap().to_path_buf(),
    ] {
        assert!(
            mounts.iter().any(|(_, m)| dir.starts_with(m)),
            "{} is not on a host mount: {mounts:?}",
            dir.display()
        );
    }

    // Its service account may label nodes, and nothing else.
    let sa = spec["serviceAccountName"].as_str().unwrap();
    let ns = ds[0]["metadata"]["namespace"].as_str().unwrap();
    let accounts = kind(&docs, "ServiceAccount");
    assert!(
        accounts
            .iter()
            .any(|a| a["metadata"]["name"] == sa && a["metadata"]["namespace"] == ns)
    );
    let binding = kind(&docs, "ClusterRoleBinding")[0];
    assert_eq!(binding["subjects"][0]["name"], sa);
    assert_eq!(binding["subjects"][0]["namespace"], ns);
    let role = kind(&docs, "ClusterRole")[0];
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(role["rules"].as_array().unwrap().len(), 1);
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["nodes"]));
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "patch"])
    );
    let namespaces = kind(&docs, "Namespace");
    assert!(namespaces.iter().any(|n| n["metadata"]["name"] == ns));

    // The script installs, labels with the RuntimeClasses' label, and undoes both on SIGTERM.
    let script_path = runtimeclass_dir().join("installer/installer.sh");
    let script = std::fs::read_to_string(&script_path).unwrap();
    for needle in [
        "moat install --restart-containerd",
        "moat uninstall --restart-containerd",
        "label=moat.dev/runtime\n",
        "\"$label=true\"",
        "\"$label-\"",
        "trap uninstall TERM",
    ] {
        assert!(script.contains(needle), "installer.sh lacks {needle:?}");
    }
    let (ok, text) = run(Command::new("sh").arg("-n").arg(&script_path));
    assert!(ok, "installer.sh: {text}");
}

/// The `resources` of a kustomization file.
fn kustomization_resources(path: &Path) -> Vec<PathBuf> {
    let docs = documents(&[path.to_path_buf()]).unwrap();
    let k = &docs.values().next().unwrap()[0];
    assert_eq!(k["kind"], "Kustomization", "{}", path.display());
    let dir = path.parent().unwrap();
    k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dir.join(r.as_str().unwrap()))
        .collect()
}

#[test]
fn the_kustomizations_list_every_manifest() {
    if documents(&[]).is_none() {
        skip!("no python3 with PyYAML (scripts/deps.sh's venv has one)");
    }
    let dir = runtimeclass_dir();
    let mut listed = kustomization_resources(&dir.join("kustomization.yaml"));
    listed.extend(kustomization_resources(
        &dir.join("examples/kustomization.yaml"),
    ));
    for p in &listed {
        assert!(p.is_file(), "{} is listed but missing", p.display());
    }
    for m in manifests() {
        assert!(
            listed.contains(&m),
            "{} is in no kustomization",
            m.display()
        );
    }

    // Rendered by kustomize (where kubectl is there to run it), the result still validates.
    if !moat_testkit::have_cmd("kubectl") {
        eprintln!("SKIPPED: rendering the kustomizations: no kubectl on PATH");
        return;
    }
    let Some(validate) = python_tool("kubernetes-validate") else {
        skip!("kubernetes-validate is not installed (scripts/deps.sh installs it)");
    };
    let tmp = tempfile::tempdir().unwrap();
    for (k, expect) in [(dir.clone(), 8), (dir.join("examples"), 3)] {
        let (ok, text) = run(Command::new("kubectl").arg("kustomize").arg(&k));
        assert!(ok, "kubectl kustomize {}: {text}", k.display());
        let out = tmp.path().join("rendered.yaml");
        std::fs::write(&out, &text).unwrap();
        assert_eq!(
            text.matches("\nkind: ").count() + usize::from(text.starts_with("kind: ")),
            expect,
            "{text}"
        );
        let (ok, report) = run(Command::new(&validate)
            .args([
                "--strict",
                "--kubernetes-version",
                VERSIONS[VERSIONS.len() - 1],
            ])
            .arg(&out));
        assert!(ok, "{report}");
    }
}
