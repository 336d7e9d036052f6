//! `cloudcore`: the cloud side. `serve` runs CloudHub, the certificate endpoint and the admin
//! API on one single-threaded executor; the other commands are the operator's CLI.

#![forbid(unsafe_code)]

mod admin;
mod api;
mod apitokens;
mod cli;
mod manifest;
mod nodecli;
mod writes;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use lexopt::prelude::*;
use smol::stream::StreamExt;
use smol::{Async, LocalExecutor};
use support::cli::{duration, parsed, text, usage, UsageError};

const USAGE: &str = "\
cloudcore: the cloud side of a KubeEdge-compatible edge system

USAGE:
    cloudcore serve [OPTIONS]
    cloudcore token [--data-dir <DIR>] [--ttl <DURATION>] [--uses <N>] [--node-name <NAME>]
    cloudcore apply -f <FILE|-> [--data-dir <DIR>]
    cloudcore get <nodes|pods|configmaps|secrets> [NAME] [-n NS | -A] [-o json|yaml|wide]
    cloudcore describe <kind> <NAME> [-n NS]
    cloudcore delete <kind> <NAME> [-n NS] [--grace-period N] [--force] [--wait=false]
    cloudcore delete node <NAME>
    cloudcore get enrollments
    cloudcore kubeconfig [--data-dir <DIR>] [--user <NAME>] [--server <URL>] [--token]
    cloudcore api-token create --user <NAME> [--group <G>]... [--data-dir <DIR>]
    cloudcore api-token revoke <ID> [--data-dir <DIR>]
    cloudcore api-token list [--data-dir <DIR>]
    cloudcore --version

COMMANDS:
    serve   Run CloudHub (edge tunnel, port 10000), the certificate endpoint (10002), the
            Kubernetes API (6443, for kubectl: read-only for now) and the admin API
            (loopback). Makes the CA in <data-dir>/pki on first start.
    kubeconfig  Print a kubeconfig for kubectl: an admin client certificate (CN=<user>,
            O=system:masters, 365 days) from the CA in the data dir, the CA embedded, the
            server from the running cloudcore's first advertised address and API port.
            --token: a bearer token (as `api-token create --group system:masters`)
            instead of the certificate.
    api-token  Bearer tokens for the Kubernetes API: `create` prints a new one for a user
            and groups (kept only hashed, in <data-dir>/api-tokens), `revoke` ends one by
            its id (the part before the dot) from the next request on, `list` shows them.
    token   Print an enrollment token for `edgecore join` (works without a running server).
            A token enrolls only names nobody holds: a name already enrolled gets a
            certificate only by presenting its current one (renewal) or after
            `delete node`. Upstream's format: an upstream edgecore joins with it too.
    apply   Create or update pods, configmaps and secrets from Kubernetes YAML or JSON
            (several documents allowed). Nothing is stored if any document is invalid.
            Pods whose spec.nodeName names an edge node are delivered to it, with the
            configmaps and secrets they use, and kept in sync across disconnections.
    get     List objects as a table, or as Kubernetes JSON/YAML. `get enrollments`
            lists the names holding --node-limit slots (registered, or holding a
            certificate) with their certificates.
    describe  One object with its recent events (applied, delivered, status reported).
    delete  Delete an object; edges holding it remove it. A pod running on a node is
            deleted gracefully, as Kubernetes does: it shows Terminating while its node
            stops its containers (SIGTERM, then SIGKILL after the grace period) and is gone
            once the node confirms. Waits for that unless --wait=false.
            `delete node NAME` revokes the node's certificates (refused from then on
            on the tunnel and the certificate port), closes its session, removes its
            node and lease, deletes its pods, and frees the name and its --node-limit
            slot for a new `edgecore join`.

