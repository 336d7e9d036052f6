//! The one parser for resource paths (§2.1).
//!
//! On the wire a path is `<namespace>/<type>[/<name>]`, with a few fixed forms beside it
//! (`node` for keepalives, `membership`, `twin`, `k8s/ca.crt`, device twin paths
//! `device/<ns>/<name>/<suffix>`). Resources of group `user` are MQTT topics or servicebus
//! targets and are not resource paths; callers route on the group before parsing.
//! [`ResourcePath`]'s `Display` gives back exactly the text it was parsed from.

use std::fmt;

/// Longest path accepted: Kubernetes names are at most 253 bytes, so three of them and the
/// separators fit well inside this.
pub const MAX_RESOURCE_LEN: usize = 1024;

/// Resource type token (§2.2). Unknown types are preserved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Pod,
    PodStatus,
    PodPatch,
    Node,
    NodeStatus,
    NodePatch,
    Lease,
    ConfigMap,
    Secret,
    ServiceAccountToken,
    Event,
    Device,
    DeviceModel,
    Other(String),
}

impl ResourceKind {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pod => "pod",
            Self::PodStatus => "podstatus",
            Self::PodPatch => "podpatch",
            Self::Node => "node",
            Self::NodeStatus => "nodestatus",
            Self::NodePatch => "nodepatch",
            Self::Lease => "lease",
            Self::ConfigMap => "configmap",
            Self::Secret => "secret",
            Self::ServiceAccountToken => "serviceaccounttoken",
            Self::Event => "event",
            Self::Device => "device",
            Self::DeviceModel => "devicemodel",
            Self::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pod" => Self::Pod,
            "podstatus" => Self::PodStatus,
            "podpatch" => Self::PodPatch,
            "node" => Self::Node,
            "nodestatus" => Self::NodeStatus,
            "nodepatch" => Self::NodePatch,
            "lease" => Self::Lease,
            "configmap" => Self::ConfigMap,
            "secret" => Self::Secret,
            "serviceaccounttoken" => Self::ServiceAccountToken,
            "event" => Self::Event,
            "device" => Self::Device,
            "devicemodel" => Self::DeviceModel,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed resource path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ResourcePath {
    /// `<namespace>/<type>` or `<namespace>/<type>/<name>`.
    Object {
        namespace: String,
        kind: ResourceKind,
        name: Option<String>,
    },
    /// `node`: the keepalive's resource.
    KeepaliveNode,
    /// `membership`: device membership pushes.
    Membership,
    /// `membership/detail`: the twin module's membership request.
    MembershipDetail,
    /// `twin`: devicecontroller confirmations.
    Twin,
    /// `k8s/ca.crt`: MetaServer's cluster CA query.
    K8sCa,
    /// `device/<namespace>/<name>/<suffix>`, e.g. suffix `twin/edge_updated` or `state/update`.
    Device {
        namespace: String,
        name: String,
        suffix: String,
    },
}

/// Why a text is not a resource path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource path is empty")]
    Empty,
    #[error("resource path is {0} bytes, over the {MAX_RESOURCE_LEN} byte limit")]
    TooLong(usize),
    #[error("resource path {0:?} has an empty segment")]
    EmptySegment(String),
    #[error("resource path {0:?} contains whitespace or a control character")]
    BadCharacter(String),
    #[error("resource path {0:?} has {1} segments; expected <namespace>/<type>[/<name>]")]
    Segments(String, usize),
}

