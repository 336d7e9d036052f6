//! Pulls from a registry (the v2 API, OCI and Docker media types): the manifest by tag or
//! digest (an index resolved to this platform), then the config and the layers this store
//! lacks, each verified against its digest as it is written. Anonymous, Basic and Bearer
//! token auth (the `WWW-Authenticate` challenge, a token from its realm, credentials sent
//! to the realm when given). Blocking: the caller runs it off its executor.
//!
//! HTTPS to every registry, verified against the system's CAs and the registry's own CA in
//! `<store>/certs.d/<host[:port]>/ca.crt`; plain HTTP only to a registry on loopback that
//! has no such CA (the container runtimes treat loopback registries as insecure by default).

use std::io::Read;

use serde_json::Value;

use crate::http::{self, Response, Url};
use crate::{archive, reference, Image, ImageError, ImageStore, MAX_JSON_BYTES};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// Redirects followed at most (blob storage behind a registry).
const MAX_REDIRECTS: usize = 5;

/// Registry credentials (from a pod's `imagePullSecrets`).
#[derive(Clone, Debug, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// `registry`, `repository`, and tag or digest of a normalised reference.
fn split(name: &str) -> Result<(String, String, String), ImageError> {
    let bad = || ImageError::Invalid(format!("{name:?} is not an image reference"));
    let (host, rest) = name.split_once('/').ok_or_else(bad)?;
    let (repo, what) = match rest.split_once('@') {
        Some((r, d)) => (r, d),
        None => rest.rsplit_once(':').ok_or_else(bad)?,
    };
    let host = if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    };
    Ok((host.to_owned(), repo.to_owned(), what.to_owned()))
}

/// The parameters of a `WWW-Authenticate` challenge: its scheme and `key="value"` pairs.
fn challenge(h: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let (v, next) = match after.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(i) => (&q[..i], q[i + 1..].trim_start_matches([',', ' '])),
                None => (q, ""),
            },
            None => match after.find(',') {
                Some(i) => (&after[..i], after[i + 1..].trim_start()),
                None => (after, ""),
            },
        };
        params.push((k.trim().to_ascii_lowercase(), v.to_owned()));
        s = next;
    }
    (scheme.to_ascii_lowercase(), params)
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client<'a> {
    certs_dir: std::path::PathBuf,
    host: String,
    repo: String,
    creds: Option<&'a Credentials>,
    auth: Option<String>,
}