SERVE OPTIONS:
    --data-dir <DIR>              State directory [default: /var/lib/cloudcore]
    --bind <IP>                   Address for the edge-facing ports [default: 0.0.0.0]
    --ws-port <PORT>              CloudHub WebSocket port [default: 10000]
    --cert-port <PORT>            Certificate port [default: 10002]
    --api-port <PORT>             Kubernetes API port (TLS, client certificates) [default: 6443]
    --admin-bind <IP:PORT>        Admin API address [default: 127.0.0.1:10010]
    --advertise-address <ADDR>    IP or DNS name edges use to reach this cloud; put in the
                                  server certificate. Repeatable [default: 127.0.0.1, localhost]
    --keepalive-timeout <D>       Drop a session without keepalive for this long [default: 30s]
    --node-grace-period <D>       Report a silent node NotReady after this long [default: 40s]
    --node-limit <N>              Most node names held, registered or enrolled; `delete
                                  node` frees one [default: 500]
    --allow-node-labels           Let a node change its own labels and annotations (labels
                                  within Kubernetes' NodeRestriction rules: none under
                                  kubernetes.io or k8s.io but kubelet's own). Without it a
                                  node writes only its status, lease and its pods' status
    --edge-cert-validity <D>      Validity of the edge certificates issued; edges renew
                                  theirs at 70-90 % of it [default: 365d]
    --log-level <LEVEL>           error, warn, info, debug or trace [default: info]
    Ports may be 0 to pick free ones; the chosen addresses go to <data-dir>/cloudcore.addr.

TOKEN OPTIONS:
    --ttl <DURATION>              How long the token is valid [default: 24h]
    --uses <N>                    How many nodes it may enroll [default: any number];
                                  counted durably, across restarts
    --node-name <NAME>            The only node name it may enroll

KUBECONFIG OPTIONS:
    --user <NAME>                 The user named in the certificate [default: admin]
    --server <URL>                The API's address [default: https://<first advertised
                                  address>:<API port> of the running cloudcore]

CLIENT OPTIONS (apply, get, describe, delete):
    -f, --filename <FILE|->       Manifest to apply; - reads standard input
    -n, --namespace <NS>          Namespace [default: default]
    -A, --all-namespaces          List across namespaces
    -o, --output json|yaml|wide   Kubernetes JSON or YAML, or a wider table
    --data-dir <DIR>              Find the running cloudcore through its data dir
    --server <IP:PORT>            Or name its admin address (credential still read from the data dir)
    --grace-period <N>            delete: seconds a pod gets to stop [default: its
                                  terminationGracePeriodSeconds]; 0 needs --force
    --force                       delete: remove at once, without waiting for the node
    --wait[=true|false]           delete: wait until the object is gone [default: true]

EXIT CODES:
    0 success, 1 runtime failure, 2 bad command line
";

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cloudcore";

/// Writes an owner-only file atomically, naming the path on failure.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    support::write_atomic(path, data, 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn load_ca(data_dir: &Path) -> anyhow::Result<pki::Ca> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    Ok(pki::Ca::load_or_create(&data_dir.join("pki"))?)
}

