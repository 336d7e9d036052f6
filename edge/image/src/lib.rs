//! The image store of edgecore's daemonless runtime, under `<data dir>/images`:
//!
//! ```text
//! blobs/sha256/<hex>       content, stored under the digest computed while it was written
//! refs/<sha256(name)>.json  an image: its name, manifest and config digests, layers, config
//! rootfs/<config hex>/      the layers unpacked in order (whiteouts applied): a lower dir
//! tmp/                      staging; everything reaches its place by rename
//! certs.d/<host:port>/     a registry's own CA (`ca.crt`); its presence also means HTTPS
//!                           for a registry on loopback
//! ```
//!
//! Images arrive by [`archive::import`] of an archive (`oci-archive`, as `skopeo copy …
//! oci-archive:` writes, or `docker-archive`, as `docker save` does), for gateways without a
//! registry, or by [`registry::pull`].
//! Every blob is hashed as it is written and kept under that digest, so a reference only
//! resolves to content that matches it; a blob named by a digest it does not have is refused.
//! Layers may be plain or gzip tar; zstd layers are refused with a clear error.

pub mod archive;
pub mod http;
pub mod reference;
pub mod registry;
mod unpack;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Largest JSON document (index, manifest, config) read into memory.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Invalid(String),
    #[error("digest mismatch: {0}")]
    Digest(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("image {0} is not in the local store")]
    NotFound(String),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ImageError {
    move |e| ImageError::Io(format!("{what}: {e}"))
}

