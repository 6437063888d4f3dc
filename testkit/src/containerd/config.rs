//! The private containerd's `config.toml` (config version 2, what containerd 1.6 and 1.7 read).
//!
//! Every path containerd would otherwise take from the system (`/var/lib/containerd`,
//! `/run/containerd`, `/opt/containerd`, `/etc/cni/net.d`, `/etc/containerd/certs.d`) is moved into
//! the harness's temp dir. What stays outside is hard-coded in containerd 1.6 and cleaned by the
//! teardown: shim sockets in `/run/containerd/s/` and runc state in `/run/containerd/runc/<ns>/`
//! (the harness namespace carries its marker, so that directory is its own).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// A CRI runtime handler (`plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>`).
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The handler name a RuntimeClass (or `RunPodSandbox.runtime_handler`) selects.
    pub handler: String,
    /// The shim's runtime type, e.g. `io.containerd.moat.v2` (binary `containerd-shim-moat-v2`).
    pub runtime_type: String,
    /// The handler's `options` table, passed to the shim (e.g. `ConfigPath`).
    pub options: Table,
    /// Pod annotations the handler passes through to the runtime (`pod_annotations`).
    pub pod_annotations: Vec<String>,
}

impl Runtime {
    /// A moat handler: `runtime_type = "io.containerd.moat.v2"`, `options.ConfigPath = config`.
    pub fn moat(handler: &str, config: &Path) -> Self {
        let mut options = Table::new();
        options.insert(
            "ConfigPath".into(),
            Value::String(config.to_string_lossy().into_owned()),
        );
        Self {
            handler: handler.to_string(),
            runtime_type: "io.containerd.moat.v2".into(),
            options,
            pod_annotations: vec!["moat.dev/*".into()],
        }
    }
}

/// How pods get a network through the CRI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cni {
    /// No CNI network: only host-network pods (`NamespaceOption.network = NODE`) can start; the
    /// CRI reports `NetworkReady=false`, which a test client that runs host-network pods ignores.
    #[default]
    HostNetworkOnly,
    /// A point-to-point veth per pod from Debian's `containernetworking-plugins` (`ptp` +
    /// `host-local` IPAM, no masquerade, no iptables), addresses from `subnet` (e.g.
    /// `10.88.7.0/24`; pick one per concurrent harness).
    Ptp {
        /// The IPv4 subnet pods get addresses from.
        subnet: String,
    },
}

/// Settings of containerd's CRI plugin (for tests that drive pods through the CRI API).
#[derive(Clone, Debug)]
pub struct Cri {
    /// The pod sandbox image; it must be imported (see `Containerd::import_test_images`).
    pub sandbox_image: String,
    /// The handler used when a pod names none.
    pub default_runtime: String,
    /// Extra runtime handlers (runc is always registered as `runc`).
    pub runtimes: Vec<Runtime>,
    /// Pod networking.
    pub cni: Cni,
}

impl Default for Cri {
    fn default() -> Self {
        Self {
            sandbox_image: moat_artifacts::image::PAUSE_REF.into(),
            default_runtime: "runc".into(),
            runtimes: Vec::new(),
            cni: Cni::default(),
        }
    }
}

/// Where the Debian package puts CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The harness's directory layout.
pub struct Paths {
    /// `--root`.
    pub root: PathBuf,
    /// `--state`.
    pub state: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// Everything else lives below this.
    pub dir: PathBuf,
}

