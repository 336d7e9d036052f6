//! Edged's pods: the reconciler ([`plan`]), sans-IO and written once, drives any runtime
//! behind the [`runtime::Runtime`] port (CRI today: [`cri_runtime`]); [`run`] is the thin
//! runner that observes the runtime, executes the planned operations and probes, and sends
//! statuses and deletion confirmations ([`report`]).
//!
//! Operations of different pods run at the same time (at most [`MAX_OPS`]), so a slow image
//! pull or a 30 s graceful stop never delays another pod; a pod has one operation at a time.
//! The desired pods and the link arrive in latest-value cells, so a burst of changes is one
//! pass and the node loop never waits on this one.

pub mod cri_runtime;
#[cfg(feature = "direct")]
pub mod direct;
pub mod env;
pub mod plan;
pub mod pull_secrets;
pub mod report;
pub mod runtime;
pub mod spec;
pub mod status;
pub mod volumes;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use bus::{Bus, DesiredPods, Outcome, RequestId, Shutdown, Watch};
use futures_util::stream::{FuturesUnordered, StreamExt};
use smol::future::FutureExt;

use self::plan::{Action, Failure, Op, ProbeRun, Reconciler};
use self::runtime::{Runtime, Snapshot};
use self::spec::{Probe, ProbeAction};

/// Pod operations running at once at most. Each is a few CRI calls (sandbox, pull, create,
/// start) that mostly wait on the runtime, so more at once cost little here; 4 made 20 pods
/// five waves (12.7 s to Running on containerd).
pub const MAX_OPS: usize = 16;
/// Probes running at once at most.
pub const MAX_PROBES: usize = 16;
/// Planning passes for changed desired pods are at least this far apart: a burst of
/// deliveries (1,000 pods, one commit each) is a few passes, not one pass per commit.
pub const MIN_PASS_GAP: Duration = Duration::from_millis(100);

/// What the pod loop tells the node loop about the runtime: its version once it answered,
/// or why it does not.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RuntimeHealth {
    #[default]
    Unknown,
    Up(String),
    Down(String),
    /// No runtime is configured: pods cannot run here.
    None,
}

/// The inputs of the pod loop, all written without waiting by the node loop.
pub struct Inputs {
    pub desired: Rc<Watch<Rc<DesiredPods>>>,
    /// The node's address while connected, the last one while not (`None` before any).
    pub link: Rc<Watch<(bool, Option<String>)>>,
    /// Answers to the pod loop's requests; bounded by the reporter's one request per pod.
    pub replies: smol::channel::Receiver<(RequestId, Outcome)>,
    pub health: Rc<Watch<RuntimeHealth>>,
}

/// Settings of the direct runtime (the `direct` feature).
#[derive(Clone, Debug, PartialEq)]
pub struct DirectConfig {
    /// edgecore's data dir (`direct/` and `images/` are made in it).
    pub data_dir: PathBuf,
    /// The OCI runtime binary.
    pub oci_runtime: PathBuf,
}

