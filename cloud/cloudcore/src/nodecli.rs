//! The CLI of node identities: `cloudcore delete node NAME` and `cloudcore get enrollments`
//! (the names holding `--node-limit` slots, with their certificates).

use serde_json::Value;

use crate::cli::{render, Client};
use crate::UsageError;

/// `cloudcore delete node NAME`: revokes, closes the session, deletes the node's pods.
pub fn delete_node(c: &Client) -> anyhow::Result<()> {
    let name = c
        .positional
        .get(1)
        .ok_or_else(|| UsageError("delete node needs a name".into()))?;
    proto::validate_node_name(name).map_err(UsageError)?;
    let out = c.call("DELETE", &format!("/api/v1/nodes/{name}"), b"")?;
    print!("{}", delete_summary(name, &out));
    Ok(())
}

fn delete_summary(name: &str, out: &Value) -> String {
    let list = |k: &str| -> Vec<String> {
        out[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let (revoked, pods) = (list("revokedCertificates"), list("deletedPods"));
    let mut s = format!("node {name:?} deleted\n");
    s.push_str(&format!(
        "  certificates revoked: {}\n",
        if revoked.is_empty() {
            "none on record".to_owned()
        } else {
            revoked.join(", ")
        }
    ));
    s.push_str(&format!(
        "  pods deleted: {}\n",
        if pods.is_empty() {
            "none".to_owned()
        } else {
            pods.join(", ")
        }
    ));
    if out["sessionClosed"] == true {
        s.push_str("  its session was closed\n");
    }
    s
}

/// `cloudcore get enrollments`.
pub fn get_enrollments(c: &Client) -> anyhow::Result<()> {
    let body = c.call("GET", "/api/v1/enrollments", b"")?;
    if c.print_raw(&body)? {
        return Ok(());
    }
    let mut rows = vec![
        ["NAME", "REGISTERED", "CONNECTED", "CERTIFICATES", "EXPIRES"]
            .map(str::to_owned)
            .to_vec(),
    ];
    let items = body["items"].as_array().cloned().unwrap_or_default();
    for e in &items {
        let certs = e["certificates"].as_array().cloned().unwrap_or_default();
        let last = certs
            .iter()
            .filter_map(|c| c["notAfter"].as_str())
            .max()
            .unwrap_or("-");
        let yes = |v: &Value| if *v == true { "yes" } else { "no" }.to_owned();
        rows.push(vec![
            e["name"].as_str().unwrap_or("").to_owned(),
            yes(&e["registered"]),
            yes(&e["connected"]),
            certs.len().to_string(),
            last.to_owned(),
        ]);
    }
    print!("{}", render(rows));
    println!(
        "{} of {} slots used (--node-limit)",
        items.len(),
        body["nodeLimit"]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_delete_summary_names_what_went() {
        let out = serde_json::json!({ "revokedCertificates": ["4a01"], "deletedPods": ["default/web"], "sessionClosed": true });
        let s = super::delete_summary("gw-1", &out);
        assert!(s.contains("node \"gw-1\" deleted"));
        assert!(s.contains("certificates revoked: 4a01"));
        assert!(s.contains("pods deleted: default/web"));
        assert!(s.contains("session was closed"));
        let none = super::delete_summary("gw-1", &serde_json::json!({}));
        assert!(none.contains("none on record") && !none.contains("session"));
    }
}