impl Client<'_> {
    fn url(&self, path: &str) -> Result<Url, ImageError> {
        let plain = http::is_loopback(&self.host) && !self.certs_dir.join(&self.host).exists();
        let scheme = if plain { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{}{path}", self.host)).map_err(ImageError::Unsupported)
    }

    fn fetch(&self, url: &Url, headers: &[(&str, String)]) -> Result<Response, String> {
        let tls = match url.tls {
            true => {
                let authority = match url.port {
                    443 => url.host.clone(),
                    p => format!("{}:{p}", url.host),
                };
                Some(http::tls_config(&self.certs_dir, &authority)?)
            }
            false => None,
        };
        http::get(url, headers, tls)
    }

    /// GET with auth: on a 401 the challenge is answered once; redirects are followed
    /// (without the credentials when they leave the registry).
    fn get(&mut self, path: &str, accept: Option<&str>) -> Result<Response, ImageError> {
        let mut url = self.url(path)?;
        let mut answered = false;
        for _ in 0..=MAX_REDIRECTS {
            let same = url.host == self.url("/")?.host;
            let mut headers = Vec::new();
            if let Some(a) = accept {
                headers.push(("Accept", a.to_owned()));
            }
            if let (Some(a), true) = (&self.auth, same) {
                headers.push(("Authorization", a.clone()));
            }
            let resp = self
                .fetch(&url, &headers)
                .map_err(|e| ImageError::Io(format!("registry {}: {e}", self.host)))?;
            match resp.status {
                401 if !answered => {
                    answered = true;
                    let h = resp.header("www-authenticate").unwrap_or("").to_owned();
                    self.answer(&h)?;
                }
                301 | 302 | 303 | 307 | 308 => {
                    let loc = resp.header("location").unwrap_or("").to_owned();
                    url = if loc.starts_with('/') {
                        Url { path: loc, ..url }
                    } else {
                        Url::parse(&loc).map_err(ImageError::Unsupported)?
                    };
                }
                _ => return Ok(resp),
            }
        }
        Err(ImageError::Io(format!(
            "registry {}: too many redirects",
            self.host
        )))
    }

    fn answer(&mut self, h: &str) -> Result<(), ImageError> {
        let (scheme, params) = challenge(h);
        let p = |k: &str| params.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        let basic = self
            .creds
            .map(|c| format!("Basic {}", b64(&format!("{}:{}", c.username, c.password))));
        match scheme.as_str() {
            "basic" => {
                self.auth = Some(basic.ok_or_else(|| {
                    ImageError::Io(format!(
                        "registry {} needs credentials (imagePullSecrets)",
                        self.host
                    ))
                })?);
                Ok(())
            }
            "bearer" => {
                let realm = p("realm").ok_or_else(|| {
                    ImageError::Io(format!(
                        "registry {}: a Bearer challenge without a realm",
                        self.host
                    ))
                })?;
                let mut q = Vec::new();
                if let Some(s) = p("service") {
                    q.push(format!("service={}", query_escape(&s)));
                }
                let scope = p("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repo));
                q.push(format!("scope={}", query_escape(&scope)));
                let url = Url::parse(&format!("{realm}?{}", q.join("&")))
                    .map_err(ImageError::Unsupported)?;
                let headers: Vec<(&str, String)> =
                    basic.into_iter().map(|b| ("Authorization", b)).collect();
                let mut resp = self
                    .fetch(&url, &headers)
                    .map_err(|e| ImageError::Io(format!("token from {realm}: {e}")))?;
                if resp.status != 200 {
                    return Err(ImageError::Io(format!(
                        "token from {realm}: HTTP {}",
                        resp.status
                    )));
                }
                let v = read_json(&mut resp)?.1;
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or_else(|| {
                        ImageError::Io(format!("token from {realm}: no token in the answer"))
                    })?;
                self.auth = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(ImageError::Io(format!(
                "registry {} asks for auth {h:?}, which edgecore does not speak",
                self.host
            ))),
        }
    }

    /// A manifest or index by tag or digest, stored as a blob; its digest.
    fn manifest(&mut self, store: &ImageStore, what: &str) -> Result<(String, Value), ImageError> {
        let path = format!("/v2/{}/manifests/{what}", self.repo);
        let mut resp = self.get(&path, Some(ACCEPT))?;
        if resp.status != 200 {
            return Err(status_error(&self.host, &path, &mut resp));
        }
        let header = resp.header("docker-content-digest").map(str::to_owned);
        let (bytes, v) = read_json(&mut resp)?;
        let digest = store.put_blob(&mut bytes.as_slice(), None)?;
        // By digest, the content must be it; by tag, what the registry says it is.
        for want in [
            what.starts_with("sha256:").then_some(what),
            header.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if want != digest {
                return Err(ImageError::Digest(format!(
                    "manifest {what} of {}: expected {want}, got {digest}",
                    self.repo
                )));
            }
        }
        Ok((digest, v))
    }

    fn blob(
        &mut self,
        store: &ImageStore,
        digest: &str,
        size: Option<u64>,
    ) -> Result<(), ImageError> {
        if store.blob_path(digest)?.is_file() {
            return Ok(());
        }
        let path = format!("/v2/{}/blobs/{digest}", self.repo);
        let mut resp = self.get(&path, None)?;
        if resp.status != 200 {
            return Err(status_error(&self.host, &path, &mut resp));
        }
        // Never more than the descriptor's size: a longer body fails the digest.
        let mut body = resp.body.take(size.unwrap_or(u64::MAX));
        store.put_blob(&mut body, Some(digest)).map(drop)
    }
}

fn status_error(host: &str, path: &str, resp: &mut Response) -> ImageError {
    let mut text = String::new();
    let _ = resp.body.by_ref().take(512).read_to_string(&mut text);
    let msg = format!(
        "registry {host}: GET {path}: HTTP {} {}",
        resp.status,
        text.trim()
    );
    if resp.status == 404 {
        ImageError::NotFound(msg)
    } else {
        ImageError::Io(msg)
    }
}

fn read_json(resp: &mut Response) -> Result<(Vec<u8>, Value), ImageError> {
    let mut bytes = Vec::new();
    resp.body
        .by_ref()
        .take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::Io(e.to_string()))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::Invalid(format!(
            "a manifest over {MAX_JSON_BYTES} bytes"
        )));
    }
    let v = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::Invalid(format!("a manifest that is not JSON: {e}")))?;
    Ok((bytes, v))
}

/// Pulls `reference` into `store` and records it under its normalised name.
pub fn pull(
    store: &ImageStore,
    reference: &str,
    creds: Option<&Credentials>,
) -> Result<Image, ImageError> {
    let name = reference::normalize(reference)
        .ok_or_else(|| ImageError::Invalid(format!("{reference:?} is not an image reference")))?;
    let (host, repo, what) = split(&name)?;
    let mut c = Client {
        certs_dir: store.root().join("certs.d"),
        host,
        repo,
        creds,
        auth: None,
    };
    let (mut digest, mut v) = c.manifest(store, &what)?;
    if v.get("manifests").is_some() {
        let m = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                m["platform"]["os"] == "linux"
                    && m["platform"]["architecture"] == archive::go_arch()
            })
            .ok_or_else(|| {
                ImageError::Unsupported(format!("{name} has no linux/{} image", archive::go_arch()))
            })?
            .clone();
        (digest, v) = c.manifest(store, m["digest"].as_str().unwrap_or(""))?;
    }
    let descs = std::iter::once(&v["config"]).chain(v["layers"].as_array().into_iter().flatten());
    for d in descs {
        let dg = d["digest"].as_str().unwrap_or("");
        c.blob(store, dg, d["size"].as_u64())?;
    }
    archive::record(store, &name, &digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_references_parse() {
        let (s, p) = challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "http://127.0.0.1:1/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
        assert_eq!(challenge("Basic realm=x").1[0].1, "x");
        assert_eq!(
            split("127.0.0.1:5000/a/b:1").unwrap(),
            ("127.0.0.1:5000".into(), "a/b".into(), "1".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(split(&format!("docker.io/library/x@{d}")).unwrap().2, d);
        assert_eq!(
            split("docker.io/library/x:1").unwrap().0,
            "registry-1.docker.io"
        );
        assert_eq!(b64("user:pw"), "dXNlcjpwdw==");
        assert_eq!(b64("ab"), "YWI=");
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
