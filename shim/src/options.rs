//! The runtime options containerd hands the shim (in `CreateTaskRequest.options`, and on `start`'s
//! stdin): which handler config to load.
//!
//! containerd 1.6's CRI plugin turns a handler's `options` table into `runtimeoptions.v1.Options
//! { type_url = 1, config_path = 2 }` for every runtime type that is not runc's, wraps it in an `Any`
//! and sends it; `ctr run --runtime-config-path` does the same. runc's own `containerd.runc.v1.Options`
//! carries no config path and selects the default (`ns`). No options at all: the default too.

use std::path::PathBuf;

use protobuf::well_known_types::any::Any;
use protobuf::{CodedInputStream, Message};

use crate::error::{Error, Result};

/// Type URL of containerd's generic runtime options (`pkg/runtimeoptions/v1`).
pub const RUNTIMEOPTIONS_TYPE_URL: &str = "runtimeoptions.v1.Options";
/// Type URL of runc's options, which some configs send to every runtime.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// What the options say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The handler config file (`ConfigPath`), if one was given.
    pub config_path: Option<PathBuf>,
}

fn strip(url: &str) -> &str {
    url.strip_prefix("type.googleapis.com/").unwrap_or(url)
}

impl RuntimeOptions {
    /// Decodes the options `Any`; `None` or an empty `Any` mean defaults.
    pub fn from_any(any: Option<&Any>) -> Result<Self> {
        let Some(any) = any else {
            return Ok(Self::default());
        };
        if any.type_url.is_empty() && any.value.is_empty() {
            return Ok(Self::default());
        }
        match strip(&any.type_url) {
            RUNTIMEOPTIONS_TYPE_URL => Self::decode_runtimeoptions(&any.value),
            RUNC_OPTIONS_TYPE_URL => {
                containerd_shim_protos::shim::oci::Options::parse_from_bytes(&any.value).map_err(
                    |e| Error::InvalidArgument(format!("malformed {RUNC_OPTIONS_TYPE_URL}: {e}")),
                )?;
                Ok(Self::default())
            }
            other => Err(Error::InvalidArgument(format!(
                "unsupported runtime options type {other:?}: configure the handler with \
                 options.ConfigPath (containerd sends {RUNTIMEOPTIONS_TYPE_URL})"
            ))),
        }
    }

    /// Decodes the bytes `start` receives on stdin: a serialized `Any`, or nothing.
    pub fn from_any_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let any = Any::parse_from_bytes(bytes)
            .map_err(|e| Error::InvalidArgument(format!("malformed runtime options: {e}")))?;
        Self::from_any(Some(&any))
    }

    fn decode_runtimeoptions(bytes: &[u8]) -> Result<Self> {
        let bad = |e: protobuf::Error| {
            Error::InvalidArgument(format!("malformed {RUNTIMEOPTIONS_TYPE_URL}: {e}"))
        };
        let mut s = CodedInputStream::from_bytes(bytes);
        let mut out = Self::default();
        while let Some(tag) = s.read_raw_tag_or_eof().map_err(bad)? {
            let (field, wire) = (tag >> 3, tag & 7);
            match (field, wire) {
                (1, 2) => {
                    s.read_string().map_err(bad)?;
                }
                (2, 2) => {
                    let p = s.read_string().map_err(bad)?;
                    out.config_path = (!p.is_empty()).then(|| PathBuf::from(p));
                }
                _ => protobuf::rt::skip_field_for_tag(tag, &mut s).map_err(bad)?,
            }
        }
        if let Some(p) = &out.config_path
            && !p.is_absolute()
        {
            return Err(Error::InvalidArgument(format!(
                "ConfigPath {:?} must be an absolute path",
                p.display().to_string()
            )));
        }
        Ok(out)
    }
}

/// Encodes `runtimeoptions.v1.Options` (tests and `ctr`-like callers).
pub fn encode_runtimeoptions(config_path: &str) -> Any {
    let mut buf = Vec::new();
    {
        let mut os = protobuf::CodedOutputStream::vec(&mut buf);
        // The writes go to a Vec and cannot fail.
        let _ = os.write_string(2, config_path);
        let _ = os.flush();
    }
    let mut any = Any::new();
    any.type_url = RUNTIMEOPTIONS_TYPE_URL.to_string();
    any.value = buf;
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_round_trips() {
        let any = encode_runtimeoptions("/etc/moat/trace.toml");
        let o = RuntimeOptions::from_any(Some(&any)).unwrap();
        assert_eq!(o.config_path, Some(PathBuf::from("/etc/moat/trace.toml")));
        let bytes = any.write_to_bytes().unwrap();
        assert_eq!(RuntimeOptions::from_any_bytes(&bytes).unwrap(), o);
    }

    #[test]
    fn type_url_field_and_unknown_fields_are_skipped() {
        let mut buf = Vec::new();
        {
            let mut os = protobuf::CodedOutputStream::vec(&mut buf);
            os.write_string(1, "io.moat.v1").unwrap();
            os.write_uint64(7, 42).unwrap();
            os.write_string(2, "/etc/moat/ns.toml").unwrap();
            os.flush().unwrap();
        }
        let mut any = Any::new();
        any.type_url = format!("type.googleapis.com/{RUNTIMEOPTIONS_TYPE_URL}");
        any.value = buf;
        let o = RuntimeOptions::from_any(Some(&any)).unwrap();
        assert_eq!(o.config_path, Some(PathBuf::from("/etc/moat/ns.toml")));
    }

    #[test]
    fn defaults_and_errors() {
        assert_eq!(
            RuntimeOptions::from_any(None).unwrap(),
            RuntimeOptions::default()
        );
        assert_eq!(
            RuntimeOptions::from_any_bytes(&[]).unwrap(),
            RuntimeOptions::default()
        );
        let mut runc = Any::new();
        runc.type_url = RUNC_OPTIONS_TYPE_URL.into();
        assert_eq!(
            RuntimeOptions::from_any(Some(&runc)).unwrap().config_path,
            None
        );

        let mut other = Any::new();
        other.type_url = "example.Foo".into();
        let e = RuntimeOptions::from_any(Some(&other))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ConfigPath"), "{e}");

        let rel = encode_runtimeoptions("moat/ns.toml");
        let e = RuntimeOptions::from_any(Some(&rel))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");

        let mut junk = encode_runtimeoptions("/x");
        junk.value.truncate(3);
        assert!(RuntimeOptions::from_any(Some(&junk)).is_err());
        assert!(RuntimeOptions::from_any_bytes(&[0xff, 0xff]).is_err());
    }
}
