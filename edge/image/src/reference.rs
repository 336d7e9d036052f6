//! Image references as the container runtimes normalise them: `busybox` is
//! `docker.io/library/busybox:latest`, a first component with a `.` or `:` (or `localhost`)
//! is a registry, a missing tag is `latest`, and `name@sha256:…` names a digest.

/// Normalises `reference`; `None` when it is not one.
pub fn normalize(reference: &str) -> Option<String> {
    let r = reference.trim();
    if r.is_empty()
        || r.chars()
            .any(|c| c.is_whitespace() || c.is_ascii_uppercase() && !r.contains('@'))
    {
        return None;
    }
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
    }
    // A tag is what follows the last `:` after the last `/`.
    let last = name.rsplit('/').next().unwrap_or(name);
    let (path, tag) = match last.split_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    if path.is_empty() || tag == Some("") {
        return None;
    }
    let first = path.split('/').next().unwrap_or("");
    let full = if path.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        path.to_owned()
    } else if path.contains('/') {
        format!("docker.io/{path}")
    } else {
        format!("docker.io/library/{path}")
    };
    Some(match (tag, digest) {
        (_, Some(d)) => format!("{full}@{d}"),
        (Some(t), None) => format!("{full}:{t}"),
        (None, None) => format!("{full}:latest"),
    })
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn references_normalise_as_the_runtimes_do() {
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize("me/app:1").unwrap(), "docker.io/me/app:1");
        assert_eq!(
            normalize("localhost/busybox:test").unwrap(),
            "localhost/busybox:test"
        );
        assert_eq!(
            normalize("127.0.0.1:5000/bb").unwrap(),
            "127.0.0.1:5000/bb:latest"
        );
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize(&d).unwrap(),
            format!("docker.io/library/busybox@sha256:{}", "a".repeat(64))
        );
        assert_eq!(normalize("busybox@sha256:abc"), None);
        assert_eq!(normalize("busy box"), None);
        assert_eq!(normalize("busybox:"), None);
        assert_eq!(normalize("Busybox"), None);
    }
}
