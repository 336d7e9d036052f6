//! Registry credentials from a pod's `imagePullSecrets`, as kubelet reads them: secrets of
//! type `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`: `{"auths": {host: …}}`) or
//! `kubernetes.io/dockercfg` (`.dockercfg`: `{host: …}`), each entry a `username` and
//! `password` or an `auth` of `base64(user:password)`. Sans-IO: secrets in, credentials out.

use base64::Engine;
use bus::DesiredPods;
use serde_json::Value;

use super::runtime::RegistryAuth;
use super::volumes::object_data;

/// `https://index.docker.io/v1/` → `index.docker.io`; `127.0.0.1:5000/x` → `127.0.0.1:5000`.
pub fn registry_host(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        // Docker Hub's names all mean the one registry.
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_owned(),
    }
}

fn entry(host: &str, v: &Value) -> Option<RegistryAuth> {
    let (mut user, mut pass) = (
        v["username"].as_str().unwrap_or("").to_owned(),
        v["password"].as_str().unwrap_or("").to_owned(),
    );
    if let Some(auth) = v["auth"].as_str().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        (user, pass) = (u.to_owned(), p.to_owned());
    }
    (!user.is_empty()).then(|| RegistryAuth {
        registry: registry_host(host),
        username: user,
        password: pass,
    })
}

/// The credentials of `names` (secrets of `namespace`); secrets that are missing or not
/// registry credentials give none, as kubelet only logs them.
pub fn credentials(desired: &DesiredPods, namespace: &str, names: &[String]) -> Vec<RegistryAuth> {
    let mut out = Vec::new();
    for name in names {
        let Some(secret) = desired.secrets.get(&(namespace.to_owned(), name.clone())) else {
            continue;
        };
        let data = object_data(secret, true);
        let (auths, nested) = match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
            (Some(j), _) => (j, true),
            (None, Some(c)) => (c, false),
            _ => continue,
        };
        let Ok(v) = serde_json::from_slice::<Value>(auths) else {
            continue;
        };
        let map = if nested { &v["auths"] } else { &v };
        for (host, e) in map.as_object().into_iter().flatten() {
            out.extend(entry(host, e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::rc::Rc;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn both_secret_formats_give_credentials_by_registry() {
        let mut d = DesiredPods::default();
        let cfg = json!({"auths": {
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"auth": b64("hub:secret:with:colons")}}})
        .to_string();
        d.secrets.insert(
            ("default".into(), "reg".into()),
            Rc::new(json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(&cfg)}})),
        );
        let old = json!({"quay.io": {"auth": b64("q:w")}}).to_string();
        d.secrets.insert(
            ("default".into(), "old".into()),
            Rc::new(json!({"data": {".dockercfg": b64(&old)}})),
        );
        d.secrets.insert(
            ("default".into(), "other".into()),
            Rc::new(json!({"data": {"password": b64("x")}})),
        );
        let names: Vec<String> = ["reg", "old", "other", "absent"].map(String::from).to_vec();
        let mut got = credentials(&d, "default", &names);
        got.sort_by(|a, b| a.registry.cmp(&b.registry));
        let flat: Vec<(&str, &str, &str)> = got
            .iter()
            .map(|a| {
                (
                    a.registry.as_str(),
                    a.username.as_str(),
                    a.password.as_str(),
                )
            })
            .collect();
        assert_eq!(
            flat,
            [
                ("127.0.0.1:5000", "u", "p"),
                ("docker.io", "hub", "secret:with:colons"),
                ("quay.io", "q", "w"),
            ]
        );
        assert!(
            credentials(&d, "other-ns", &names).is_empty(),
            "secrets are per namespace"
        );
    }
}