fn table(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Table {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn s(p: impl AsRef<Path>) -> Value {
    Value::String(p.as_ref().to_string_lossy().into_owned())
}

fn runtime_table(rt: &Runtime) -> Table {
    let mut t = table([("runtime_type", Value::String(rt.runtime_type.clone()))]);
    if !rt.pod_annotations.is_empty() {
        t.insert(
            "pod_annotations".into(),
            Value::Array(
                rt.pod_annotations
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            ),
        );
    }
    if !rt.options.is_empty() {
        t.insert("options".into(), Value::Table(rt.options.clone()));
    }
    t
}

fn cri_table(cri: &Cri, paths: &Paths) -> Table {
    let mut runtimes = Table::new();
    // runc keeps its state under the harness dir instead of /run/containerd/runc/k8s.io.
    let runc = Runtime {
        handler: "runc".into(),
        runtime_type: "io.containerd.runc.v2".into(),
        options: table([("Root", s(paths.dir.join("runc")))]),
        pod_annotations: Vec::new(),
    };
    for rt in std::iter::once(&runc).chain(&cri.runtimes) {
        runtimes.insert(rt.handler.clone(), Value::Table(runtime_table(rt)));
    }
    table([
        ("sandbox_image", Value::String(cri.sandbox_image.clone())),
        // Hosts without AppArmor (this one) have nothing to apply; hosts with it would need
        // containerd's profile loaded. Tests compare runtimes, not AppArmor: keep it off.
        ("disable_apparmor", Value::Boolean(true)),
        // The bounding set here lacks CAP_SYS_RESOURCE, so containerd cannot lower a container's
        // oom_score_adj below its own (kubelet asks -998 for sandboxes): clamp instead of failing.
        ("restrict_oom_score_adj", Value::Boolean(true)),
        // Pinned network namespaces under --state, not /var/run/netns, so teardown finds them.
        ("netns_mounts_under_state_dir", Value::Boolean(true)),
        // The streaming server (exec/attach URLs) on an ephemeral loopback port: no clashes
        // between harnesses, nothing reachable from outside.
        ("stream_server_address", Value::String("127.0.0.1".into())),
        ("stream_server_port", Value::String("0".into())),
        ("enable_selinux", Value::Boolean(false)),
        (
            "containerd",
            Value::Table(table([
                ("snapshotter", Value::String("overlayfs".into())),
                (
                    "default_runtime_name",
                    Value::String(cri.default_runtime.clone()),
                ),
                ("runtimes", Value::Table(runtimes)),
            ])),
        ),
        (
            "cni",
            Value::Table(table([
                ("bin_dir", s(CNI_BIN_DIR)),
                ("conf_dir", s(paths.dir.join("cni/net.d"))),
                ("max_conf_num", Value::Integer(1)),
            ])),
        ),
        (
            "registry",
            Value::Table(table([("config_path", s(paths.dir.join("certs.d")))])),
        ),
    ])
}

/// The CNI network list for [`Cni::Ptp`], or `None` for host-network only.
pub fn cni_conflist(cni: &Cni, paths: &Paths, name: &str) -> Option<String> {
    let Cni::Ptp { subnet } = cni else {
        return None;
    };
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [{
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": subnet,
                "dataDir": paths.dir.join("cni/ipam").to_string_lossy(),
            },
        }],
    });
    Some(conf.to_string())
}

/// Renders the whole config. `extra` is merged on top, table by table (a test's own tweaks).
pub fn render(
    paths: &Paths,
    cri: Option<&Cri>,
    log_level: &str,
    extra: &Table,
) -> Result<String, toml::ser::Error> {
    render_on(Table::new(), paths, cri, log_level, extra)
}

/// Like [`render`], but over `base` (an existing config file's tables): the harness's settings
/// are merged over it table by table, then `extra`.
pub fn render_on(
    mut base: Table,
    paths: &Paths,
    cri: Option<&Cri>,
    log_level: &str,
    extra: &Table,
) -> Result<String, toml::ser::Error> {
    let mut plugins = table([(
        "io.containerd.internal.v1.opt",
        Value::Table(table([("path", s(paths.dir.join("opt")))])),
    )]);
    let mut top = table([
        ("version", Value::Integer(2)),
        ("root", s(&paths.root)),
        ("state", s(&paths.state)),
        ("oom_score", Value::Integer(0)),
        ("grpc", Value::Table(table([("address", s(&paths.socket))]))),
        (
            "debug",
            Value::Table(table([("level", Value::String(log_level.into()))])),
        ),
    ]);
    match cri {
        Some(cri) => {
            plugins.insert(
                "io.containerd.grpc.v1.cri".into(),
                Value::Table(cri_table(cri, paths)),
            );
        }
        None => {
            // Without the CRI plugin containerd starts faster and needs no CNI or sandbox image.
            top.insert(
                "disabled_plugins".into(),
                Value::Array(vec![Value::String("io.containerd.grpc.v1.cri".into())]),
            );
        }
    }
    top.insert("plugins".into(), Value::Table(plugins));
    merge(&mut base, &top);
    merge(&mut base, extra);
    toml::to_string(&base)
}