fn cmd_serve(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut cfg = cloudhub::CloudHubConfig {
        bind: IpAddr::from([0, 0, 0, 0]),
        ws_port: 10000,
        cert_port: 10002,
        advertise: Vec::new(),
        keepalive_timeout: Duration::from_secs(30),
        node_limit: 500,
        node_grace: Duration::from_secs(40),
        edge_cert_validity: Duration::from_secs(pki::EDGE_CERT_DAYS as u64 * 86400),
        node_writes: Default::default(),
    };
    let mut admin_bind: SocketAddr = "127.0.0.1:10010".parse().expect("valid literal");
    let mut api_port: u16 = 6443;
    let mut level = log::LevelFilter::Info;
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => data_dir = PathBuf::from(p.value()?),
            Long("bind") => cfg.bind = parsed(p.value()?, "IP address")?,
            Long("ws-port") => cfg.ws_port = parsed(p.value()?, "port")?,
            Long("cert-port") => cfg.cert_port = parsed(p.value()?, "port")?,
            Long("admin-bind") => admin_bind = parsed(p.value()?, "IP:PORT address")?,
            Long("api-port") => api_port = parsed(p.value()?, "port")?,
            Long("advertise-address") => cfg.advertise.push(text(p.value()?)?),
            Long("keepalive-timeout") => cfg.keepalive_timeout = duration(p.value()?)?,
            Long("node-grace-period") => cfg.node_grace = duration(p.value()?)?,
            Long("node-limit") => cfg.node_limit = parsed(p.value()?, "number")?,
            Long("allow-node-labels") => cfg.node_writes.labels = true,
            Long("edge-cert-validity") => {
                cfg.edge_cert_validity = duration(p.value()?)?;
                if cfg.edge_cert_validity < Duration::from_secs(10) {
                    return usage("--edge-cert-validity must be at least 10s");
                }
            }
            Long("log-level") => {
                level = support::parse_level(&text(p.value()?)?).map_err(UsageError)?
            }
            Long("help") | Short('h') => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    if cfg.advertise.is_empty() {
        cfg.advertise = vec!["127.0.0.1".into(), "localhost".into()];
    }
    support::init_logger(level);
    let ca = load_ca(&data_dir)?;
    let token = Rc::new(admin::load_or_create_token(&data_dir)?);
    let store_path = data_dir.join("cloudcore.redb");
    let store = cloudstore::CloudStore::open(&store_path)
        .with_context(|| format!("cannot open the object store {}", store_path.display()))?;
    let api_tls = cloudhub::tls_acceptor(&ca, &cfg.advertise, false)?;
    let bound = cloudhub::bind(cfg.clone(), ca, store)?;
    let api_bind = SocketAddr::new(cfg.bind, api_port);
    let api_listener = Async::<TcpListener>::bind(api_bind)
        .with_context(|| format!("cannot listen on {api_bind}"))?;
    let admin_listener = Async::<TcpListener>::bind(admin_bind)
        .with_context(|| format!("cannot listen on {admin_bind}"))?;
    let addrs = admin::Addrs {
        ws: bound.ws_addr(),
        cert: bound.cert_addr(),
        admin: admin_listener.get_ref().local_addr()?,
        api: api_listener.get_ref().local_addr()?,
        advertise: cfg.advertise.clone(),
    };
    addrs.write(&data_dir)?;
    log::info!(
        "cloudcore {} serving: tunnel wss://{} certificates https://{} Kubernetes API https://{} admin http://{} (advertised as {})",
        env!("CARGO_PKG_VERSION"),
        addrs.ws,
        addrs.cert,
        addrs.api,
        addrs.admin,
        cfg.advertise.join(", ")
    );
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])?;
    let ex = Rc::new(LocalExecutor::new());
    let hub = bound.hub.clone();
    ex.spawn(bound.run(ex.clone())).detach();
    ex.spawn(admin::serve(hub.clone(), admin_listener, token, ex.clone()))
        .detach();
    let api_server = Rc::new(kubeapi::Server {
        address: server_address(&cfg.advertise[0], addrs.api.port()),
        build: env!("CARGO_PKG_VERSION").into(),
    });
    ex.spawn(api::serve(
        hub.clone(),
        api_listener,
        api_tls,
        api_server,
        Rc::new(data_dir.clone()),
        ex.clone(),
    ))
    .detach();
    smol::block_on(ex.run(async {
        if let Some(Ok(sig)) = signals.next().await {
            log::info!("received {sig:?}; shutting down");
        }
        // Close every tunnel properly (a WebSocket Close each) before the process ends.
        hub.sessions.close_all(Duration::from_secs(3)).await;
    }));
    hub.save_state();
    let _ = std::fs::remove_file(data_dir.join(admin::ADDR_FILE));
    Ok(())
}

fn cmd_token(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut ttl = Duration::from_secs(pki::DEFAULT_TOKEN_TTL_SECS as u64);
    let mut uses = None;
    let mut node = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => data_dir = PathBuf::from(p.value()?),
            Long("ttl") => ttl = duration(p.value()?)?,
            Long("uses") => {
                let n: u32 = parsed(p.value()?, "number")?;
                if n == 0 {
                    return usage("--uses must be at least 1");
                }
                uses = Some(n);
            }
            Long("node-name") => {
                let n = text(p.value()?)?;
                proto::validate_node_name(&n).map_err(UsageError)?;
                node = Some(n);
            }
            Long("help") | Short('h') => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    if ttl.is_zero() {
        return usage("--ttl must be longer than 0s");
    }
    let ca = load_ca(&data_dir)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs() as i64;
    let claims = pki::TokenClaims {
        exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        iat: Some(now),
        nbf: None,
        id: Some(pki::token::new_token_id()?),
        uses,
        node,
    };
    println!("{}", ca.issue_token(&claims));
    eprintln!(
        "valid until {}, {}, {}",
        proto::time::rfc3339(claims.exp),
        claims
            .uses
            .map_or("any number of uses".to_owned(), |n| format!("{n} use(s)")),
        claims
            .node
            .as_deref()
            .map_or("any node name".to_owned(), |n| format!("node {n:?} only"))
    );
    Ok(())
}