/// The parts of an image config a container starts from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageConfig {
    fn from_json(v: &Value) -> ImageConfig {
        let c = &v["config"];
        let list = |k: &str| -> Vec<String> {
            c[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        ImageConfig {
            entrypoint: list("Entrypoint"),
            cmd: list("Cmd"),
            env: list("Env"),
            working_dir: c["WorkingDir"].as_str().unwrap_or("").to_owned(),
            user: c["User"].as_str().unwrap_or("").to_owned(),
        }
    }
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Normalised (`docker.io/library/busybox:latest`).
    pub name: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Layer blob digests, lowest first.
    pub layers: Vec<String>,
    pub config: ImageConfig,
}

impl Image {
    /// `<repository>@<manifest digest>`, the image's id as kubelet reports it.
    pub fn image_ref(&self) -> String {
        let repo = self
            .name
            .split('@')
            .next()
            .map(|n| match n.rfind(':') {
                Some(i) if !n[i..].contains('/') => &n[..i],
                _ => n,
            })
            .unwrap_or(&self.name);
        format!("{repo}@{}", self.manifest_digest)
    }

    fn to_json(&self, config: &Value) -> Value {
        json!({
            "name": self.name,
            "manifest": self.manifest_digest,
            "config_digest": self.config_digest,
            "layers": self.layers,
            "config": config,
        })
    }

    fn from_json(v: &Value) -> Option<Image> {
        Some(Image {
            name: v["name"].as_str()?.to_owned(),
            manifest_digest: v["manifest"].as_str()?.to_owned(),
            config_digest: v["config_digest"].as_str()?.to_owned(),
            layers: v["layers"]
                .as_array()?
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect(),
            config: ImageConfig::from_json(&v["config"]),
        })
    }
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<64 hex>` → the hex; anything else is not a digest this store keeps.
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or_else(|| ImageError::Unsupported(format!("{digest:?} is not a sha256 digest")))
}

/// The store directory.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        for d in ["blobs/sha256", "refs", "rootfs", "tmp"] {
            std::fs::create_dir_all(root.join(d)).map_err(io(root.join(d).display()))?;
        }
        Ok(ImageStore {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    fn tmp_path(&self, tag: &str) -> PathBuf {
        self.root.join("tmp").join(format!(
            "{tag}-{}-{:016x}",
            std::process::id(),
            fastrand_u64()
        ))
    }

    /// Writes `reader` to a blob, hashing as it goes; returns its digest. With `expect`, a
    /// different digest is refused and nothing is kept.
    pub fn put_blob(
        &self,
        reader: &mut dyn Read,
        expect: Option<&str>,
    ) -> Result<String, ImageError> {
        let tmp = self.tmp_path("blob");
        let mut f = std::fs::File::create(&tmp).map_err(io(tmp.display()))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 << 10];
        let r = (|| loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return f.sync_all();
            }
            ctx.update(&buf[..n]);
            f.write_all(&buf[..n])?;
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::Io(format!("writing a blob: {e}")));
        }
        let digest = format!("sha256:{}", hex(ctx.finish().as_ref()));
        if let Some(want) = expect {
            if want != digest {
                let _ = std::fs::remove_file(&tmp);
                return Err(ImageError::Digest(format!(
                    "expected {want}, the content is {digest}"
                )));
            }
        }
        let dst = self.blob_path(&digest)?;
        std::fs::rename(&tmp, &dst).map_err(io(dst.display()))?;
        Ok(digest)
    }

    /// A small JSON blob, verified again against its digest as it is read.
    pub fn read_json(&self, digest: &str) -> Result<(Vec<u8>, Value), ImageError> {
        let path = self.blob_path(digest)?;
        let f = std::fs::File::open(&path)
            .map_err(|_| ImageError::Invalid(format!("blob {digest} is missing")))?;
        let mut bytes = Vec::new();
        f.take(MAX_JSON_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io(path.display()))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(ImageError::Invalid(format!(
                "{digest} is over {MAX_JSON_BYTES} bytes"
            )));
        }
        if format!("sha256:{}", sha256_hex(&bytes)) != digest {
            return Err(ImageError::Digest(format!("blob {digest} changed on disk")));
        }
        let v = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Invalid(format!("{digest} is not JSON: {e}")))?;
        Ok((bytes, v))
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", sha256_hex(name.as_bytes())))
    }

    /// Records `image` under its name (replacing what the name meant before).
    pub(crate) fn tag(&self, image: &Image, config: &Value) -> Result<(), ImageError> {
        let tmp = self.tmp_path("ref");
        let text = image.to_json(config).to_string();
        std::fs::write(&tmp, text).map_err(io(tmp.display()))?;
        let dst = self.ref_path(&image.name);
        std::fs::rename(&tmp, &dst).map_err(io(dst.display()))
    }

    /// The image a reference names (`busybox`, `localhost/app:1`, `x@sha256:…`).
    pub fn get(&self, reference: &str) -> Option<Image> {
        let name = reference::normalize(reference)?;
        if let Some((_, digest)) = name.split_once('@') {
            return self
                .list()
                .into_iter()
                .find(|i| i.manifest_digest == digest);
        }
        let text = std::fs::read(self.ref_path(&name)).ok()?;
        Image::from_json(&serde_json::from_slice(&text).ok()?)
    }

    /// Every image, by name.
    pub fn list(&self) -> Vec<Image> {
        let mut out: Vec<Image> = std::fs::read_dir(self.root.join("refs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|t| serde_json::from_slice::<Value>(&t).ok())
            .filter_map(|v| Image::from_json(&v))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The image's layers unpacked into one directory (once; later calls find it), the lower
    /// dir of its containers' root filesystems.
    pub fn rootfs(&self, image: &Image) -> Result<PathBuf, ImageError> {
        let dir = self
            .root
            .join("rootfs")
            .join(digest_hex(&image.config_digest)?);
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self.tmp_path("rootfs");
        std::fs::create_dir_all(&tmp).map_err(io(tmp.display()))?;
        let r = image
            .layers
            .iter()
            .try_for_each(|l| unpack::layer(&self.blob_path(l)?, &tmp, l));
        if let Err(e) = r {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(dir),
            // Unpacked meanwhile by someone else (an import and a start at once).
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(dir)
            }
            Err(e) => Err(ImageError::Io(format!("{}: {e}", dir.display()))),
        }
    }
}

/// Staging names only need to differ between concurrent writers of one process.
fn fastrand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod tests;
