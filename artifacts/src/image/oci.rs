//! OCI image layout and image archive, written by hand: a gzip layer, the image config, the
//! manifest, `index.json` and `oci-layout`, all reproducible (sorted JSON keys, fixed tar headers,
//! fixed gzip header), so the same busybox binary always gives the same digests.
//!
//! The archive is a tar of the layout plus a Docker `manifest.json`, so that both
//! `ctr images import` (which prefers the OCI layout) and Docker-archive readers accept it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
    Sha256Digest,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::tar::TarWriter;
use super::tree::{self, Entry};
use super::{Error, Result};

/// containerd's annotation for an image's full name, honoured by `ctr images import`.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a manifest's reference (the tag) inside a layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The `PATH` every image sets.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The creation time of every image: the epoch, like the layer's mtimes.
const CREATED: &str = "1970-01-01T00:00:00Z";

/// A compressed layer and its two digests.
pub struct Layer {
    /// The gzip-compressed tar.
    pub gz: Vec<u8>,
    /// sha256 (hex) of `gz`: the blob digest.
    pub digest: String,
    /// sha256 (hex) of the uncompressed tar: the config's diff id.
    pub diff_id: String,
}

/// What distinguishes one image from another when they share a layer.
pub struct ImageSpec<'a> {
    /// The full reference, e.g. `docker.io/library/busybox:latest`.
    pub name: &'a str,
    /// The image's entrypoint, if any.
    pub entrypoint: Option<Vec<String>>,
    /// The image's default command, if any.
    pub cmd: Option<Vec<String>>,
}

/// All files of one image: blobs by hex digest plus the top-level documents.
pub struct Image {
    /// Blobs (layer, config, manifest) keyed by their sha256 in hex.
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// `index.json`.
    pub index: Vec<u8>,
    /// `oci-layout`.
    pub oci_layout: Vec<u8>,
    /// Docker's `manifest.json` for the archive.
    pub docker_manifest: Vec<u8>,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn spec_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> Error {
    move |e| Error::Format {
        what,
        message: e.to_string(),
    }
}

/// JSON with sorted object keys at every level, whatever map type the source used.
pub fn canonical_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut items: Vec<(String, Value)> = map.into_iter().collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(items.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    let err = |e: serde_json::Error| Error::Format {
        what,
        message: e.to_string(),
    };
    let value = serde_json::to_value(value).map_err(err)?;
    serde_json::to_vec(&sort(value)).map_err(err)
}

/// Builds the layer of a rootfs: tar, then gzip with a fixed header (no name, mtime 0).
pub fn layer(entries: &[Entry]) -> Result<Layer> {
    let tar = tree::write_tar(entries, Vec::new()).map_err(|e| Error::Format {
        what: "layer tar",
        message: e.to_string(),
    })?;
    let diff_id = sha256_hex(&tar);
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    let gz = gz
        .write_all(&tar)
        .and_then(|()| gz.finish())
        .map_err(|e| Error::Format {
            what: "layer gzip",
            message: e.to_string(),
        })?;
    Ok(Layer {
        digest: sha256_hex(&gz),
        gz,
        diff_id,
    })
}

fn descriptor(media_type: MediaType, data: &[u8]) -> Result<Descriptor> {
    let digest: Sha256Digest = sha256_hex(data)
        .parse()
        .map_err(spec_err("sha256 digest"))?;
    Ok(Descriptor::new(media_type, data.len() as u64, digest))
}

fn tag_of(name: &str) -> &str {
    // The tag follows the last ':' that comes after the last '/' (a registry may have a port).
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map_or("latest", |(_, tag)| tag)
}

/// Builds config, manifest and index for one image on top of `layer`.
pub fn image(layer: &Layer, spec: &ImageSpec<'_>) -> Result<Image> {
    let mut config = ConfigBuilder::default()
        .env(vec![PATH_ENV.to_string()])
        .working_dir("/");
    if let Some(e) = &spec.entrypoint {
        config = config.entrypoint(e.clone());
    }
    if let Some(c) = &spec.cmd {
        config = config.cmd(c.clone());
    }
    let config = ImageConfigurationBuilder::default()
        .created(CREATED)
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config.build().map_err(spec_err("image config"))?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{}", layer.diff_id)])
                .build()
                .map_err(spec_err("image rootfs"))?,
        )
        .build()
        .map_err(spec_err("image config"))?;
    let config_json = canonical_json("image config", &config)?;

