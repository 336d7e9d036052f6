//! A CRI v1 client (DESIGN.md §5): unary gRPC over containerd's unix socket, with h2 for
//! HTTP/2 and prost for the messages, run on smol. No tonic, no tokio runtime.
//!
//! gRPC unary framing is small: a `POST /runtime.v1.<Service>/<Method>` with
//! `content-type: application/grpc`, a body of one length-prefixed message (1 byte "compressed"
//! flag, 4 bytes big-endian length, the protobuf), and the status in the trailers
//! (`grpc-status`, `grpc-message`) or, for errors without a body, in the headers.
//!
//! Every call has a deadline (sent as `grpc-timeout` and enforced locally). Calls share one
//! HTTP/2 connection and may overlap (one stream each); [`CriClient::drive`] polls the
//! connection for all of them. It is redialled after any transport error, so a restarted
//! containerd is picked up by the next call.

#![forbid(unsafe_code)]

mod compat;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use smol::future::FutureExt;
use smol::Async;

use crate::compat::Compat;

/// The CRI v1 messages this project uses (generated from `proto/cri.proto`).
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}

/// containerd's standard CRI socket.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
/// Largest response accepted (the CRI caps exec output at 16 MiB).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Deadline of ordinary calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of image pulls.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("bad CRI endpoint {0:?}: use unix:///path/to/socket")]
    Endpoint(String),
    #[error("cannot connect to the container runtime at {path}: {source} (is containerd running? set --cri-endpoint)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container runtime: HTTP/2: {0}")]
    Transport(String),
    #[error("container runtime: {method} timed out after {after:?}")]
    Timeout {
        method: &'static str,
        after: Duration,
    },
    #[error("container runtime refused {method}: {message} (gRPC status {code})")]
    Status {
        method: &'static str,
        code: u32,
        message: String,
    },
    #[error("container runtime sent a malformed {method} response: {why}")]
    Malformed { method: &'static str, why: String },
}

impl CriError {
    /// gRPC NOT_FOUND: the object the call names does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Status { code: 5, .. })
    }
}

impl From<h2::Error> for CriError {
    fn from(e: h2::Error) -> Self {
        CriError::Transport(e.to_string())
    }
}

type Driver = Pin<Box<dyn Future<Output = Result<(), h2::Error>>>>;
/// A new connection's generation and driver, handed from the dialling call to the driver.
type NewDriver = (u64, Driver);

/// A client for one runtime endpoint. Calls take `&self` and may run concurrently (HTTP/2
/// streams on one connection); the connection makes progress only while [`CriClient::drive`]
/// is polled beside them (one driver, so every call's wakers stay registered with the socket).
pub struct CriClient {
    path: PathBuf,
    /// The live connection's request handle and its generation.
    conn: RefCell<Option<(u64, h2::client::SendRequest<Bytes>)>>,
    generation: Cell<u64>,
    /// One dial at a time: concurrent calls after a failure share the new connection.
    dialing: smol::lock::Mutex<()>,
    /// New connections' drivers, for [`CriClient::drive`].
    drivers: (
        smol::channel::Sender<NewDriver>,
        smol::channel::Receiver<NewDriver>,
    ),
}
/// Accepts `unix:///path`, `unix:/path` or a plain path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CriError> {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if p.is_empty()
        || !p.starts_with('/')
        || endpoint.contains("://") && !endpoint.starts_with("unix://")
    {
        return Err(CriError::Endpoint(endpoint.to_owned()));
    }
    Ok(PathBuf::from(p))
}

/// gRPC's length-prefixed message framing.
fn frame(msg: &impl prost::Message) -> Bytes {
    let len = msg.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    msg.encode(&mut b).expect("BytesMut grows");
    b.freeze()
}

