//! The little HTTP/1.1 a registry pull needs: one GET per connection (`Connection: close`),
//! the head bounded and parsed with httparse, the body by `Content-Length`, chunked, or to
//! the close, streamed to the caller. HTTPS (rustls, the system's CA bundle plus a CA of
//! the registry's own from `certs.d/<host>/ca.crt`, Docker's convention), or plain HTTP to
//! loopback only, as the container runtimes allow insecure registries there by default.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// Where the system keeps its CA bundle (Debian, Fedora, Alpine/BusyBox images).
const SYSTEM_CAS: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Largest response head.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Connect, read and write deadline of every step.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed `http[s]://host[:port]/path?query`.
#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => return Err(format!("{url} is not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => (
                h.to_owned(),
                p.parse().map_err(|_| format!("{url}: bad port"))?,
            ),
            _ => (authority.to_owned(), if tls { 443 } else { 80 }),
        };
        if !tls && !is_loopback(&host) {
            return Err(format!(
                "{url}: plain HTTP is only used on loopback; this registry must speak HTTPS"
            ));
        }
        Ok(Url {
            tls,
            host,
            port,
            path: path.to_owned(),
        })
    }
}

/// Whether a registry host (`127.0.0.1:5000`, `localhost`) is on this machine.
pub fn is_loopback(host: &str) -> bool {
    let h = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// TLS settings for `host`: the system's CAs and the registry's own
/// (`<certs_dir>/<host[:port]>/ca.crt`).
pub fn tls_config(certs_dir: &Path, authority: &str) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let own: PathBuf = certs_dir.join(authority).join("ca.crt");
    for path in SYSTEM_CAS.iter().map(PathBuf::from).chain([own]) {
        let Ok(iter) = CertificateDer::pem_file_iter(&path) else {
            continue;
        };
        for c in iter.flatten() {
            // A bundle may hold certificates rustls cannot use; the others still count.
            let _ = roots.add(c);
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA certificates to verify {authority} with: install ca-certificates or put the registry's CA in {}/{authority}/ca.crt",
            certs_dir.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// `GET url` with `headers`; `tls` is the config for an https URL.
pub fn get(
    url: &Url,
    headers: &[(&str, String)],
    tls: Option<Arc<ClientConfig>>,
) -> Result<Response, String> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", url.host))?;
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut tcp: Box<dyn Stream> = match (url.tls, tls) {
        (false, _) => Box::new(tcp),
        (true, Some(cfg)) => {
            let host = url.host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{} is not a server name: {e}", url.host))?;
            let conn = ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
            Box::new(StreamOwned::new(conn, tcp))
        }
        (true, None) => return Err(format!("https://{} needs TLS settings", url.host)),
    };
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: edgecore\r\nConnection: close\r\n",
        url.path, url.host, url.port
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes())
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut r = BufReader::new(tcp);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let n = r
            .read_until(b'\n', &mut head)
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection in the response head"));
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(format!(
                "{addr} sent a response head over {MAX_HEAD_BYTES} bytes"
            ));
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hs);
    resp.parse(&head)
        .map_err(|e| format!("{addr} sent a bad response head: {e}"))?;
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body: Box<dyn Read> = if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        Box::new(Chunked {
            r,
            left: 0,
            done: false,
        })
    } else if let Some(len) = find("content-length").and_then(|l| l.trim().parse::<u64>().ok()) {
        Box::new(r.take(len))
    } else {
        Box::new(r)
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A chunked body.
struct Chunked<R> {
    r: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunked body");
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.r.by_ref().take(1024).read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| bad())?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad());
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.r.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_loopback_hosts() {
        let u = Url::parse("http://127.0.0.1:5000/v2/a/manifests/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 5000, "/v2/a/manifests/x?y=1")
        );
        assert_eq!(Url::parse("http://localhost").unwrap().port, 80);
        let u = Url::parse("https://registry.example.com/v2/").unwrap();
        assert_eq!((u.tls, u.port), (true, 443));
        let e = Url::parse("http://registry.example.com/v2/").unwrap_err();
        assert!(e.contains("HTTPS"), "{e}");
        assert!(Url::parse("ftp://x/").is_err());
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let mut c = Chunked {
            r: &raw[..],
            left: 0,
            done: false,
        };
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }
}
