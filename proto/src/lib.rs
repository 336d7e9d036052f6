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

#[doc(hidden)]
pub mod fuzzing;
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

/// Checks a node name is a Kubernetes DNS-1123 subdomain: lower-case letters, digits, `-` and
/// `.`, starting and ending with a letter or digit, at most 253 bytes.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 253 {
        return Err(format!("node name {name:?} must be 1 to 253 characters"));
    }
    if !name.chars().all(ok_char) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(format!(
            "node name {name:?} must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names() {
        assert!(super::validate_node_name("edge-0.site1").is_ok());
        for bad in [
            "",
            "Edge0",
            "-edge",
            "edge-",
            "ed ge",
            "edge_0",
            &"a".repeat(254),
        ] {
            assert!(super::validate_node_name(bad).is_err(), "{bad:?}");
        }
    }
}
