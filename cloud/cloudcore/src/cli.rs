//! The operator's verbs on a running cloudcore: `get`, `apply`, `describe`, `delete`. Each
//! talks to the admin API found through the data dir (or `--server`) and prints tables like
//! kubectl's, or the raw Kubernetes JSON/YAML.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use cloudstore::Kind;
use lexopt::prelude::*;
use serde_json::Value;

use crate::{admin, UsageError, DEFAULT_DATA_DIR};

/// Largest admin API answer the CLI reads: a list of 160 objects at the object limit
/// (`proto::limits::MAX_OBJECT_BYTES`). The CLI runs on the cloud's machine, not a gateway;
/// one object alone is always far below this.
pub const MAX_ADMIN_RESPONSE_BYTES: usize = 256 << 20;

#[derive(PartialEq, Clone, Copy)]
enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

/// Options shared by the client verbs.
pub(crate) struct Client {
    data_dir: PathBuf,
    server: Option<SocketAddr>,
    namespace: String,
    all_namespaces: bool,
    output: Output,
    file: Option<String>,
    pub(crate) positional: Vec<String>,
    /// `delete`: seconds given to a pod to stop (`--grace-period`), and `--force`.
    grace: Option<u64>,
    force: bool,
    /// `delete`: wait until the object is gone (kubectl's default).
    wait: bool,
}

impl Client {
    fn parse(mut p: lexopt::Parser) -> anyhow::Result<Option<Client>> {
        let mut c = Client {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            server: None,
            namespace: "default".into(),
            all_namespaces: false,
            output: Output::Table,
            file: None,
            positional: Vec::new(),
            grace: None,
            force: false,
            wait: true,
        };
        while let Some(arg) = p.next()? {
            match arg {
                Long("data-dir") => c.data_dir = PathBuf::from(p.value()?),
                Long("server") => {
                    c.server = Some(support::cli::parsed(p.value()?, "IP:PORT address")?)
                }
                Short('n') | Long("namespace") => c.namespace = support::cli::text(p.value()?)?,
                Short('A') | Long("all-namespaces") => c.all_namespaces = true,
                Short('f') | Long("filename") => c.file = Some(support::cli::text(p.value()?)?),
                Short('o') | Long("output") => {
                    c.output = match support::cli::text(p.value()?)?.as_str() {
                        "json" => Output::Json,
                        "yaml" => Output::Yaml,
                        "wide" => Output::Wide,
                        other => {
                            return Err(UsageError(format!(
                                "unknown output format {other:?}; use json, yaml or wide"
                            ))
                            .into())
                        }
                    }
                }
                Long("grace-period") => {
                    c.grace = Some(support::cli::parsed(p.value()?, "number of seconds")?)
                }
                Long("force") => c.force = true,
                Long("wait") => {
                    c.wait = match p
                        .optional_value()
                        .map(support::cli::text)
                        .transpose()?
                        .as_deref()
                    {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(other) => {
                            return Err(
                                UsageError(format!("--wait={other}: use true or false")).into()
                            )
                        }
                    }
                }
                Long("help") | Short('h') => {
                    print!("{}", crate::USAGE);
                    return Ok(None);
                }
                Value(v) => c.positional.push(support::cli::text(v)?),
                _ => return Err(UsageError(arg.unexpected().to_string()).into()),
            }
        }
        Ok(Some(c))
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Value> {
        let addr = match self.server {
            Some(a) => a,
            None => admin::Addrs::read_admin(&self.data_dir)?,
        };
        let token =
            std::fs::read_to_string(self.data_dir.join(admin::TOKEN_FILE)).with_context(|| {
                format!(
                    "cannot read the admin credential in {}",
                    self.data_dir.display()
                )
            })?;
        let mut tcp =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| {
                format!(
                    "cannot reach cloudcore's admin API at {addr}; is `cloudcore serve` running?"
                )
            })?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let auth = format!("Bearer {}", token.trim());
        let resp = support::http::exchange_limited(
            &mut tcp,
            method,
            &addr.to_string(),
            path,
            &[("Authorization", &auth)],
            body,
            MAX_ADMIN_RESPONSE_BYTES,
        )?;
        let v: Value =
            serde_json::from_slice(&resp.body).context("admin API answered with invalid JSON")?;
        if resp.status != 200 {
            bail!("{}", v["error"].as_str().unwrap_or("admin API error"));
        }
        Ok(v)
    }

