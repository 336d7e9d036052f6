//! An upstream-shaped test edge: a mutual-TLS WebSocket client with upstream edgecore's URL
//! and headers (§3.2), driven frame by frame by the test, standing for an unmodified upstream
//! edgecore where the real one cannot run here. Tests send what upstream's modules send
//! (shapes from `../shared/reference/upstream-edgecore-frames.jsonl` and upstream's source)
//! and assert on what the cloud answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::Message as Ws;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use proto::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use smol::future::FutureExt;
use smol::stream::StreamExt;

use crate::{Cloud, Edge};

pub type Tunnel =
    async_tungstenite::WebSocketStream<futures_rustls::client::TlsStream<smol::net::TcpStream>>;

/// The TLS settings of an enrolled edge's data dir.
pub fn tls(edge: &Edge) -> Arc<ClientConfig> {
    let pki = edge.dir.path().join("pki");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.join("ca.crt")).unwrap())
        .unwrap();
    let certs = vec![CertificateDer::from_pem_file(pki.join("edge.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.join("edge.key")).unwrap();
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap(),
    )
}

/// Opens the tunnel as upstream edgecore does: `wss://<cloud>/<project>/<node>/events` with
/// Go's canonicalised `Node_id`, `Project_id` and `Connectionuse` headers.
pub async fn connect(cloud: &Cloud, edge: &Edge) -> Tunnel {
    let tcp = smol::net::TcpStream::connect(cloud.ws).await.unwrap();
    let tls = futures_rustls::TlsConnector::from(tls(edge))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let mut req = format!(
        "wss://{}/{}/{}/events",
        cloud.ws,
        proto::DEFAULT_PROJECT_ID,
        edge.name
    )
    .into_client_request()
    .unwrap();
    let h = req.headers_mut();
    h.insert("Node_id", HeaderValue::from_str(&edge.name).unwrap());
    h.insert(
        "Project_id",
        HeaderValue::from_static(proto::DEFAULT_PROJECT_ID),
    );
    h.insert("Connectionuse", HeaderValue::from_static("msg"));
    async_tungstenite::client_async(req, tls).await.unwrap().0
}

/// What the tunnel delivered next.
#[derive(Debug)]
pub enum Frame {
    Msg(Box<Message>),
    Close,
    Timeout,
}

/// A blocking wrapper for tests: one upstream-shaped edge connection.
pub struct TestEdge {
    ws: Tunnel,
    /// Every message received, in order.
    pub seen: Vec<Message>,
}

impl TestEdge {
    pub fn connect(cloud: &Cloud, edge: &Edge) -> TestEdge {
        TestEdge {
            ws: smol::block_on(connect(cloud, edge)),
            seen: Vec::new(),
        }
    }

    /// Writes one message as gorilla's `WriteJSON` does (JSON and a newline, text frame).
    pub fn send(&mut self, m: &Message) {
        smol::block_on(self.ws.send(Ws::text(m.encode()))).expect("send to the cloud");
    }

    /// Writes raw text (frames a `Message` cannot express).
    pub fn send_text(&mut self, text: &str) {
        smol::block_on(self.ws.send(Ws::text(text.to_owned()))).expect("send to the cloud");
    }

    /// The next message, Close frame, or nothing within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Frame {
        let ws = &mut self.ws;
        let f = smol::block_on(
            async {
                loop {
                    match ws.next().await {
                        Some(Ok(Ws::Text(t))) => {
                            return Frame::Msg(Box::new(
                                Message::decode(t.as_bytes(), 16 << 20).unwrap(),
                            ))
                        }
                        Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return Frame::Close,
                        Some(Ok(_)) => continue,
                    }
                }
            }
            .or(async {
                smol::Timer::after(timeout).await;
                Frame::Timeout
            }),
        );
        if let Frame::Msg(m) = &f {
            self.seen.push((**m).clone());
        }
        f
    }

    /// Reads until a message satisfying `pred` arrives (others are kept in [`TestEdge::seen`]).
    pub fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Frame::Msg(m) if pred(&m) => return *m,
                Frame::Msg(_) => continue,
                Frame::Close => panic!("the cloud closed the tunnel while waiting for {what}"),
                Frame::Timeout => panic!(
                    "timed out after {timeout:?} waiting for {what}; received: {:#?}",
                    self.seen
                        .iter()
                        .map(|m| (
                            &m.route.operation,
                            &m.route.resource,
                            &m.header.resourceversion
                        ))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Acknowledges a push as upstream's metamanager does (`response`, `"OK"`).
    pub fn ack(&mut self, m: &Message) {
        let a = m.ack(0);
        self.send(&a);
    }
}