impl ResourcePath {
    /// Parses a wire resource path.
    pub fn parse(s: &str) -> Result<Self, ResourceError> {
        if s.is_empty() {
            return Err(ResourceError::Empty);
        }
        if s.len() > MAX_RESOURCE_LEN {
            return Err(ResourceError::TooLong(s.len()));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ResourceError::BadCharacter(s.to_owned()));
        }
        match s {
            "node" => return Ok(Self::KeepaliveNode),
            "membership" => return Ok(Self::Membership),
            "membership/detail" => return Ok(Self::MembershipDetail),
            "twin" => return Ok(Self::Twin),
            "k8s/ca.crt" => return Ok(Self::K8sCa),
            _ => {}
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ResourceError::EmptySegment(s.to_owned()));
        }
        match parts.as_slice() {
            ["device", ns, name, rest @ ..] if !rest.is_empty() => Ok(Self::Device {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
                suffix: rest.join("/"),
            }),
            [ns, kind] => Ok(Self::Object {
                namespace: (*ns).to_owned(),
                kind: ResourceKind::parse(kind),
                name: None,
            }),
            [ns, kind, name] => Ok(Self::Object {
                namespace: (*ns).to_owned(),
                kind: ResourceKind::parse(kind),
                name: Some((*name).to_owned()),
            }),
            _ => Err(ResourceError::Segments(s.to_owned(), parts.len())),
        }
    }

    /// `<namespace>/<kind>/<name>`.
    pub fn object(namespace: &str, kind: ResourceKind, name: &str) -> Self {
        Self::Object {
            namespace: namespace.to_owned(),
            kind,
            name: Some(name.to_owned()),
        }
    }

    /// The type token, for object paths.
    pub fn kind(&self) -> Option<&ResourceKind> {
        match self {
            Self::Object { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The name, for object paths that have one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Object { name, .. } => name.as_deref(),
            Self::Device { name, .. } => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Object {
                namespace,
                kind,
                name: Some(name),
            } => write!(f, "{namespace}/{kind}/{name}"),
            Self::Object {
                namespace,
                kind,
                name: None,
            } => write!(f, "{namespace}/{kind}"),
            Self::KeepaliveNode => f.write_str("node"),
            Self::Membership => f.write_str("membership"),
            Self::MembershipDetail => f.write_str("membership/detail"),
            Self::Twin => f.write_str("twin"),
            Self::K8sCa => f.write_str("k8s/ca.crt"),
            Self::Device {
                namespace,
                name,
                suffix,
            } => write!(f, "device/{namespace}/{name}/{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_examples_and_prints_them_back() {
        for s in [
            "default/pod/nginx",
            "null/node/edge-1",
            "default/podpatch/nginx-7c5b",
            "kube-node-lease/lease/edge0",
            "default/podstatus",
            "node",
            "membership",
            "membership/detail",
            "twin",
            "k8s/ca.crt",
            "device/default/thermometer/twin/edge_updated",
            "device/default/thermometer/state/update",
            "default/certificatesigningrequest/csr-1",
        ] {
            let p = ResourcePath::parse(s).unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            ResourcePath::parse("null/node/edge-1").unwrap(),
            ResourcePath::object("null", ResourceKind::Node, "edge-1")
        );
        assert_eq!(
            ResourcePath::parse("default/widget/x").unwrap().kind(),
            Some(&ResourceKind::Other("widget".into()))
        );
    }

    #[test]
    fn rejects_malformed_paths() {
        assert_eq!(ResourcePath::parse(""), Err(ResourceError::Empty));
        assert!(matches!(
            ResourcePath::parse("a//b"),
            Err(ResourceError::EmptySegment(_))
        ));
        assert!(matches!(
            ResourcePath::parse("/a/b"),
            Err(ResourceError::EmptySegment(_))
        ));
        assert!(matches!(
            ResourcePath::parse("a/b/c/d"),
            Err(ResourceError::Segments(_, 4))
        ));
        assert!(matches!(
            ResourcePath::parse("pod"),
            Err(ResourceError::Segments(_, 1))
        ));
        assert!(matches!(
            ResourcePath::parse("a/b c/d"),
            Err(ResourceError::BadCharacter(_))
        ));
        let long = "a/b/".to_owned() + &"x".repeat(MAX_RESOURCE_LEN);
        assert!(matches!(
            ResourcePath::parse(&long),
            Err(ResourceError::TooLong(_))
        ));
    }
}