    fn kind(&self, verb: &str) -> anyhow::Result<Kind> {
        let k = self.positional.first().map(String::as_str).unwrap_or("");
        Kind::from_cli(k).ok_or_else(|| {
            UsageError(format!(
                "{verb} needs a kind: pods, configmaps, secrets, devices or devicemodels (got {k:?})"
            ))
            .into()
        })
    }

    fn name(&self, verb: &str) -> anyhow::Result<&str> {
        self.positional
            .get(1)
            .map(String::as_str)
            .ok_or_else(|| UsageError(format!("{verb} needs a name")).into())
    }

    /// Prints `v` as JSON or YAML when asked for (`-o json|yaml`); false for a table.
    pub(crate) fn print_raw(&self, v: &Value) -> anyhow::Result<bool> {
        if !matches!(self.output, Output::Json | Output::Yaml) {
            return Ok(false);
        }
        self.print(v)?;
        Ok(true)
    }

    fn print(&self, v: &Value) -> anyhow::Result<()> {
        match self.output {
            Output::Yaml => print!("{}", serde_yaml::to_string(v)?),
            _ => println!("{}", serde_json::to_string_pretty(v)?),
        }
        Ok(())
    }
}

pub fn cmd_apply(p: lexopt::Parser) -> anyhow::Result<()> {
    let Some(c) = Client::parse(p)? else {
        return Ok(());
    };
    let Some(file) = &c.file else {
        return Err(UsageError("apply needs -f <FILE> or -f - for standard input".into()).into());
    };
    let mut text = Vec::new();
    if file == "-" {
        std::io::stdin().read_to_end(&mut text)?;
    } else {
        text = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    }
    let out = c.call("POST", "/api/v1/apply", &text)?;
    for r in out["results"].as_array().into_iter().flatten() {
        let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
        println!(
            "{kind}/{} {}",
            r["name"].as_str().unwrap_or(""),
            r["change"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub fn cmd_delete(p: lexopt::Parser) -> anyhow::Result<()> {
    let Some(c) = Client::parse(p)? else {
        return Ok(());
    };
    if matches!(
        c.positional.first().map(String::as_str),
        Some("node" | "nodes" | "no")
    ) {
        return crate::nodecli::delete_node(&c);
    }
    let kind = c.kind("delete")?;
    let name = c.name("delete")?;
    // kubectl's rules: grace 0 means "at once" only with --force (else it is 1 s); --force
    // alone is grace 0.
    let grace = match (c.force, c.grace) {
        (true, _) => Some(0),
        (false, Some(0)) => Some(1),
        (false, g) => g,
    };
    if c.force {
        eprintln!("Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely.");
    }
    let path = format!("/api/v1/{}/{}/{name}", kind.plural(), c.namespace);
    let query = grace
        .map(|g| format!("?gracePeriodSeconds={g}"))
        .unwrap_or_default();
    c.call("DELETE", &format!("{path}{query}"), b"")?;
    println!("{} {name:?} deleted", kind.name().to_lowercase());
    if c.wait {
        // A pod its node still has to stop stays (Terminating) until the node confirms.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while c.call("GET", &path, b"").is_ok() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "{} {name:?} is still terminating after 5 minutes",
                    kind.name().to_lowercase()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

pub fn cmd_describe(p: lexopt::Parser) -> anyhow::Result<()> {
    let Some(c) = Client::parse(p)? else {
        return Ok(());
    };
    let kind = c.kind("describe")?;
    let name = c.name("describe")?;
    let obj = c.call(
        "GET",
        &format!("/api/v1/{}/{}/{name}", kind.plural(), c.namespace),
        b"",
    )?;
    let events = c.call(
        "GET",
        &format!("/api/v1/events/{}/{}/{name}", kind.plural(), c.namespace),
        b"",
    )?;
    print!("{}", describe_text(kind, &obj, &events["items"]));
    Ok(())
}

fn describe_text(kind: Kind, obj: &Value, events: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let m = &obj["metadata"];
    let mut out = format!(
        "Name:              {}\nNamespace:         {}\nKind:              {}\nUID:               {}\nResourceVersion:   {}\nCreated:           {}\n",
        s(&m["name"]),
        s(&m["namespace"]),
        kind.name(),
        s(&m["uid"]),
        s(&m["resourceVersion"]),
        s(&m["creationTimestamp"])
    );
    if let Some(labels) = m["labels"].as_object() {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        out.push_str(&format!("Labels:            {}\n", l.join(",")));
    }
    match kind {
        Kind::Pod => {
            out.push_str(&format!(
                "Node:              {}\n",
                s(&obj["spec"]["nodeName"])
            ));
            out.push_str(&format!("Status:            {}\n", pod_status(obj)));
            out.push_str("Containers:\n");
            for c in obj["spec"]["containers"].as_array().into_iter().flatten() {
                out.push_str(&format!("  {}:  {}\n", s(&c["name"]), s(&c["image"])));
            }
        }
        Kind::ConfigMap | Kind::Secret => {
            let keys: Vec<&str> = obj["data"]
                .as_object()
                .map(|d| d.keys().map(String::as_str).collect())
                .unwrap_or_default();
            out.push_str(&format!("Data keys:         {}\n", keys.join(", ")));
        }
        Kind::Device => {
            out.push_str(&format!(
                "Model:             {}\n",
                s(&obj["spec"]["deviceModelRef"]["name"])
            ));
            out.push_str(&format!(
                "Node:              {}\n",
                s(&obj["spec"]["nodeName"])
            ));
            out.push_str(&format!(
                "State:             {}\n",
                obj["status"]["state"].as_str().unwrap_or("unknown")
            ));
            out.push_str("Twins (desired / reported):\n");
            for p in obj["spec"]["properties"].as_array().into_iter().flatten() {
                let name = s(&p["name"]);
                let reported = obj["status"]["twins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["propertyName"] == name.as_str())
                    .and_then(|t| t["reported"]["value"].as_str())
                    .unwrap_or("<none>")
                    .to_owned();
                out.push_str(&format!(
                    "  {name}:  {} / {reported}\n",
                    p["desired"]["value"].as_str().unwrap_or("<none>")
                ));
            }
        }
        Kind::DeviceModel => {
            let props: Vec<String> = obj["spec"]["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| s(&p["name"]))
                .collect();
            out.push_str(&format!("Properties:        {}\n", props.join(", ")));
        }
    }
    out.push_str("Events:\n");
    let items = events.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        out.push_str("  <none>\n");
    }
    for e in items {
        out.push_str(&format!(
            "  {}  {:<16} {}\n",
            s(&e["time"]),
            s(&e["reason"]),
            s(&e["message"])
        ));
    }
    out
}

pub fn cmd_get(p: lexopt::Parser) -> anyhow::Result<()> {
    let Some(c) = Client::parse(p)? else {
        return Ok(());
    };
    let kind_text = c.positional.first().map(String::as_str).unwrap_or("");
    let name = c.positional.get(1);
    let now = SystemTime::now();
    if matches!(kind_text, "enrollments" | "enrollment") {
        return crate::nodecli::get_enrollments(&c);
    }
    if matches!(kind_text, "nodes" | "node" | "no") {
        let path = match name {
            Some(n) => format!("/api/v1/nodes/{n}"),
            None => "/api/v1/nodes".to_owned(),
        };
        let body = c.call("GET", &path, b"")?;
        if matches!(c.output, Output::Json | Output::Yaml) {
            return c.print(&body);
        }
        let items = if name.is_some() {
            vec![body]
        } else {
            body["items"].as_array().cloned().unwrap_or_default()
        };
        print!("{}", node_table(&items, c.output == Output::Wide, now));
        return Ok(());
    }
    let Some(kind) = Kind::from_cli(kind_text) else {
        return Err(UsageError(format!(
            "get needs a kind: nodes, pods, configmaps, secrets, devices or devicemodels (got {kind_text:?})"
        ))
        .into());
    };
    let body = match name {
        Some(n) => c.call(
            "GET",
            &format!("/api/v1/{}/{}/{n}", kind.plural(), c.namespace),
            b"",
        )?,
        None if c.all_namespaces => c.call("GET", &format!("/api/v1/{}", kind.plural()), b"")?,
        None => c.call(
            "GET",
            &format!("/api/v1/{}?namespace={}", kind.plural(), c.namespace),
            b"",
        )?,
    };
    if matches!(c.output, Output::Json | Output::Yaml) {
        return c.print(&body);
    }
    let items = if name.is_some() {
        vec![body]
    } else {
        body["items"].as_array().cloned().unwrap_or_default()
    };
    if items.is_empty() {
        eprintln!(
            "No resources found{}.",
            if c.all_namespaces {
                String::new()
            } else {
                format!(" in {} namespace", c.namespace)
            }
        );
        return Ok(());
    }
    print!(
        "{}",
        object_table(
            kind,
            &items,
            c.output == Output::Wide,
            c.all_namespaces,
            now
        )
    );
    Ok(())
}

fn age(obj: &Value, now: SystemTime) -> String {
    let created = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(proto::time::parse_rfc3339);
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    created
        .map(|c| support::human_age(Duration::from_secs((now_s - c).max(0) as u64)))
        .unwrap_or_else(|| "<unknown>".into())
}

/// kubectl's STATUS column: the phase, or the waiting/terminated reason of a container;
/// `Terminating` once deletion began.
fn pod_status(pod: &Value) -> String {
    if pod["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return "Terminating".into();
    }
    for cs in pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(r) = cs["state"]["waiting"]["reason"].as_str() {
            return r.to_owned();
        }
        if let Some(r) = cs["state"]["terminated"]["reason"].as_str() {
            if pod["status"]["phase"] != "Succeeded" {
                return r.to_owned();
            }
        }
    }
    pod["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_owned()
}

pub(crate) fn render(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Renders pods, configmaps or secrets as kubectl does.
pub fn object_table(
    kind: Kind,
    items: &[Value],
    wide: bool,
    namespaces: bool,
    now: SystemTime,
) -> String {
    let mut head: Vec<&str> = match kind {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        Kind::Device => vec!["NAME", "MODEL", "NODE", "STATE", "AGE"],
        Kind::DeviceModel => vec!["NAME", "PROPERTIES", "AGE"],
    };
    if wide && kind == Kind::Pod {
        head.push("IP");
    }
    if namespaces {
        head.insert(0, "NAMESPACE");
    }
    let mut rows = vec![head.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for o in items {
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let data = o["data"].as_object().map_or(0, |d| d.len())
            + o["binaryData"].as_object().map_or(0, |d| d.len());
        let mut row = match kind {
            Kind::Pod => {
                let total = o["spec"]["containers"].as_array().map_or(0, |c| c.len());
                let statuses = o["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                let restarts: u64 = statuses
                    .iter()
                    .filter_map(|c| c["restartCount"].as_u64())
                    .sum();
                let mut r = vec![
                    s(&o["metadata"]["name"]),
                    format!("{ready}/{total}"),
                    pod_status(o),
                    restarts.to_string(),
                    age(o, now),
                    s(&o["spec"]["nodeName"]),
                ];
                if wide {
                    r.push(o["status"]["podIP"].as_str().unwrap_or("<none>").to_owned());
                }
                r
            }
            Kind::ConfigMap => vec![s(&o["metadata"]["name"]), data.to_string(), age(o, now)],
            Kind::Secret => vec![
                s(&o["metadata"]["name"]),
                o["type"].as_str().unwrap_or("Opaque").to_owned(),
                data.to_string(),
                age(o, now),
            ],
            Kind::Device => vec![
                s(&o["metadata"]["name"]),
                s(&o["spec"]["deviceModelRef"]["name"]),
                s(&o["spec"]["nodeName"]),
                o["status"]["state"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
                age(o, now),
            ],
            Kind::DeviceModel => vec![
                s(&o["metadata"]["name"]),
                o["spec"]["properties"]
                    .as_array()
                    .map_or(0, |p| p.len())
                    .to_string(),
                age(o, now),
            ],
        };
        if namespaces {
            row.insert(0, s(&o["metadata"]["namespace"]));
        }
        rows.push(row);
    }
    render(rows)
}

/// Renders nodes as `kubectl get nodes` does.
pub fn node_table(items: &[Value], wide: bool, now: SystemTime) -> String {
    let mut rows = vec![{
        let mut h = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
        if wide {
            h.extend(["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "ARCH"]);
        }
        h.into_iter().map(str::to_owned).collect::<Vec<_>>()
    }];
    for n in items {
        let status = if cloudhub::nodes::is_ready(n) {
            "Ready"
        } else {
            "NotReady"
        };
        let mut roles: Vec<&str> = n["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        roles.sort();
        let info = &n["status"]["nodeInfo"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let mut row = vec![
            s(&n["metadata"]["name"]),
            status.to_owned(),
            if roles.is_empty() {
                "<none>".into()
            } else {
                roles.join(",")
            },
            age(n, now),
            s(&info["kubeletVersion"]),
        ];
        if wide {
            let ip = n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .map(|a| s(&a["address"]))
                .unwrap_or_default();
            row.extend([
                ip,
                s(&info["osImage"]),
                s(&info["kernelVersion"]),
                s(&info["architecture"]),
            ]);
        }
        rows.push(row);
    }
    render(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_table_shows_status_roles_and_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + 300);
        let n = json!({
            "metadata": { "name": "edge0", "creationTimestamp": proto::time::rfc3339(1_000_000),
                "labels": { "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "" } },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }], "nodeInfo": { "kubeletVersion": "v1", "architecture": "arm64" },
                "addresses": [{ "type": "InternalIP", "address": "10.0.0.2" }] }
        });
        let t = node_table(std::slice::from_ref(&n), false, now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(
            lines[1].contains("edge0")
                && lines[1].contains("Ready")
                && lines[1].contains("agent,edge")
                && lines[1].contains("5m")
        );
        let mut down = n.clone();
        down["status"]["conditions"][0]["status"] = json!("False");
        assert!(node_table(&[down], false, now).contains("NotReady"));
        assert!(node_table(&[n], true, now).contains("10.0.0.2"));
    }

    #[test]
    fn pod_table_counts_ready_and_restarts() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_060);
        let p = json!({"metadata": {"name": "web", "namespace": "default", "creationTimestamp": proto::time::rfc3339(1_000_000)},
            "spec": {"nodeName": "edge0", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.4", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2}, {"name": "b", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = object_table(Kind::Pod, std::slice::from_ref(&p), true, true, now);
        let row = t.lines().nth(1).unwrap();
        for want in [
            "default",
            "web",
            "1/2",
            "CrashLoopBackOff",
            "3",
            "60s",
            "edge0",
            "10.1.0.4",
        ] {
            assert!(row.contains(want), "{want} missing from {row}");
        }
    }

    #[test]
    fn describe_lists_events() {
        let cm = json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "1"}});
        let ev =
            json!([{"time": "t", "reason": "Delivered", "message": "node edge0 stored version 5"}]);
        let d = describe_text(Kind::ConfigMap, &cm, &ev);
        assert!(
            d.contains("Data keys:         a")
                && d.contains("Delivered")
                && d.contains("version 5"),
            "{d}"
        );
        assert!(describe_text(Kind::ConfigMap, &cm, &json!([])).contains("<none>"));
    }
}
