//! Import of image archives: an OCI image layout in a tar (`oci-archive`) or `docker save`'s
//! format (`docker-archive`: `manifest.json` naming a config and layer tars).
//!
//! One pass over the archive stores every regular file as a blob (hashed as written: a file
//! under `blobs/sha256/<hex>` whose content has another digest is refused), and remembers
//! each path's digest; then the index or manifest is resolved against those digests.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::{digest_hex, reference, Image, ImageConfig, ImageError, ImageStore, MAX_JSON_BYTES};

const INDEX_MEDIA: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The platform of this build, in Go's names (what image indexes use).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn clean(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

/// Imports every image of the archive at `path`; `name` names the image when the archive
/// does not (or overrides it when it holds one image). Returns what was imported.
pub fn import(
    store: &ImageStore,
    path: &Path,
    name: Option<&str>,
) -> Result<Vec<Image>, ImageError> {
    let f = std::fs::File::open(path)
        .map_err(|e| ImageError::Io(format!("cannot open {}: {e}", path.display())))?;
    let mut ar = tar::Archive::new(f);
    // path in the archive → digest of its content
    let mut files: HashMap<String, String> = HashMap::new();
    let entries = ar.entries().map_err(|e| {
        ImageError::Invalid(format!("{} is not a tar archive: {e}", path.display()))
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            ImageError::Invalid(format!("{} is not a tar archive: {e}", path.display()))
        })?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let p = clean(
            &entry
                .path()
                .map_err(|e| ImageError::Invalid(e.to_string()))?,
        );
        // A blob of an OCI layout must have the digest it is named by.
        let expect = p
            .strip_prefix("blobs/sha256/")
            .map(|hex| format!("sha256:{hex}"));
        let digest = store
            .put_blob(&mut entry, expect.as_deref())
            .map_err(|e| match e {
                ImageError::Digest(m) => {
                    ImageError::Digest(format!("{p} in {}: {m}", path.display()))
                }
                e => e,
            })?;
        files.insert(p, digest);
    }
    let images = if let Some(index) = files.get("index.json") {
        oci(store, &files, index, name)?
    } else if let Some(manifest) = files.get("manifest.json") {
        docker(store, &files, manifest, name)?
    } else {
        return Err(ImageError::Invalid(format!(
            "{} holds neither index.json (oci-archive) nor manifest.json (docker-archive)",
            path.display()
        )));
    };
    if images.is_empty() {
        return Err(ImageError::Invalid(format!(
            "{} holds no image",
            path.display()
        )));
    }
    Ok(images)
}

fn json_of(store: &ImageStore, digest: &str) -> Result<Value, ImageError> {
    store.read_json(digest).map(|(_, v)| v)
}

/// The name of an image: given, or from the annotations (containerd's full name, or the
/// OCI ref name when it is a whole reference rather than a bare tag).
fn image_name(given: Option<&str>, annotations: &Value) -> Result<String, ImageError> {
    let found = given
        .or_else(|| annotations["io.containerd.image.name"].as_str())
        .or_else(|| {
            annotations["org.opencontainers.image.ref.name"]
                .as_str()
                .filter(|r| r.contains('/') || r.contains(':'))
        })
        .ok_or_else(|| {
            ImageError::Invalid("the archive does not name its image: give a name (--name)".into())
        })?;
    reference::normalize(found)
        .ok_or_else(|| ImageError::Invalid(format!("{found:?} is not an image reference")))
}

fn oci(
    store: &ImageStore,
    files: &HashMap<String, String>,
    index: &str,
    name: Option<&str>,
) -> Result<Vec<Image>, ImageError> {
    let index = json_of(store, index)?;
    let descs = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for d in &descs {
        let digest = d["digest"].as_str().unwrap_or("");
        let name = image_name(
            if descs.len() == 1 { name } else { None },
            &d["annotations"],
        )?;
        let manifest = platform_manifest(store, files, digest, d["mediaType"].as_str())?;
        out.push(record(store, &name, &manifest)?);
    }
    Ok(out)
}

/// Checks that a blob the index names was in the archive.
fn have(files: &HashMap<String, String>, digest: &str) -> Result<(), ImageError> {
    digest_hex(digest)?;
    if files.values().any(|d| d == digest) {
        Ok(())
    } else {
        Err(ImageError::Invalid(format!(
            "the archive has no blob {digest}"
        )))
    }
}