/// Pod loop settings.
pub struct PodConfig {
    pub root: PathBuf,
    pub sync_period: Duration,
    pub reconciler: plan::ReconcilerConfig,
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

enum Done {
    Op {
        uid: String,
        failures: Vec<Failure>,
        volumes: Option<u64>,
    },
    Probe {
        run: ProbeRun,
        ok: bool,
    },
}

type Work<'a> = Pin<Box<dyn Future<Output = Done> + 'a>>;

/// Runs one operation's actions in order; a failed volume write or sandbox ends it.
async fn execute<R: Runtime>(rt: &R, root: &Path, op: Op) -> Done {
    let mut failures = Vec::new();
    let mut volumes = None;
    let pod_dir = root.join(&op.uid);
    for action in op.actions {
        match action {
            Action::WriteVolumes {
                volumes: v,
                fingerprint,
            } => {
                let unix = now_ns() / 1_000_000_000;
                let mut failed = None;
                for (name, content) in &v {
                    let dir = pod_dir.join("volumes").join(name);
                    let r = match content {
                        volumes::Content::Files(files) => {
                            volumes::write_atomic(&dir, files, unix).map(|_| ())
                        }
                        volumes::Content::EmptyDir => std::fs::create_dir_all(&dir),
                        volumes::Content::HostPath(_) => Ok(()),
                    };
                    if let Err(e) = r {
                        failed = Some(format!(
                            "MountVolume.SetUp failed for volume \"{name}\" : {e}"
                        ));
                        break;
                    }
                }
                match failed {
                    Some(m) => {
                        failures.push(Failure::Volumes(m));
                        break;
                    }
                    None => volumes = Some(fingerprint),
                }
            }
            Action::RunSandbox(s) => match rt.run_sandbox(&s).await {
                Ok(id) => log::info!(
                    "pod {}/{}: sandbox {} started",
                    s.namespace,
                    s.name,
                    &id[..12.min(id.len())]
                ),
                Err(e) => {
                    failures.push(Failure::Sandbox(e));
                    break;
                }
            },
            Action::StopSandbox(id) => {
                if let Err(e) = rt.stop_sandbox(&id).await {
                    failures.push(Failure::Other(format!("stopping sandbox {id}: {e}")));
                }
            }
            Action::RemoveSandbox(id) => {
                if let Err(e) = rt.remove_sandbox(&id).await {
                    failures.push(Failure::Other(format!("removing sandbox {id}: {e}")));
                }
            }
            Action::StopContainers(list) => {
                let results = futures_util::future::join_all(
                    list.iter().map(|(id, grace)| rt.stop_container(id, *grace)),
                )
                .await;
                for ((id, _), r) in list.iter().zip(results) {
                    if let Err(e) = r {
                        failures.push(Failure::Other(format!("stopping container {id}: {e}")));
                    }
                }
            }
            Action::RemoveContainer(id) => {
                if let Err(e) = rt.remove_container(&id).await {
                    failures.push(Failure::Other(format!("removing container {id}: {e}")));
                }
            }
            Action::StartContainer {
                sandbox_id,
                sandbox,
                container,
            } => match rt.start_container(&sandbox_id, &sandbox, &container).await {
                Ok(_) => log::info!(
                    "pod {}/{}: container {} started (attempt {})",
                    sandbox.namespace,
                    sandbox.name,
                    container.name,
                    container.attempt
                ),
                Err(error) => failures.push(Failure::Start {
                    container: container.name.clone(),
                    error,
                }),
            },
            Action::RemovePodDir => {
                let _ = std::fs::remove_dir_all(&pod_dir);
            }
        }
    }
    Done::Op {
        uid: op.uid,
        failures,
        volumes,
    }
}

async fn probe<R: Runtime>(rt: &R, run: ProbeRun) -> Done {
    let ok = match &run.action {
        ProbeAction::Exec(cmd) => {
            matches!(rt.exec(&run.container_id, cmd, run.timeout).await, Ok(0))
        }
        ProbeAction::Tcp { port } => tcp_check(&run.host, *port, run.timeout, None).await,
        ProbeAction::Http { port, path } => {
            tcp_check(&run.host, *port, run.timeout, Some(path)).await
        }
    };
    Done::Probe { run, ok }
}

/// Hands finished work to the reconciler; true if it was a pod operation (the runtime
/// changed, so it must be observed again). `running` counts operations and probes.
fn took(
    d: Done,
    rec: &mut Reconciler,
    running: &mut (&mut usize, &mut usize),
    desired: &DesiredPods,
    snap: &Snapshot,
    epoch: u64,
    now: i64,
) -> bool {
    match d {
        Done::Op {
            uid,
            failures,
            volumes,
        } => {
            *running.0 = running.0.saturating_sub(1);
            rec.on_op_done(&uid, failures, volumes, epoch, now);
            true
        }
        Done::Probe { run, ok } => {
            *running.1 = running.1.saturating_sub(1);
            if let Some(p) = probe_of(desired, snap, &run) {
                rec.on_probe(&run.container_id, run.liveness, ok, &p, now);
            }
            false
        }
    }
}

/// The probe definition a probe run came from, in the current desired pods.
fn probe_of(desired: &DesiredPods, snap: &Snapshot, run: &ProbeRun) -> Option<Probe> {
    let c = snap.containers.iter().find(|c| c.id == run.container_id)?;
    let pod = desired
        .pods
        .iter()
        .find(|p| p["metadata"]["uid"].as_str() == Some(c.uid.as_str()))?;
    let spec = spec::PodSpec::parse(pod).ok()?;
    let sc = spec.containers.into_iter().find(|x| x.name == c.name)?;
    if run.liveness {
        sc.liveness
    } else {
        sc.readiness
    }
}

/// Runs the pods until shutdown. With `rt` `None` (no runtime configured) every pod's status
/// says so.
pub async fn run<R: Runtime>(
    rt: Option<&R>,
    cfg: PodConfig,
    inputs: Inputs,
    bus: &Bus,
    shutdown: &Shutdown,
) {
    let mut rec = Reconciler::new(cfg.reconciler.clone());
    let mut reporter = report::Reporter::default();
    let mut work: FuturesUnordered<Work<'_>> = FuturesUnordered::new();
    let mut queued: Vec<Op> = Vec::new();
    let mut probes_running = 0usize;
    let mut ops_running = 0usize;
    let (mut seen_desired, mut seen_link) = (u64::MAX, u64::MAX);
    let mut desired = inputs.desired.get();
    let mut node_ip = String::new();
    let mut snap = Snapshot::default();
    let mut epoch = 0u64;
    let mut runtime_problem: Option<String> = None;
    let mut observe = true;
    // When the last planning pass ran, and whether changed desired pods wait for the next.
    let mut last_pass = std::time::Instant::now() - MIN_PASS_GAP;
    let mut desired_pending = false;
    let mut ticker = smol::Timer::interval(cfg.sync_period.max(Duration::from_millis(100)));
    match rt {
        Some(r) => match r.version().await {
            Ok(v) => {
                log::info!("container runtime {v}");
                rec.set_runtime(&v);
                inputs.health.set(RuntimeHealth::Up(v));
            }
            Err(e) => {
                log::warn!("{e}; pods wait for the runtime");
                inputs.health.set(RuntimeHealth::Down(e));
            }
        },
        None => inputs.health.set(RuntimeHealth::None),
    }
    loop {
        // Start what is queued, within the bound.
        while ops_running < MAX_OPS && !queued.is_empty() {
            let op = queued.remove(0);
            if let Some(r) = rt {
                ops_running += 1;
                work.push(Box::pin(execute(r, &cfg.root, op)));
            }
        }
        let due_ns = rec.next_due_ns(&snap, now_ns());
        let due_ms = reporter.next_due_ms();
        let wake_at = {
            let now = now_ns();
            let mut d = Duration::from_secs(3600);
            if let Some(t) = due_ns {
                d = d.min(Duration::from_nanos((t - now).max(0) as u64));
            }
            if let Some(t) = due_ms {
                d = d.min(Duration::from_millis((t - now / 1_000_000).max(0) as u64));
            }
            if desired_pending {
                d = d.min(MIN_PASS_GAP.saturating_sub(last_pass.elapsed()));
            }
            d
        };
        enum Ev {
            Desired(Rc<DesiredPods>),
            Link((bool, Option<String>)),
            Reply(RequestId, Outcome),
            Done(Done),
            Tick,
            Due,
            Stop,
        }
        let ev = async { Ev::Desired(inputs.desired.changed(&mut seen_desired).await) }
            .or(async { Ev::Link(inputs.link.changed(&mut seen_link).await) })
            .or(async {
                match inputs.replies.recv().await {
                    Ok((id, o)) => Ev::Reply(id, o),
                    Err(_) => Ev::Stop,
                }
            })
            .or(async {
                if work.is_empty() {
                    std::future::pending::<()>().await;
                }
                match work.next().await {
                    Some(d) => Ev::Done(d),
                    None => std::future::pending().await,
                }
            })
            .or(async {
                ticker.next().await;
                Ev::Tick
            })
            .or(async {
                smol::Timer::after(wake_at).await;
                Ev::Due
            })
            .or(async {
                shutdown.wait().await;
                Ev::Stop
            })
            .await;
        let now = now_ns();
        match ev {
            Ev::Stop => return,
            Ev::Desired(d) => {
                desired = d;
                if last_pass.elapsed() < MIN_PASS_GAP {
                    // A burst of deliveries: one pass for all of it, soon.
                    desired_pending = true;
                    continue;
                }
                observe = true;
            }
            Ev::Link((connected, ip)) => {
                if let Some(ip) = ip {
                    node_ip = ip;
                }
                reporter.link(connected);
                observe = true;
            }
            Ev::Reply(id, outcome) => {
                // An answer needs no pass: take every answer waiting, send what is next.
                reporter.on_reply(id, &outcome, now / 1_000_000);
                while let Ok((id, outcome)) = inputs.replies.try_recv() {
                    reporter.on_reply(id, &outcome, now / 1_000_000);
                }
                if !crate::to_cloud(bus, reporter.poll(now / 1_000_000)).await {
                    return;
                }
                continue;
            }
            Ev::Done(d) => {
                let mut running = (&mut ops_running, &mut probes_running);
                let mut op_done = took(d, &mut rec, &mut running, &desired, &snap, epoch, now);
                // Work finishing together is one observation, not one each (each is a
                // listing and a status call per container).
                while let Some(Some(d)) = futures_util::FutureExt::now_or_never(work.next()) {
                    op_done |= took(d, &mut rec, &mut running, &desired, &snap, epoch, now);
                }
                observe |= op_done;
            }
            Ev::Tick | Ev::Due => observe = true,
        }
        let act = match rt {
            Some(r) if observe => {
                epoch += 1;
                match r.observe().await {
                    Ok(s) => {
                        snap = s;
                        if runtime_problem.take().is_some() {
                            log::info!("container runtime reachable again");
                            if let Ok(v) = r.version().await {
                                rec.set_runtime(&v);
                                inputs.health.set(RuntimeHealth::Up(v));
                            }
                        } else if matches!(inputs.health.get(), RuntimeHealth::Down(_)) {
                            if let Ok(v) = r.version().await {
                                rec.set_runtime(&v);
                                inputs.health.set(RuntimeHealth::Up(v));
                            }
                        }
                        true
                    }
                    Err(e) => {
                        if runtime_problem.as_deref() != Some(e.as_str()) {
                            log::warn!("{e}; retrying");
                            inputs.health.set(RuntimeHealth::Down(e.clone()));
                            runtime_problem = Some(e);
                        }
                        false
                    }
                }
            }
            Some(_) => true,
            None => false,
        };
        observe = false;
        let problem = match rt {
            None => Some(
                "no container runtime is configured on this node (edgecore join --cri-endpoint)"
                    .to_owned(),
            ),
            Some(_) => runtime_problem
                .as_ref()
                .map(|e| format!("the container runtime is unreachable: {e}")),
        };
        let plan = rec.plan(
            &desired,
            &snap,
            plan::Pass {
                epoch,
                node_ip: &node_ip,
                now_ns: now,
                act,
                runtime_problem: problem.as_deref(),
            },
        );
        queued.extend(plan.ops);
        if let Some(r) = rt {
            for p in plan.probes {
                if probes_running >= MAX_PROBES {
                    break; // due again on the next pass
                }
                probes_running += 1;
                work.push(Box::pin(probe(r, p)));
            }
        }
        reporter.offer(&plan.reports);
        if !crate::to_cloud(bus, reporter.poll(now / 1_000_000)).await {
            return;
        }
        last_pass = std::time::Instant::now();
        desired_pending = false;
        // A pass over many pods is the longest stretch of work on edgecore's one thread:
        // let every other task run before the next, whatever is ready.
        smol::future::yield_now().await;
    }
}

/// A TCP probe, or an HTTP GET probe when `path` is given (2xx/3xx is success).
async fn tcp_check(host: &str, port: u16, timeout: Duration, path: Option<&str>) -> bool {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let check = async {
        let mut s = smol::net::TcpStream::connect(addr).await.ok()?;
        let Some(path) = path else { return Some(true) };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let line = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    check
        .or(async {
            smol::Timer::after(timeout).await;
            None
        })
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_http_probes() {
        smol::block_on(async {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for s in l.incoming().take(2).flatten() {
                    use std::io::{Read, Write};
                    let mut s = s;
                    let mut b = [0u8; 256];
                    let _ = s.read(&mut b);
                    let _ = s.write_all(b"HTTP/1.1 503 Unavailable\r\n\r\n");
                }
            });
            assert!(tcp_check("127.0.0.1", port, Duration::from_secs(2), None).await);
            assert!(
                !tcp_check("127.0.0.1", port, Duration::from_secs(2), Some("/healthz")).await,
                "503 is a failure"
            );
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            assert!(!tcp_check("127.0.0.1", closed, Duration::from_secs(2), None).await);
        });
    }
}
