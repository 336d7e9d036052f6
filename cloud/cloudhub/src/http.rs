//! A minimal async HTTP/1.1 server side: read one bounded request, write one response, close.
//! Used by the certificate endpoint and cloudcore's admin API, which need nothing more.

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    #[error("request head over {0} bytes")]
    HeadTooLarge(usize),
    /// The head was refused before the body was read (by `check` of [`read_request_checked`]).
    #[error("{1}")]
    Refused(u16, String),
}

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A header by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token of an `Authorization: Bearer …` header.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// Reads one request with a body of at most `max_body` bytes.
pub async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    max_body: usize,
) -> Result<Request, RequestError> {
    read_request_checked(s, max_body, |_| Ok(())).await
}

/// Reads one request, giving its head (an empty body) to `check` before reading the body: a
/// request that is refused costs its head, never its body (an unauthenticated client cannot
/// make the server buffer megabytes).
pub async fn read_request_checked<S: AsyncRead + Unpin>(
    s: &mut S,
    max_body: usize,
    check: impl FnOnce(&Request) -> Result<(), (u16, String)>,
) -> Result<Request, RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Never read past the head limit while the head is incomplete.
        let room = (MAX_HEAD_BYTES + 1)
            .saturating_sub(buf.len())
            .clamp(1, chunk.len());
        let n = s.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(RequestError::Malformed(
                "connection closed mid-request".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req
            .parse(&buf)
            .map_err(|e| RequestError::Malformed(e.to_string()))?
        {
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(RequestError::HeadTooLarge(MAX_HEAD_BYTES));
                }
            }
            // A head that completes in the read that crossed the limit is still over it.
            httparse::Status::Complete(head) if head > MAX_HEAD_BYTES => {
                return Err(RequestError::HeadTooLarge(MAX_HEAD_BYTES));
            }
            httparse::Status::Complete(head) => {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| {
                        v.trim()
                            .parse::<usize>()
                            .map_err(|_| RequestError::Malformed("bad Content-Length".into()))
                    })
                    .transpose()?
                    .unwrap_or(0);
                if len > max_body {
                    return Err(RequestError::TooLarge(max_body));
                }
                let method = req.method.unwrap_or("").to_owned();
                let path = req.path.unwrap_or("").to_owned();
                let mut request = Request {
                    method,
                    path,
                    headers,
                    body: Vec::new(),
                };
                check(&request).map_err(|(code, why)| RequestError::Refused(code, why))?;
                let mut body = buf[head..].to_vec();
                while body.len() < len {
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(RequestError::Malformed("connection closed mid-body".into()));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                request.body = body;
                return Ok(request);
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Writes a complete response and flushes it.
pub async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await?;
    s.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_head_and_body_and_bounds_both() {
        smol::block_on(async {
            let raw = b"GET /edge.crt HTTP/1.1\r\nNodeName: e\r\nAuthorization: Bearer abc\r\nContent-Length: 3\r\n\r\nxyz".to_vec();
            let r = read_request(&mut smol::io::Cursor::new(raw), 10)
                .await
                .unwrap();
            assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/edge.crt"));
            assert_eq!(r.header("nodename"), Some("e"));
            assert_eq!(r.bearer(), Some("abc"));
            assert_eq!(r.body, b"xyz");
            let big = b"GET / HTTP/1.1\r\nContent-Length: 11\r\n\r\n".to_vec();
            assert!(matches!(
                read_request(&mut smol::io::Cursor::new(big), 10).await,
                Err(RequestError::TooLarge(10))
            ));
            let cut = b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab".to_vec();
            assert!(read_request(&mut smol::io::Cursor::new(cut), 10)
                .await
                .is_err());
            // Heads up to the limit pass, a byte more does not, wherever the reads end.
            let head = |len: usize| {
                let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
                h.resize(len - 4, b'a');
                h.extend_from_slice(b"\r\n\r\n");
                h
            };
            assert!(
                read_request(&mut smol::io::Cursor::new(head(MAX_HEAD_BYTES)), 0)
                    .await
                    .is_ok()
            );
            for len in [MAX_HEAD_BYTES + 1, 18 << 10, 20 << 10] {
                assert!(matches!(
                    read_request(&mut smol::io::Cursor::new(head(len)), 0).await,
                    Err(RequestError::HeadTooLarge(MAX_HEAD_BYTES))
                ));
            }
            let junk = b"\x16\x03\x01garbage\r\n\r\n".to_vec();
            assert!(matches!(
                read_request(&mut smol::io::Cursor::new(junk), 10).await,
                Err(RequestError::Malformed(_))
            ));
        });
    }

    #[test]
    fn heads_over_the_limit_are_refused_however_they_arrive() {
        smol::block_on(async {
            // One complete 20 KiB head (the old check looked only at incomplete heads).
            let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20 << 10));
            let mut c = smol::io::Cursor::new(head.into_bytes());
            assert!(matches!(
                read_request(&mut c, 1024).await,
                Err(RequestError::HeadTooLarge(MAX_HEAD_BYTES))
            ));
            // Just under the limit is fine.
            let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(15 << 10));
            let mut c = smol::io::Cursor::new(head.into_bytes());
            assert!(read_request(&mut c, 1024).await.is_ok());
        });
    }

    #[test]
    fn a_refused_head_costs_no_body() {
        smol::block_on(async {
            let head = "POST /api/v1/apply HTTP/1.1\r\nContent-Length: 8388608\r\n\r\n";
            let mut bytes = head.as_bytes().to_vec();
            bytes.extend(vec![b'x'; 8 << 20]);
            let mut c = smol::io::Cursor::new(bytes);
            let r = read_request_checked(&mut c, 16 << 20, |req| {
                assert!(req.body.is_empty());
                Err((401, "no".into()))
            })
            .await;
            assert!(matches!(r, Err(RequestError::Refused(401, _))));
            assert!(
                c.position() as usize <= head.len() + 4096,
                "read {} bytes of the body",
                c.position() as usize - head.len()
            );
        });
    }
}