/// A manifest's digest, through an index by this platform when it is one.
fn platform_manifest(
    store: &ImageStore,
    files: &HashMap<String, String>,
    digest: &str,
    media: Option<&str>,
) -> Result<String, ImageError> {
    have(files, digest)?;
    let v = json_of(store, digest)?;
    let is_index = media.is_some_and(|m| INDEX_MEDIA.contains(&m))
        || v["mediaType"]
            .as_str()
            .is_some_and(|m| INDEX_MEDIA.contains(&m))
        || v.get("manifests").is_some();
    if !is_index {
        return Ok(digest.to_owned());
    }
    let m = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == go_arch())
        .ok_or_else(|| {
            ImageError::Unsupported(format!(
                "the image index {digest} has no linux/{} image",
                go_arch()
            ))
        })?;
    platform_manifest(
        store,
        files,
        m["digest"].as_str().unwrap_or(""),
        m["mediaType"].as_str(),
    )
}

/// Records the image a manifest describes.
pub(crate) fn record(store: &ImageStore, name: &str, manifest: &str) -> Result<Image, ImageError> {
    let m = json_of(store, manifest)?;
    let config_digest = m["config"]["digest"].as_str().unwrap_or("").to_owned();
    let config = json_of(store, &config_digest)?;
    let layers: Vec<String> = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["digest"].as_str().unwrap_or("").to_owned())
        .collect();
    for l in &layers {
        if !store.blob_path(l)?.is_file() {
            return Err(ImageError::Invalid(format!(
                "layer {l} of {name} is missing"
            )));
        }
    }
    let image = Image {
        name: name.to_owned(),
        manifest_digest: manifest.to_owned(),
        config_digest,
        layers,
        config: ImageConfig::from_json(&config),
    };
    store.tag(&image, &config)?;
    Ok(image)
}

fn docker(
    store: &ImageStore,
    files: &HashMap<String, String>,
    manifest: &str,
    name: Option<&str>,
) -> Result<Vec<Image>, ImageError> {
    let list = json_of(store, manifest)?;
    let list = list.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for entry in &list {
        let path_digest = |p: &str| {
            files.get(p).cloned().ok_or_else(|| {
                ImageError::Invalid(format!("manifest.json names {p}, which the archive lacks"))
            })
        };
        let config_path = entry["Config"].as_str().unwrap_or("");
        let config_digest = path_digest(config_path)?;
        // `docker save` names configs by their digest (`<hex>.json`, or `blobs/sha256/<hex>`).
        let stem = config_path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".json");
        if stem.len() == 64 && format!("sha256:{stem}") != config_digest {
            return Err(ImageError::Digest(format!(
                "{config_path} has digest {config_digest}"
            )));
        }
        let (_, config) = store.read_json(&config_digest)?;
        let mut layers = Vec::new();
        for l in entry["Layers"].as_array().into_iter().flatten() {
            layers.push(path_digest(l.as_str().unwrap_or(""))?);
        }
        // Layers are uncompressed here: each must be the diff id the config lists.
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if diff_ids != layers.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(ImageError::Digest(format!(
                "the layers of {config_path} are not the ones its config lists (diff_ids)"
            )));
        }
        let tags: Vec<&str> = entry["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let names: Vec<String> = match (name, tags.is_empty()) {
            (Some(n), _) if list.len() == 1 => vec![n.to_owned()],
            (_, false) => tags.iter().map(|t| (*t).to_owned()).collect(),
            _ => {
                return Err(ImageError::Invalid(
                    "the archive does not name its image: give a name (--name)".into(),
                ))
            }
        };
        // A docker archive has no manifest blob: one is made, so the image has an id like
        // any other.
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l})).collect::<Vec<_>>(),
        })
        .to_string();
        if manifest.len() as u64 > MAX_JSON_BYTES {
            return Err(ImageError::Invalid("too many layers".into()));
        }
        let manifest_digest = store.put_blob(&mut manifest.as_bytes(), None)?;
        for n in names {
            let n = reference::normalize(&n)
                .ok_or_else(|| ImageError::Invalid(format!("{n:?} is not an image reference")))?;
            out.push(record(store, &n, &manifest_digest)?);
        }
    }
    Ok(out)
}

/// Reads a gzip/plain switch's first bytes without consuming them from a file.
pub(crate) fn magic(path: &Path) -> std::io::Result<[u8; 4]> {
    let mut b = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < 4 {
        match f.read(&mut b[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(b)
}
