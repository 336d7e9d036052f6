//! The KubeEdge cloud↔edge wire model, shared by edgecore and cloudcore.
//!
//! Everything here is pure data and parsing: no sockets, files or clocks (the caller passes
//! the time in). It is byte-compatible with upstream KubeEdge; the section numbers in comments
//! point at `shared/reference/kubeedge-protocol.md`.
//!
//! - [`message`]: the beehive `Message` (header, route, content) and its JSON codec (§1).
//! - [`route`]: operations, groups and module names as typed values with an `Other` escape (§2.3–2.5).
//! - [`resource`]: the one parser for resource paths (§2.1).
//! - [`token`]: the enrollment token `hex(sha256(CA)).<JWT>` (§3.3).
//! - [`objresp`]: the `{"Object":…,"Err":…}` reply shape and Kubernetes `Status` errors (§4.6).
//! - [`time`]: RFC 3339 timestamps as Kubernetes writes them.
//! - [`quantity`]: Kubernetes resource quantities.
//! - [`limits`]: object size and JSON depth limits both sides agree on.

#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod message;
pub mod objresp;
pub mod quantity;
pub mod resource;
pub mod route;
pub mod time;
pub mod token;

pub use message::{DecodeError, Header, Message, Route};
pub use resource::{ResourceError, ResourceKind, ResourcePath};
pub use route::{Group, ModuleName, Operation};

/// The default project id upstream edgecore puts in the WebSocket URL (§3.2).
pub const DEFAULT_PROJECT_ID: &str = "e632aba927ea4ac2b575ec1603d56f10";

/// Namespace token used on the wire for cluster-scoped objects since v1.23 (§2.1).
pub const NULL_NAMESPACE: &str = "null";

/// Namespace of node leases (§4.1).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Label without which upstream cloudcore never sends workloads to a node (§4.2).
pub const EDGE_ROLE_LABEL: &str = "node-role.kubernetes.io/edge";

/// Subject common name an edge certificate must carry for `node`, and its organisation (§3.3).
pub fn node_common_name(node: &str) -> String {
    format!("system:node:{node}")
}

/// Organisation of edge certificates since v1.16 (§3.3).
pub const NODE_ORGANIZATION: &str = "system:nodes";

/// Longest node name: a DNS-1123 subdomain (Kubernetes `DNS1123SubdomainMaxLength`).
pub const NODE_NAME_MAX_BYTES: usize = 253;
/// Longest dot-separated part of a node name: an RFC 1123 label.
pub const NODE_NAME_LABEL_MAX_BYTES: usize = 63;

/// Checks a node name is a DNS-1123 subdomain, as Kubernetes requires of node names: 1 to 253
/// characters, dot-separated parts of 1 to 63 lower-case letters, digits and `-`, each
/// starting and ending with a letter or digit. The error names what is wrong and where.
///
/// apimachinery's `IsDNS1123Subdomain` checks the 63-character parts only through its regex,
/// which does not: a 64-character part passes there, yet such a node never registers with
/// kubelet (its `kubernetes.io/hostname` label value is limited to 63). RFC 1123 is kept here.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    const RULE: &str = "a node name is lower-case letters, digits, '-' and '.', in dot-separated parts that start and end with a letter or digit";
    if name.is_empty() {
        return Err("the node name is empty".into());
    }
    if name.len() > NODE_NAME_MAX_BYTES {
        // Not echoed: it is outside data of any length.
        return Err(format!(
            "the node name is {} bytes long; at most {NODE_NAME_MAX_BYTES} are allowed",
            name.len()
        ));
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        let hint = if c.is_ascii_uppercase() {
            " (upper-case letters are not allowed)"
        } else {
            ""
        };
        return Err(format!(
            "node name {name:?} has {c:?} at byte {i}{hint}: {RULE}"
        ));
    }
    let mut at = 0;
    for part in name.split('.') {
        if part.is_empty() {
            return Err(format!(
                "node name {name:?} has an empty part at byte {at} (a leading, trailing or doubled '.'): {RULE}"
            ));
        }
        if part.len() > NODE_NAME_LABEL_MAX_BYTES {
            return Err(format!(
                "node name {name:?} has a part of {} characters at byte {at}; each dot-separated part may have at most {NODE_NAME_LABEL_MAX_BYTES}",
                part.len()
            ));
        }
        if part.starts_with('-') || part.ends_with('-') {
            return Err(format!(
                "node name {name:?} has the part {part:?} at byte {at}, which starts or ends with '-': {RULE}"
            ));
        }
        at += part.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_node_name as v;

    #[test]
    fn node_names_are_dns_1123_subdomains() {
        let label63 = "a".repeat(63);
        let long_ok = [label63.as_str(); 4].join(".");
        assert_eq!(long_ok.len(), 255);
        for good in [
            "edge-0.site1",
            "a",
            "0",
            "a.b.c",
            "1-2",
            label63.as_str(),
            &long_ok[..253],
        ] {
            assert_eq!(v(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn bad_node_names_say_what_and_where() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("Edge0", "'E' at byte 0 (upper-case"),
            (
                "-edge",
                "\"-edge\" at byte 0, which starts or ends with '-'",
            ),
            ("edge-", "starts or ends with '-'"),
            ("a.-b", "\"-b\" at byte 2"),
            ("ed ge", "' ' at byte 2"),
            ("edge_0", "'_' at byte 4"),
            ("a..b", "empty part at byte 2"),
            (".a", "empty part at byte 0"),
            ("a.", "empty part at byte 2"),
            ("nöde", "'ö' at byte 1"),
            ("节点", "'节' at byte 0"),
        ];
        for (bad, want) in cases {
            let e = v(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let e = v(&format!("x.{}", "a".repeat(64))).unwrap_err();
        assert!(e.contains("a part of 64 characters at byte 2"), "{e}");
        let e = v(&"a".repeat(254)).unwrap_err();
        assert!(e.contains("254 bytes long; at most 253"), "{e}");
        assert!(!e.contains("aaaa"), "long names are not echoed: {e}");
    }
}
