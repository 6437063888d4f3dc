//! The three RuntimeClass handlers as `moat install` sets them up: which ones this build can
//! install, their `/etc/moat/<backend>.toml` configs (the commented files in `runtimeclass/moat/`,
//! relocated under `--prefix`), the trace policy, and their containerd entries.

use std::path::PathBuf;

use moat_backend::BackendKind;

use super::containerd_config::Entry;
use super::layout::Layout;
use super::sources::{self, Sources};

/// The handler configs, written for the standard paths.
const NS_CONFIG: &str = include_str!("../../../runtimeclass/moat/ns.toml");
const VM_CONFIG: &str = include_str!("../../../runtimeclass/moat/vm.toml");
const TRACE_CONFIG: &str = include_str!("../../../runtimeclass/moat/trace.toml");
/// moat's default trace policy, installed as the trace handler's policy.
const DEFAULT_POLICY: &str = include_str!("../../../trace/policies/default.toml");

/// The name of the trace handler's policy inside `/etc/moat`.
pub const TRACE_POLICY_NAME: &str = "trace-policy.toml";

/// Which handlers this build can install, and why the others cannot be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Handlers to install, in moat's order.
    pub included: Vec<BackendKind>,
    /// Handlers left out, with the reason.
    pub skipped: Vec<(BackendKind, String)>,
}

/// Picks the handlers whose files are all at hand: `ns` needs only the shim, `trace` also
/// `moat-trace`, `vm` also `moat-vmm` and the guest kernel and initramfs.
pub fn select(src: &Sources) -> Selection {
    let mut sel = Selection {
        included: Vec::new(),
        skipped: Vec::new(),
    };
    for kind in BackendKind::ALL {
        let need: Result<(), String> = match kind {
            BackendKind::Ns => Ok(()),
            BackendKind::Trace => src.binary(sources::TRACE).map(drop),
            BackendKind::Vm => src
                .binary(sources::VMM)
                .map(drop)
                .and_then(|()| src.guest.as_ref().map(drop).map_err(Clone::clone)),
        };
        match need {
            Ok(()) => sel.included.push(kind),
            Err(why) => sel.skipped.push((kind, why)),
        }
    }
    sel
}

/// The handler's config file: `/etc/moat/<backend>.toml`.
pub fn config_path(kind: BackendKind, layout: &Layout) -> PathBuf {
    layout.etc_dir().join(format!("{kind}.toml"))
}

/// The handler config's text, its paths under the layout's prefix.
pub fn config_text(kind: BackendKind, layout: &Layout) -> String {
    layout.relocate(match kind {
        BackendKind::Ns => NS_CONFIG,
        BackendKind::Vm => VM_CONFIG,
        BackendKind::Trace => TRACE_CONFIG,
    })
}

/// The trace handler's policy file: `/etc/moat/trace-policy.toml`.
pub fn trace_policy_path(layout: &Layout) -> PathBuf {
    layout.etc_dir().join(TRACE_POLICY_NAME)
}

/// The trace handler's policy: moat's default policy, with a header saying where it came from.
pub fn trace_policy_text(layout: &Layout) -> String {
    format!(
        "# The moat-trace handler's policy,\n# {}\n\
         # as `moat install` put it there: moat's default policy (trace/policies/default.toml).\n\
         # Edit it to police more; `moat install` keeps your edits, and `moat uninstall` leaves\n\
         # an edited file in place.\n#\n{DEFAULT_POLICY}",
        trace_policy_path(layout).display()
    )
}

/// The comment above the handler's containerd entry.
pub fn comment(kind: BackendKind) -> String {
    let what = match kind {
        BackendKind::Ns => {
            "Linux namespaces, cgroups, capabilities and seccomp; shares the host kernel"
        }
        BackendKind::Vm => "a KVM microVM per pod, with moat's own guest kernel",
        BackendKind::Trace => {
            "namespaces plus a ptrace supervisor that polices the system calls a policy names"
        }
    };
    format!(
        "{}: {what}.\nAdded by `moat install`; `moat uninstall` removes it.",
        kind.handler()
    )
}

