//! A private OCI registry for tests: Debian's `docker-registry` on a free loopback port,
//! storing under a temp dir, stopped by PID; images pushed into it with `skopeo` from the
//! archives the tests build.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{wait_for, Proc, TempDir};

pub struct Registry {
    pub dir: TempDir,
    pub proc: Option<Proc>,
    pub port: u16,
    /// `user:password` when the registry wants token auth.
    pub creds: Option<String>,
    /// The CA (PEM) of the registry's server certificate when it speaks HTTPS.
    pub ca_pem: Option<String>,
}

/// Docker Hub's token flow, on loopback: `GET /token?service=…&scope=…` with Basic
/// `user:password` answers a JWT (ES256, signed by a CA made here, with its certificate in
/// `x5c` as the registry's token auth checks it) granting the scope's actions (pushes, the
/// test's own, need no password). Serves at
/// most `MAX_TOKENS` requests, each read under a timeout.
fn token_server(dir: &Path, user: &str, password: &str) -> u16 {
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use std::io::{BufRead, BufReader, Write};
    const MAX_TOKENS: usize = 200;
    let ca = pki::Ca::load_or_create(&dir.join("token-ca")).unwrap();
    std::fs::write(dir.join("token-ca.pem"), ca.cert_pem()).unwrap();
    let key_pem = std::fs::read_to_string(dir.join("token-ca/ca.key")).unwrap();
    let key_der = pki::pem_to_der(&key_pem, "PRIVATE KEY").unwrap();
    let x5c = base64::engine::general_purpose::STANDARD.encode(ca.cert_der().as_ref());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key_der, &rng).unwrap();
        for s in listener.incoming().take(MAX_TOKENS) {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = v.trim().to_owned();
                    }
                }
            }
            let path = first.split(' ').nth(1).unwrap_or("");
            let query = path.split_once('?').map_or("", |(_, q)| q);
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(|v| {
                        v.replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",")
                    })
            };
            // skopeo 1.9 sends no credentials to a plain-HTTP token realm, so the test's
            // own pushes get their token without them; pulls need the password.
            let pushing = param("scope").is_some_and(|s| s.ends_with("push"));
            let (status, body) = if auth != want && !pushing {
                (
                    "401 Unauthorized",
                    r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_owned(),
                )
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let access: Vec<serde_json::Value> = param("scope")
                    .into_iter()
                    .filter_map(|sc| {
                        let mut p = sc.splitn(3, ':');
                        let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                        Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let claims = serde_json::json!({"iss": "e2e-issuer", "sub": "u", "aud": param("service").unwrap_or_default(),
                    "exp": now + 600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", fastrand_u64()), "access": access});
                let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [x5c]});
                let input = format!(
                    "{}.{}",
                    b64.encode(header.to_string()),
                    b64.encode(claims.to_string())
                );
                let sig = key.sign(&rng, input.as_bytes()).unwrap();
                let jwt = format!("{input}.{}", b64.encode(sig.as_ref()));
                (
                    "200 OK",
                    serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 600})
                        .to_string(),
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

impl Registry {
    pub fn start() -> Registry {
        Self::launch(None, false)
    }

    /// A registry that wants a token from its own token server, which wants `user:password`.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::launch(Some((user, password)), false)
    }

    /// A registry speaking HTTPS with a certificate for 127.0.0.1 from a CA made here
    /// ([`Registry::ca_pem`]).
    pub fn start_tls() -> Registry {
        Self::launch(None, true)
    }

    fn launch(auth: Option<(&str, &str)>, tls: bool) -> Registry {
        let dir = TempDir::new("registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: \"127.0.0.1:{port}\"}}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let tp = token_server(dir.path(), user, password);
            text.push_str(&format!(
                "auth:\n  token:\n    realm: \"http://127.0.0.1:{tp}/token\"\n    service: e2e-registry\n    issuer: e2e-issuer\n    rootcertbundle: {}\n",
                dir.path().join("token-ca.pem").display()
            ));
        }
        let mut ca_pem = None;
        if tls {
            let ca = pki::Ca::load_or_create(&dir.path().join("tls-ca")).unwrap();
            let (chain, key) = ca.issue_server_cert(&["127.0.0.1".to_owned()]).unwrap();
            let pem: String = chain
                .iter()
                .map(|c| pki::der_to_pem(c.as_ref(), "CERTIFICATE"))
                .collect();
            std::fs::write(dir.path().join("tls.crt"), pem).unwrap();
            std::fs::write(
                dir.path().join("tls.key"),
                pki::der_to_pem(key.secret_der(), "PRIVATE KEY"),
            )
            .unwrap();
            text = text.replace(
                &format!("http: {{addr: \"127.0.0.1:{port}\"}}\n"),
                &format!(
                    "http:\n  addr: \"127.0.0.1:{port}\"\n  tls: {{certificate: {}, key: {}}}\n",
                    dir.path().join("tls.crt").display(),
                    dir.path().join("tls.key").display()
                ),
            );
            ca_pem = Some(ca.cert_pem());
        }
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config);
        let proc = Proc::spawn(cmd);
        wait_for("the registry listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Registry {
            dir,
            proc: Some(proc),
            port,
            creds: auth.map(|(u, p)| format!("{u}:{p}")),
            ca_pem,
        }
    }

    /// `127.0.0.1:<port>/<name>`.
    pub fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }

    /// Pushes an OCI archive as `name`, its layers gzip-compressed on the way.
    pub fn push(&self, archive: &Path, name: &str) {
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-compress-format",
                "gzip",
                "--dest-compress",
            ])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}", self.image(name)))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the registry (SIGKILL, as a registry host going away).
    pub fn stop(&mut self) {
        self.proc.take();
    }
}
