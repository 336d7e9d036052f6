//! `cloudcore get`: reads a running cloudcore through its admin API and prints a table or the
//! raw Kubernetes JSON.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use lexopt::prelude::*;
use serde_json::Value;

use crate::{admin, UsageError, DEFAULT_DATA_DIR};

#[derive(PartialEq)]
enum Output {
    Table,
    Wide,
    Json,
}

pub fn cmd_get(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut server: Option<SocketAddr> = None;
    let mut output = Output::Table;
    let mut positional = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => data_dir = PathBuf::from(p.value()?),
            Long("server") => server = Some(crate::parsed(p.value()?, "IP:PORT address")?),
            Short('o') | Long("output") => {
                output = match crate::text(p.value()?)?.as_str() {
                    "json" => Output::Json,
                    "wide" => Output::Wide,
                    other => {
                        return Err(UsageError(format!(
                            "unknown output format {other:?}; use json or wide"
                        ))
                        .into())
                    }
                }
            }
            Long("help") | Short('h') => {
                print!("{}", crate::USAGE);
                return Ok(());
            }
            Value(v) => positional.push(crate::text(v)?),
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    let kind = positional.first().map(String::as_str);
    if !matches!(kind, Some("nodes" | "node" | "no")) {
        return Err(UsageError(format!(
            "get needs a kind; known: nodes (got {:?})",
            kind.unwrap_or("")
        ))
        .into());
    }
    let name = positional.get(1);
    let addr = match server {
        Some(a) => a,
        None => admin::Addrs::read_admin(&data_dir)?,
    };
    let token = std::fs::read_to_string(data_dir.join(admin::TOKEN_FILE))
        .with_context(|| format!("cannot read the admin credential in {}", data_dir.display()))?;
    let path = match name {
        Some(n) => format!("/api/v1/nodes/{n}"),
        None => "/api/v1/nodes".to_owned(),
    };
    let body = admin_get(addr, &path, token.trim())?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let items = match name {
        Some(_) => vec![body],
        None => body["items"].as_array().cloned().unwrap_or_default(),
    };
    print!(
        "{}",
        node_table(&items, output == Output::Wide, SystemTime::now())
    );
    Ok(())
}

fn admin_get(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<Value> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| {
        format!("cannot reach cloudcore's admin API at {addr}; is `cloudcore serve` running?")
    })?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = format!("Bearer {token}");
    let resp = support::http::exchange(
        &mut tcp,
        "GET",
        &addr.to_string(),
        path,
        &[("Authorization", &auth)],
        b"",
    )?;
    let body: Value =
        serde_json::from_slice(&resp.body).context("admin API answered with invalid JSON")?;
    if resp.status != 200 {
        bail!("{}", body["error"].as_str().unwrap_or("admin API error"));
    }
    Ok(body)
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
        let created = n["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(proto::time::parse_rfc3339);
        let now_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let age = created
            .map(|c| support::human_age(Duration::from_secs((now_s - c).max(0) as u64)))
            .unwrap_or_else(|| "<unknown>".into());
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
            age,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_shows_status_roles_and_age() {
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
}