fn unframe<M: prost::Message + Default>(method: &'static str, body: &[u8]) -> Result<M, CriError> {
    let bad = |why: String| CriError::Malformed { method, why };
    if body.len() < 5 {
        return Err(bad(format!(
            "{} byte body, shorter than a gRPC frame header",
            body.len()
        )));
    }
    if body[0] != 0 {
        return Err(bad("compressed messages are not supported".into()));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = body.get(5..5 + len).ok_or_else(|| {
        bad(format!(
            "frame says {len} bytes, body has {}",
            body.len() - 5
        ))
    })?;
    M::decode(msg).map_err(|e| bad(e.to_string()))
}

fn grpc_status(method: &'static str, headers: &http::HeaderMap) -> Result<(), CriError> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code: u32 = code.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Err(CriError::Status {
        method,
        code,
        message,
    })
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CriClient {
    pub fn new(endpoint: &str) -> Result<Self, CriError> {
        Ok(CriClient {
            path: socket_path(endpoint)?,
            conn: RefCell::new(None),
            generation: Cell::new(0),
            dialing: smol::lock::Mutex::new(()),
            drivers: smol::channel::unbounded(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// Drives the HTTP/2 connection; never returns. Poll it beside every call (the pod loop
    /// does), or use [`CriClient::with`].
    pub async fn drive(&self) -> std::convert::Infallible {
        loop {
            let Ok((generation, driver)) = self.drivers.1.recv().await else {
                std::future::pending::<()>().await;
                continue;
            };
            if let Err(e) = driver.await {
                log::debug!("CRI connection to {} ended: {e}", self.path.display());
            }
            self.forget(generation);
        }
    }

    /// Runs `f` while driving the connection.
    pub async fn with<T>(&self, f: impl Future<Output = T>) -> T {
        f.or(async { match self.drive().await {} }).await
    }

    /// Drops connection `generation` so the next call redials.
    fn forget(&self, generation: u64) {
        let mut c = self.conn.borrow_mut();
        if c.as_ref().is_some_and(|(g, _)| *g == generation) {
            *c = None;
        }
    }

    fn current(&self) -> Option<(u64, h2::client::SendRequest<Bytes>)> {
        self.conn.borrow().clone()
    }

    async fn connected(&self) -> Result<(u64, h2::client::SendRequest<Bytes>), CriError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _dial = self.dialing.lock().await;
        if let Some(c) = self.current() {
            return Ok(c); // another call dialled while this one waited
        }
        let io = Async::<UnixStream>::connect(&self.path)
            .await
            .map_err(|source| CriError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let (send, connection) = h2::client::handshake(Compat(io)).await?;
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        *self.conn.borrow_mut() = Some((generation, send.clone()));
        let _ = self.drivers.0.try_send((generation, Box::pin(connection)));
        Ok((generation, send))
    }

    /// One unary call with a deadline.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        method: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CriError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let path = format!("http://localhost/runtime.v1.{service}/{method}");
        let body = frame(req);
        let generation = Cell::new(None);
        let work = async {
            let (g, send) = self.connected().await?;
            generation.set(Some(g));
            let mut send = send.ready().await?;
            let request = http::Request::builder()
                .method("POST")
                .uri(path.as_str())
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", format!("{}m", timeout.as_millis()))
                .body(())
                .map_err(|e| CriError::Transport(e.to_string()))?;
            let (response, mut stream) = send.send_request(request, false)?;
            stream.send_data(body, true)?;
            let response = response.await?;
            let (parts, mut recv) = response.into_parts();
            if parts.status != http::StatusCode::OK {
                return Err(CriError::Transport(format!("HTTP status {}", parts.status)));
            }
            grpc_status(method, &parts.headers)?;
            let mut buf = BytesMut::new();
            while let Some(chunk) = recv.data().await {
                let chunk = chunk?;
                let _ = recv.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_RESPONSE_BYTES {
                    return Err(CriError::Malformed {
                        method,
                        why: "response over 16 MiB".into(),
                    });
                }
            }
            if let Some(trailers) = recv.trailers().await? {
                grpc_status(method, &trailers)?;
            }
            unframe::<Resp>(method, &buf)
        };
        let result = work
            .or(async {
                smol::Timer::after(timeout).await;
                Err(CriError::Timeout {
                    method,
                    after: timeout,
                })
            })
            .await;
        // A transport failure redials next time; a slow call alone does not condemn a
        // connection other calls share.
        if matches!(result, Err(CriError::Transport(_))) {
            if let Some(g) = generation.get() {
                self.forget(g);
            }
        }
        result
    }

    pub async fn version(&self) -> Result<v1::VersionResponse, CriError> {
        self.call(
            "RuntimeService",
            "Version",
            &v1::VersionRequest {
                version: "v1".into(),
            },
            CALL_TIMEOUT,
        )
        .await
    }

    pub async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig) -> Result<String, CriError> {
        let req = v1::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        // Creating a sandbox may include pulling the sandbox image.
        let r: v1::RunPodSandboxResponse = self
            .call("RuntimeService", "RunPodSandbox", &req, PULL_TIMEOUT)
            .await?;
        Ok(r.pod_sandbox_id)
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let _: v1::StopPodSandboxResponse = self
            .call(
                "RuntimeService",
                "StopPodSandbox",
                &v1::StopPodSandboxRequest {
                    pod_sandbox_id: id.into(),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let _: v1::RemovePodSandboxResponse = self
            .call(
                "RuntimeService",
                "RemovePodSandbox",
                &v1::RemovePodSandboxRequest {
                    pod_sandbox_id: id.into(),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    pub async fn pod_sandbox_status(&self, id: &str) -> Result<v1::PodSandboxStatus, CriError> {
        let r: v1::PodSandboxStatusResponse = self
            .call(
                "RuntimeService",
                "PodSandboxStatus",
                &v1::PodSandboxStatusRequest {
                    pod_sandbox_id: id.into(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            )
            .await?;
        r.status.ok_or(CriError::Malformed {
            method: "PodSandboxStatus",
            why: "no status".into(),
        })
    }

    pub async fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> Result<Vec<v1::PodSandbox>, CriError> {
        let r: v1::ListPodSandboxResponse = self
            .call(
                "RuntimeService",
                "ListPodSandbox",
                &v1::ListPodSandboxRequest { filter },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(r.items)
    }

    pub async fn create_container(
        &self,
        sandbox: &str,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let r: v1::CreateContainerResponse = self
            .call("RuntimeService", "CreateContainer", &req, CALL_TIMEOUT)
            .await?;
        Ok(r.container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let _: v1::StartContainerResponse = self
            .call(
                "RuntimeService",
                "StartContainer",
                &v1::StartContainerRequest {
                    container_id: id.into(),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), CriError> {
        let req = v1::StopContainerRequest {
            container_id: id.into(),
            timeout: grace.as_secs() as i64,
        };
        let _: v1::StopContainerResponse = self
            .call(
                "RuntimeService",
                "StopContainer",
                &req,
                CALL_TIMEOUT + grace,
            )
            .await?;
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let _: v1::RemoveContainerResponse = self
            .call(
                "RuntimeService",
                "RemoveContainer",
                &v1::RemoveContainerRequest {
                    container_id: id.into(),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    pub async fn list_containers(
        &self,
        filter: Option<v1::ContainerFilter>,
    ) -> Result<Vec<v1::Container>, CriError> {
        let r: v1::ListContainersResponse = self
            .call(
                "RuntimeService",
                "ListContainers",
                &v1::ListContainersRequest { filter },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(r.containers)
    }

    pub async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, CriError> {
        let r: v1::ContainerStatusResponse = self
            .call(
                "RuntimeService",
                "ContainerStatus",
                &v1::ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            )
            .await?;
        r.status.ok_or(CriError::Malformed {
            method: "ContainerStatus",
            why: "no status".into(),
        })
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<v1::ExecSyncResponse, CriError> {
        let req = v1::ExecSyncRequest {
            container_id: id.into(),
            cmd,
            timeout: timeout.as_secs().max(1) as i64,
        };
        self.call(
            "RuntimeService",
            "ExecSync",
            &req,
            timeout + Duration::from_secs(5),
        )
        .await
    }

    pub async fn image_status(&self, image: &str) -> Result<Option<v1::Image>, CriError> {
        let req = v1::ImageStatusRequest {
            image: Some(v1::ImageSpec {
                image: image.into(),
                annotations: Default::default(),
            }),
            verbose: false,
        };
        let r: v1::ImageStatusResponse = self
            .call("ImageService", "ImageStatus", &req, CALL_TIMEOUT)
            .await?;
        Ok(r.image)
    }

    pub async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        let req = v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: image.into(),
                annotations: Default::default(),
            }),
            auth: None,
            sandbox_config: None,
        };
        let r: v1::PullImageResponse = self
            .call("ImageService", "PullImage", &req, PULL_TIMEOUT)
            .await?;
        Ok(r.image_ref)
    }

    pub async fn list_images(&self) -> Result<Vec<v1::Image>, CriError> {
        let r: v1::ListImagesResponse = self
            .call(
                "ImageService",
                "ListImages",
                &v1::ListImagesRequest { filter: None },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(r.images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/tmp/c.sock").unwrap(),
            PathBuf::from("/tmp/c.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:1").is_err());
        assert!(socket_path("unix://relative").is_err());
        assert!(socket_path("").is_err());
    }

    #[test]
    fn framing_round_trips_and_rejects_garbage() {
        let m = v1::VersionResponse {
            version: "v1".into(),
            runtime_name: "containerd".into(),
            runtime_version: "1.6".into(),
            runtime_api_version: "v1".into(),
        };
        let f = frame(&m);
        assert_eq!(f[0], 0);
        assert_eq!(unframe::<v1::VersionResponse>("Version", &f).unwrap(), m);
        assert!(unframe::<v1::VersionResponse>("Version", &f[..3]).is_err());
        assert!(unframe::<v1::VersionResponse>("Version", &f[..f.len() - 1]).is_err());
        let mut compressed = f.to_vec();
        compressed[0] = 1;
        assert!(unframe::<v1::VersionResponse>("Version", &compressed).is_err());
    }

    #[test]
    fn status_in_headers_or_trailers() {
        let mut h = http::HeaderMap::new();
        assert!(grpc_status("X", &h).is_ok());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_status("X", &h).is_ok());
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert("grpc-message", "sandbox%20not%20found".parse().unwrap());
        let e = grpc_status("X", &h).unwrap_err();
        assert!(e.is_not_found());
        assert!(e.to_string().contains("sandbox not found"), "{e}");
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        smol::block_on(async {
            let c = CriClient::new("unix:///nonexistent/cri.sock").unwrap();
            let e = c.version().await.unwrap_err();
            assert!(matches!(e, CriError::Connect { .. }));
            assert!(e.to_string().contains("is containerd running"), "{e}");
        });
    }
}
