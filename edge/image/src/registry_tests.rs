//! The pull against a registry written here (one thread on loopback, a bounded number of
//! connections): Bearer token auth with credentials, an index resolved by platform, digests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::registry::{pull, Credentials};
use super::*;

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// Serves `routes` (path → body) behind a token; `log` gets every request line and its
/// Authorization header. Ends after `max` connections.
fn serve(routes: HashMap<String, Vec<u8>>, max: usize) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(max) {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("Authorization: ") {
                    auth = v.trim().to_owned();
                }
            }
            let path = first.split(' ').nth(1).unwrap_or("").to_owned();
            log2.lock().unwrap().push(format!("{path} {auth}"));
            let (status, extra, body): (&str, String, Vec<u8>) = if path.starts_with("/token?") {
                if auth == "Basic dTpw" && path.contains("scope=repository%3Aapp%3Apull") {
                    ("200 OK", String::new(), br#"{"token":"tok"}"#.to_vec())
                } else {
                    ("401 Unauthorized", String::new(), Vec::new())
                }
            } else if auth != "Bearer tok" {
                let h = format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\",scope=\"repository:app:pull\"\r\n");
                ("401 Unauthorized", h, Vec::new())
            } else if let Some(b) = routes.get(&path) {
                ("200 OK", String::new(), b.clone())
            } else {
                ("404 Not Found", String::new(), b"{}".to_vec())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (port, log)
}

fn image_routes(corrupt_layer: bool) -> (HashMap<String, Vec<u8>>, String, Vec<u8>) {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        b.append_data(&mut h, "hello", &b"world"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let config = json!({"config": {"Cmd": ["/hello"]}})
        .to_string()
        .into_bytes();
    let manifest =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": digest(&config), "size": config.len()},
        "layers": [{"digest": digest(&layer), "size": layer.len()}]})
        .to_string()
        .into_bytes();
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"digest": format!("sha256:{}", "0".repeat(64)), "platform": {"os": "linux", "architecture": "s390x"}},
        {"digest": digest(&manifest), "platform": {"os": "linux", "architecture": archive::go_arch()}}]})
    .to_string()
    .into_bytes();
    let mut served_layer = layer.clone();
    if corrupt_layer {
        served_layer[600] ^= 1;
    }
    let routes: HashMap<String, Vec<u8>> = [
        ("/v2/app/manifests/1".to_owned(), index),
        (
            format!("/v2/app/manifests/{}", digest(&manifest)),
            manifest.clone(),
        ),
        (format!("/v2/app/blobs/{}", digest(&config)), config),
        (format!("/v2/app/blobs/{}", digest(&layer)), served_layer),
    ]
    .into_iter()
    .collect();
    (routes, digest(&manifest), layer)
}

fn store(tag: &str) -> (PathBuf, ImageStore) {
    let p = std::env::temp_dir().join(format!("image-reg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    let s = ImageStore::open(&p).unwrap();
    (p, s)
}

#[test]
fn a_pull_answers_the_token_challenge_resolves_the_index_and_verifies_blobs() {
    let (routes, manifest, _) = image_routes(false);
    let (port, log) = serve(routes, 20);
    let (dir, s) = store("ok");
    let creds = Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    let img = pull(&s, &format!("127.0.0.1:{port}/app:1"), Some(&creds)).unwrap();
    assert_eq!(img.name, format!("127.0.0.1:{port}/app:1"));
    assert_eq!(
        img.manifest_digest, manifest,
        "the platform's manifest, not the index"
    );
    assert_eq!(img.config.cmd, ["/hello"]);
    assert_eq!(
        std::fs::read(s.rootfs(&img).unwrap().join("hello")).unwrap(),
        b"world"
    );
    assert_eq!(s.get(&format!("127.0.0.1:{port}/app:1")), Some(img));
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("/token?")).count(),
        1,
        "{log:?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.contains("/blobs/"))
            .all(|l| l.ends_with("Bearer tok")),
        "{log:?}"
    );
    // Wrong credentials: the token endpoint refuses, and the error says where.
    let bad = Credentials {
        username: "u".into(),
        password: "x".into(),
    };
    let (dir2, s2) = store("badcreds");
    let e = pull(&s2, &format!("127.0.0.1:{port}/app:1"), Some(&bad)).unwrap_err();
    assert!(
        e.to_string().contains("token from") && e.to_string().contains("401"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[test]
fn a_corrupt_layer_is_refused_and_nothing_is_tagged() {
    let (routes, _, layer) = image_routes(true);
    let (port, _) = serve(routes, 20);
    let (dir, s) = store("corrupt");
    let creds = Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    let e = pull(&s, &format!("127.0.0.1:{port}/app:1"), Some(&creds)).unwrap_err();
    assert!(matches!(e, ImageError::Digest(_)), "{e}");
    assert!(s.get(&format!("127.0.0.1:{port}/app:1")).is_none());
    assert!(
        !s.blob_path(&digest(&layer)).unwrap().exists(),
        "the bad layer is not kept"
    );
    assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_registry_off_loopback_is_only_spoken_to_over_https() {
    let (dir, s) = store("remote");
    let e = super::http::Url::parse("http://192.0.2.1:1/v2/").unwrap_err();
    assert!(e.contains("HTTPS"), "{e}");
    // A registry with its own CA in certs.d is spoken to over HTTPS even on loopback: a
    // plain-HTTP server there fails the TLS handshake.
    let (routes, _, _) = image_routes(false);
    let (port, log) = serve(routes, 5);
    std::fs::create_dir_all(s.root().join(format!("certs.d/127.0.0.1:{port}"))).unwrap();
    let e = pull(&s, &format!("127.0.0.1:{port}/app:1"), None).unwrap_err();
    assert!(
        log.lock().unwrap().iter().all(|l| !l.starts_with("/v2/")),
        "no plain request: {e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