/// `host:port`, with an IPv6 address in brackets.
fn server_address(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// How long `cloudcore kubeconfig`'s certificates are valid.
const KUBECONFIG_CERT_DAYS: u64 = 365;

fn cmd_kubeconfig(mut p: lexopt::Parser) -> anyhow::Result<()> {
    use base64::Engine;
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut user = "admin".to_owned();
    let mut server = None;
    let mut token = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => data_dir = PathBuf::from(p.value()?),
            Long("user") => user = text(p.value()?)?,
            Long("token") => token = true,
            Long("server") => server = Some(text(p.value()?)?),
            Long("help") | Short('h') => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    if user.is_empty() || user.len() > 253 || user.chars().any(|c| c.is_control()) {
        return usage("--user must be 1 to 253 characters, none of them control characters");
    }
    let server = match server {
        Some(s) => s,
        None => {
            let (api, advertise) = admin::Addrs::read_api(&data_dir)?;
            format!("https://{}", server_address(&advertise, api.port()))
        }
    };
    let ca = load_ca(&data_dir)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let credential = if token {
        let groups = [kubeapi::MASTERS_GROUP.to_owned()];
        let t =
            apitokens::create(&data_dir, &user, &groups).map_err(|e| UsageError(e.to_string()))?;
        serde_json::json!({ "token": t })
    } else {
        let validity = Duration::from_secs(KUBECONFIG_CERT_DAYS * 86400);
        let (cert, key) = ca.issue_client_cert(&user, kubeapi::MASTERS_GROUP, validity)?;
        serde_json::json!({
            "client-certificate-data": b64(&cert),
            "client-key-data": b64(&key),
        })
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cloudcore", "cluster": {
            "server": server,
            "certificate-authority-data": b64(&ca.cert_pem()),
        } }],
        "users": [{ "name": user, "user": credential }],
        "contexts": [{ "name": "cloudcore", "context": { "cluster": "cloudcore", "user": user } }],
        "current-context": "cloudcore",
        "preferences": {},
    });
    print!("{}", serde_yaml::to_string(&doc)?);
    Ok(())
}

fn cmd_api_token(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let action = match p.next()? {
        Some(Value(a)) => text(a)?,
        _ => return usage("api-token wants create, revoke or list"),
    };
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let (mut user, mut groups, mut id) = (None, Vec::new(), None);
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => data_dir = PathBuf::from(p.value()?),
            Long("user") => user = Some(text(p.value()?)?),
            Long("group") => groups.push(text(p.value()?)?),
            Value(v) if id.is_none() => id = Some(text(v)?),
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    match (action.as_str(), user, id) {
        ("create", Some(user), None) => {
            let t = apitokens::create(&data_dir, &user, &groups)
                .map_err(|e| UsageError(e.to_string()))?;
            println!("{t}");
        }
        ("revoke", None, Some(id)) => {
            anyhow::ensure!(apitokens::revoke(&data_dir, &id)?, "no API token {id:?}");
        }
        ("list", None, None) => {
            println!("ID      USER    GROUPS");
            for r in apitokens::load(&data_dir)? {
                println!("{:<7} {:<7} {}", r.id, r.user, r.groups.join(","));
            }
        }
        _ => return usage("api-token create --user NAME [--group G]... | revoke ID | list"),
    }
    Ok(())
}

fn real_main() -> anyhow::Result<()> {
    let mut p = lexopt::Parser::from_env();
    match p.next()? {
        Some(Value(cmd)) => match cmd.to_str() {
            Some("serve") => cmd_serve(p),
            Some("token") => cmd_token(p),
            Some("kubeconfig") => cmd_kubeconfig(p),
            Some("api-token") => cmd_api_token(p),
            Some("get") => cli::cmd_get(p),
            Some("apply") => cli::cmd_apply(p),
            Some("delete") => cli::cmd_delete(p),
            Some("describe") => cli::cmd_describe(p),
            _ => usage(format!("unknown command {cmd:?}")),
        },
        Some(Long("version")) | Some(Short('V')) => {
            println!("cloudcore {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Long("help")) | Some(Short('h')) => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => usage(other.unexpected().to_string()),
        None => usage("a command is needed"),
    }
}

fn main() -> ExitCode {
    support::cli::exit("cloudcore", real_main())
}