/// The handler's containerd runtime entry, pointing at the installed shim and config.
pub fn entry(kind: BackendKind, layout: &Layout) -> Entry {
    Entry {
        handler: kind.handler().to_string(),
        comment: comment(kind),
        runtime_path: layout.bin_dir().join(sources::SHIM),
        config_path: config_path(kind, layout),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn configs_relocate_under_the_prefix() {
        let l = Layout::new(Some(Path::new("/p"))).unwrap();
        let vm = config_text(BackendKind::Vm, &l);
        assert!(
            vm.contains("kernel = \"/p/usr/local/share/moat/vmlinux\""),
            "{vm}"
        );
        assert!(vm.contains("vmm = \"/p/usr/local/bin/moat-vmm\""), "{vm}");
        let trace = config_text(BackendKind::Trace, &l);
        assert!(
            trace.contains("policy = \"/p/etc/moat/trace-policy.toml\""),
            "{trace}"
        );
        assert_eq!(
            config_path(BackendKind::Ns, &l),
            Path::new("/p/etc/moat/ns.toml")
        );
        let e = entry(BackendKind::Trace, &l);
        assert_eq!(
            e.runtime_path,
            Path::new("/p/usr/local/bin/containerd-shim-moat-v2")
        );
        assert_eq!(e.config_path, Path::new("/p/etc/moat/trace.toml"));
    }

    #[test]
    fn handler_configs_fit_the_shims_schema() {
        use moat_shim::config::HandlerConfig;
        for prefix in [None, Some(Path::new("/p"))] {
            let l = Layout::new(prefix).unwrap();
            for kind in BackendKind::ALL {
                let path = config_path(kind, &l);
                let c = HandlerConfig::parse(&config_text(kind, &l), &path).unwrap();
                assert_eq!(c.backend, kind, "{}", path.display());
                match kind {
                    BackendKind::Trace => {
                        let t = c.trace.unwrap();
                        assert_eq!(t.policy, trace_policy_path(&l));
                        assert_eq!(t.annotation_policy_dir, None, "stacking is off");
                    }
                    BackendKind::Vm => {
                        let vm = c.vm.unwrap();
                        assert_eq!(vm.kernel, l.share_dir().join(sources::KERNEL_NAME));
                        assert_eq!(vm.initramfs, l.share_dir().join(sources::INITRAMFS_NAME));
                        assert_eq!(vm.vmm, Some(l.bin_dir().join(sources::VMM)));
                    }
                    BackendKind::Ns => {}
                }
            }
        }
    }

    #[test]
    fn the_installed_policy_is_a_valid_policy() {
        let l = Layout::new(None).unwrap();
        let text = trace_policy_text(&l);
        assert!(
            text.starts_with("# The moat-trace handler's policy,\n# /etc/moat/trace-policy.toml\n"),
            "{text}"
        );
        let p = moat_backend::trace::Policy::parse(&text, "trace-policy.toml").unwrap();
        assert!(
            !p.syscalls.is_empty(),
            "the default policy polices system calls"
        );
    }

    #[test]
    fn a_missing_helper_leaves_its_handler_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(sources::SHIM), b"").unwrap();
        let src = Sources {
            bin_dir: dir.path().to_path_buf(),
            guest: Err("guest kernel: not built".into()),
        };
        let sel = select(&src);
        assert_eq!(sel.included, vec![BackendKind::Ns]);
        let why: Vec<String> = sel
            .skipped
            .iter()
            .map(|(k, w)| format!("{k}: {w}"))
            .collect();
        assert!(
            why[0].starts_with("vm: moat-vmm is not beside moat"),
            "{why:?}"
        );
        assert!(
            why[1].starts_with("trace: moat-trace is not beside moat"),
            "{why:?}"
        );
        std::fs::write(dir.path().join(sources::VMM), b"").unwrap();
        std::fs::write(dir.path().join(sources::TRACE), b"").unwrap();
        let sel = select(&src);
        assert_eq!(sel.included, vec![BackendKind::Ns, BackendKind::Trace]);
        assert_eq!(
            sel.skipped,
            vec![(BackendKind::Vm, "guest kernel: not built".to_string())]
        );
    }
}