/// Merges `extra` into `base`: tables recursively, anything else replaced.
fn merge(base: &mut Table, extra: &Table) {
    for (k, v) in extra {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(e)) => merge(b, e),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            root: "/t/root".into(),
            state: "/t/state".into(),
            socket: "/t/c.sock".into(),
            dir: "/t".into(),
        }
    }

    #[test]
    fn without_cri_the_plugin_is_disabled_and_paths_are_private() {
        let text = render(&paths(), None, "info", &Table::new()).unwrap();
        let v: Table = toml::from_str(&text).unwrap();
        assert_eq!(
            v["disabled_plugins"][0].as_str(),
            Some("io.containerd.grpc.v1.cri")
        );
        assert_eq!(v["grpc"]["address"].as_str(), Some("/t/c.sock"));
        assert_eq!(
            v["plugins"]["io.containerd.internal.v1.opt"]["path"].as_str(),
            Some("/t/opt")
        );
    }

    #[test]
    fn cri_registers_handlers_with_config_path() {
        let cri = Cri {
            runtimes: vec![Runtime::moat("moat-ns", Path::new("/etc/moat/ns.toml"))],
            ..Cri::default()
        };
        let mut extra = Table::new();
        extra.insert("oom_score".into(), Value::Integer(-1));
        let text = render(&paths(), Some(&cri), "debug", &extra).unwrap();
        let v: Table = toml::from_str(&text).unwrap();
        let c = &v["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            c["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.6")
        );
        let rt = &c["containerd"]["runtimes"]["moat-ns"];
        assert_eq!(rt["runtime_type"].as_str(), Some("io.containerd.moat.v2"));
        assert_eq!(
            rt["options"]["ConfigPath"].as_str(),
            Some("/etc/moat/ns.toml")
        );
        assert_eq!(
            c["containerd"]["runtimes"]["runc"]["options"]["Root"].as_str(),
            Some("/t/runc")
        );
        assert_eq!(v["oom_score"].as_integer(), Some(-1));
        assert!(v.get("disabled_plugins").is_none());
    }

    #[test]
    fn a_base_config_keeps_its_tables_under_the_private_paths() {
        let base: Table = toml::from_str(
            "version = 2\nroot = \"/var/lib/containerd\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.moat-ns]\n\
             runtime_type = \"io.containerd.moat.v2\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.moat-ns.options]\n\
             ConfigPath = \"/p/etc/moat/ns.toml\"\n\
             [plugins.\"io.containerd.gc.v1.scheduler\"]\npause_threshold = 0.02\n",
        )
        .unwrap();
        let text = render_on(base, &paths(), Some(&Cri::default()), "info", &Table::new()).unwrap();
        let v: Table = toml::from_str(&text).unwrap();
        assert_eq!(
            v["root"].as_str(),
            Some("/t/root"),
            "the harness's root wins"
        );
        let rts = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            rts["moat-ns"]["options"]["ConfigPath"].as_str(),
            Some("/p/etc/moat/ns.toml")
        );
        assert_eq!(rts["runc"]["options"]["Root"].as_str(), Some("/t/runc"));
        assert_eq!(
            v["plugins"]["io.containerd.gc.v1.scheduler"]["pause_threshold"].as_float(),
            Some(0.02)
        );
    }

    #[test]
    fn ptp_conflist_keeps_ipam_state_private() {
        let cni = Cni::Ptp {
            subnet: "10.88.7.0/24".into(),
        };
        let text = cni_conflist(&cni, &paths(), "moat").unwrap();
        assert!(text.contains(r#""dataDir":"/t/cni/ipam""#), "{text}");
        assert!(cni_conflist(&Cni::HostNetworkOnly, &paths(), "moat").is_none());
    }
}
