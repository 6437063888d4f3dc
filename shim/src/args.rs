//! The shim's command line, parsed the way Go's `flag` package (which containerd's shims use) does:
//! `-name value`, `-name=value`, `--name` and bool flags without a value; parsing stops at the first
//! argument that is not a flag, which is the action (`start`, `delete`, or none to serve).
//!
//! containerd 1.6 runs `containerd-shim-moat-v2 -namespace NS -address ADDR -publish-binary BIN
//! -id ID [-debug] start` with the bundle as working directory, and the same with `-bundle PATH
//! delete` to clean up after a dead shim; `start` runs the long-lived shim as `-namespace NS -id ID
//! -address ADDR [-debug]` with the listening socket as fd 3.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// What the invocation asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No action: be the long-lived shim, serving the Task API on the socket at fd 3.
    Serve,
    /// Start (or join) the pod's shim and print its address.
    Start,
    /// Clean up after a shim that died and print a `DeleteResponse`.
    Delete,
    /// Print the version (`-v`).
    Version,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// containerd namespace that owns the shim (required).
    pub namespace: String,
    /// Task (container) id.
    pub id: String,
    /// containerd's gRPC address (also hashed into the shim's socket name).
    pub address: String,
    /// Binary that publishes events when no ttrpc address is given (`containerd`).
    pub publish_binary: PathBuf,
    /// Bundle path, when it is not the working directory (`delete`).
    pub bundle: Option<PathBuf>,
    /// Socket to serve on instead of fd 3.
    pub socket: Option<String>,
    /// Debug logging.
    pub debug: bool,
    /// What to do.
    pub action: Action,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<Args>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = Args {
            namespace: String::new(),
            id: String::new(),
            address: String::new(),
            publish_binary: PathBuf::from("containerd"),
            bundle: None,
            socket: None,
            debug: false,
            action: Action::Serve,
        };
        let mut version = false;
        let mut it = args.into_iter().map(Into::into);
        let mut positional = None;
        while let Some(arg) = it.next() {
            if arg == "--" {
                positional = it.next();
                break;
            }
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                positional = Some(arg);
                break;
            };
            if flag.is_empty() {
                positional = Some(arg);
                break;
            }
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            match name {
                "debug" | "v" => {
                    let value = match inline.as_deref() {
                        None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") => {
                            true
                        }
                        Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") => false,
                        Some(v) => {
                            return Err(Error::InvalidArgument(format!(
                                "invalid boolean value {v:?} for -{name}"
                            )));
                        }
                    };
                    if name == "debug" {
                        out.debug = value;
                    } else {
                        version = value;
                    }
                }
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(v) => v,
                        None => it.next().ok_or_else(|| {
                            Error::InvalidArgument(format!("flag needs an argument: -{name}"))
                        })?,
                    };
                    match name {
                        "namespace" => out.namespace = value,
                        "id" => out.id = value,
                        "address" => out.address = value,
                        "publish-binary" => out.publish_binary = PathBuf::from(value),
                        "bundle" => out.bundle = Some(PathBuf::from(value)),
                        _ => out.socket = Some(value),
                    }
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "flag provided but not defined: -{other} (known: -namespace -id -address \
                         -publish-binary -bundle -socket -debug -v)"
                    )));
                }
            }
        }
        out.action = match positional.as_deref() {
            _ if version => Action::Version,
            None => Action::Serve,
            Some("start") => Action::Start,
            Some("delete") => Action::Delete,
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "unknown action {other:?}: use start, delete, or none to serve"
                )));
            }
        };
        if out.action != Action::Version && out.namespace.is_empty() {
            return Err(Error::InvalidArgument(
                "shim namespace cannot be empty: pass -namespace".into(),
            ));
        }
        if matches!(out.action, Action::Start | Action::Delete) && out.id.is_empty() {
            return Err(Error::InvalidArgument(
                "shim id cannot be empty: pass -id".into(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_start_command_line() {
        let a = Args::parse([
            "-namespace",
            "k8s.io",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "abc",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.address, "/run/containerd/containerd.sock");
        assert_eq!(a.publish_binary, PathBuf::from("/usr/bin/containerd"));
        assert_eq!(a.id, "abc");
        assert!(a.debug);
        assert_eq!(a.action, Action::Start);
    }

    #[test]
    fn delete_with_bundle_and_equals_form() {
        let a = Args::parse([
            "--namespace=default",
            "-id=x",
            "-bundle",
            "/b",
            "-debug=false",
            "delete",
        ])
        .unwrap();
        assert_eq!(a.bundle, Some(PathBuf::from("/b")));
        assert!(!a.debug);
        assert_eq!(a.action, Action::Delete);
    }

    #[test]
    fn serve_without_action() {
        let a = Args::parse(["-namespace", "n", "-id", "x", "-address", "/a"]).unwrap();
        assert_eq!(a.action, Action::Serve);
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let e = Args::parse(["-id", "x", "start"]).unwrap_err().to_string();
        assert!(e.contains("-namespace"), "{e}");
        let e = Args::parse(["-namespace", "n", "-bogus", "start"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("-bogus"), "{e}");
        let e = Args::parse(["-namespace", "n", "-id", "x", "frobnicate"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("frobnicate"), "{e}");
        let e = Args::parse(["-namespace"]).unwrap_err().to_string();
        assert!(e.contains("needs an argument"), "{e}");
        let e = Args::parse(["-namespace", "n", "start"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("-id"), "{e}");
        assert_eq!(Args::parse(["-v"]).unwrap().action, Action::Version);
    }
}