    let layer_desc = descriptor(MediaType::ImageLayerGzip, &layer.gz)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_json)?)
        .layers(vec![layer_desc])
        .build()
        .map_err(spec_err("image manifest"))?;
    let manifest_json = canonical_json("image manifest", &manifest)?;

    let annotations = HashMap::from([
        (ANNOTATION_IMAGE_NAME.to_string(), spec.name.to_string()),
        (
            ANNOTATION_REF_NAME.to_string(),
            tag_of(spec.name).to_string(),
        ),
    ]);
    let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest_json)?;
    manifest_desc.set_annotations(Some(annotations));
    manifest_desc.set_platform(Some(
        PlatformBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .build()
            .map_err(spec_err("platform"))?,
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .map_err(spec_err("image index"))?;
    let oci_layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec_err("oci-layout"))?;

    let config_hex = sha256_hex(&config_json);
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": [spec.name],
        "Layers": [format!("blobs/sha256/{}", layer.digest)],
    }]);

    let mut blobs = BTreeMap::new();
    blobs.insert(layer.digest.clone(), layer.gz.clone());
    blobs.insert(config_hex, config_json);
    blobs.insert(sha256_hex(&manifest_json), manifest_json);
    Ok(Image {
        blobs,
        index: canonical_json("image index", &index)?,
        oci_layout: canonical_json("oci-layout", &oci_layout)?,
        docker_manifest: canonical_json("docker manifest", &docker_manifest)?,
    })
}

/// Writes `image` as an OCI image layout directory at `dir` (created).
pub fn write_layout(image: &Image, dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
    for (hex, data) in &image.blobs {
        let path = blobs.join(hex);
        fs::write(&path, data).map_err(io("write", &path))?;
    }
    for (name, data) in [
        ("oci-layout", &image.oci_layout),
        ("index.json", &image.index),
    ] {
        let path = dir.join(name);
        fs::write(&path, data).map_err(io("write", &path))?;
    }
    Ok(())
}

/// Writes `image` as one tar file at `path`: the OCI layout plus Docker's `manifest.json`.
pub fn write_archive(image: &Image, path: &Path) -> Result<()> {
    let err = |e: std::io::Error| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source: e,
    };
    let file = fs::File::create(path).map_err(err)?;
    let mut tar = TarWriter::new(std::io::BufWriter::new(file));
    tar.file("oci-layout", 0o644, 0, 0, &image.oci_layout)
        .and_then(|()| tar.file("index.json", 0o644, 0, 0, &image.index))
        .and_then(|()| tar.file("manifest.json", 0o644, 0, 0, &image.docker_manifest))
        .and_then(|()| tar.dir("blobs", 0o755, 0, 0))
        .and_then(|()| tar.dir("blobs/sha256", 0o755, 0, 0))
        .map_err(err)?;
    for (hex, data) in &image.blobs {
        tar.file(&format!("blobs/sha256/{hex}"), 0o644, 0, 0, data)
            .map_err(err)?;
    }
    let file = tar.finish().map_err(err)?;
    file.into_inner()
        .map_err(|e| err(e.into_error()))?
        .sync_all()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(tag_of("docker.io/library/busybox:latest"), "latest");
        assert_eq!(tag_of("registry.k8s.io/pause:3.6"), "3.6");
        assert_eq!(tag_of("localhost:5000/x"), "latest");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let m = HashMap::from([("b", 1), ("a", 2), ("c", 3)]);
        assert_eq!(canonical_json("t", &m).unwrap(), br#"{"a":2,"b":1,"c":3}"#);
    }

    #[test]
    fn image_is_reproducible_and_self_consistent() {
        let entries = tree::entries(b"not really busybox".to_vec(), &["bin/sh".into()]);
        let spec = ImageSpec {
            name: "docker.io/library/busybox:latest",
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
        };
        let a = image(&layer(&entries).unwrap(), &spec).unwrap();
        let b = image(&layer(&entries).unwrap(), &spec).unwrap();
        assert_eq!(a.index, b.index);
        assert_eq!(a.blobs, b.blobs);
        for (hex, data) in &a.blobs {
            assert_eq!(&sha256_hex(data), hex);
        }
        let index: Value = serde_json::from_slice(&a.index).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"][ANNOTATION_IMAGE_NAME], spec.name);
        assert_eq!(m["annotations"][ANNOTATION_REF_NAME], "latest");
        assert_eq!(m["platform"]["architecture"], "amd64");
        let digest = m["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let manifest: Value = serde_json::from_slice(&a.blobs[digest]).unwrap();
        let cfg = manifest["config"]["digest"].as_str().unwrap();
        assert!(a.blobs.contains_key(cfg.strip_prefix("sha256:").unwrap()));
    }
}
