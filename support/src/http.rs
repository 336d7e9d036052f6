//! A minimal blocking HTTP/1.1 exchange: one request, one response, `Connection: close`.
//!
//! Enough for the enrollment endpoints and the admin API, which send small bodies. Responses
//! are bounded by [`MAX_RESPONSE_BYTES`] (upstream caps certificate bodies at 1 MiB).

use std::io::{Read, Write};

/// Largest response accepted, headers included.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    // Transparent: the IO error's text once, not again as its own source in `{:#}` chains.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("HTTP response over {0} bytes")]
    TooLarge(usize),
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `method path` with `headers` and `body` on `stream` and reads the whole response,
/// at most [`MAX_RESPONSE_BYTES`].
pub fn exchange<S: Read + Write>(
    stream: &mut S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    exchange_limited(
        stream,
        method,
        host,
        path,
        headers,
        body,
        MAX_RESPONSE_BYTES,
    )
}

/// [`exchange`] with a response of at most `max_response` bytes.
pub fn exchange_limited<S: Read + Write>(
    stream: &mut S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    max_response: usize,
) -> Result<Response, HttpError> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // TLS peers that close without close_notify: whatever arrived is judged below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > max_response {
            return Err(HttpError::TooLarge(max_response));
        }
        if let Some(resp) = complete(&buf)? {
            return Ok(resp);
        }
    }
    complete(&buf)?.ok_or_else(|| {
        HttpError::Malformed("connection closed before the response was complete".into())
    })
}

/// Parses `buf` if it holds a whole response (by Content-Length, or everything if absent and
/// the stream ended — the caller decides that by calling again after EOF).
fn complete(buf: &[u8]) -> Result<Option<Response>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp
        .parse(buf)
        .map_err(|e| HttpError::Malformed(e.to_string()))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = &buf[head_len..];
    match len {
        Some(n) if body.len() >= n => Ok(Some(Response {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) => Ok(None),
        None => Ok(Some(Response {
            status,
            body: body.to_vec(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    struct Pipe {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Pipe {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(b)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.output.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn request_and_response() {
        let mut p = Pipe {
            input: Cursor::new(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\nbadEXTRA".to_vec(),
            ),
            output: vec![],
        };
        let r = exchange(
            &mut p,
            "GET",
            "h",
            "/edge.crt",
            &[("NodeName", "e")],
            b"csr",
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.body, b"bad");
        let sent = String::from_utf8(p.output).unwrap();
        assert!(sent.starts_with("GET /edge.crt HTTP/1.1\r\n"));
        assert!(sent.contains("NodeName: e\r\n"));
        assert!(sent.ends_with("\r\n\r\ncsr"));
    }

    #[test]
    fn truncated_and_garbage_responses_are_errors() {
        let mut p = Pipe {
            input: Cursor::new(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
            output: vec![],
        };
        assert!(exchange(&mut p, "GET", "h", "/", &[], b"").is_err());
        let mut p = Pipe {
            input: Cursor::new(b"\x00\x01garbage\r\n\r\n".to_vec()),
            output: vec![],
        };
        assert!(matches!(
            exchange(&mut p, "GET", "h", "/", &[], b""),
            Err(HttpError::Malformed(_))
        ));
    }
}
