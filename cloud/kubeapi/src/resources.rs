//! The served resources and the discovery documents built from them (`/api`, `/api/v1`,
//! `/apis`, `/apis/<group>/<version>`).

use serde_json::{json, Value};

/// A resource kind the API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Pods,
    Nodes,
    ConfigMaps,
    Secrets,
    Namespaces,
    Events,
    Leases,
    Devices,
    DeviceModels,
}

/// What discovery says of one resource.
#[derive(Debug)]
pub struct Info {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

/// Verbs of the kinds only read here (nodes, namespaces, events, leases). Discovery lists
/// only what is served: kubectl refuses verbs a resource does not list before it sends
/// anything.
pub const READ_VERBS: [&str; 3] = ["get", "list", "watch"];
/// Verbs of the stored kinds.
pub const WRITE_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub const CORE: &str = "";
pub const COORDINATION: &str = "coordination.k8s.io";
pub const DEVICES: &str = "devices.kubeedge.io";

impl Resource {
    pub const ALL: [Resource; 9] = [
        Resource::Pods,
        Resource::Nodes,
        Resource::ConfigMaps,
        Resource::Secrets,
        Resource::Namespaces,
        Resource::Events,
        Resource::Leases,
        Resource::Devices,
        Resource::DeviceModels,
    ];

    pub fn info(self) -> Info {
        let (group, version, plural, singular, kind, namespaced, short_names): (
            _,
            _,
            _,
            _,
            _,
            _,
            &'static [&'static str],
        ) = match self {
            Resource::Pods => (CORE, "v1", "pods", "pod", "Pod", true, &["po"]),
            Resource::Nodes => (CORE, "v1", "nodes", "node", "Node", false, &["no"]),
            Resource::ConfigMaps => (
                CORE,
                "v1",
                "configmaps",
                "configmap",
                "ConfigMap",
                true,
                &["cm"],
            ),
            Resource::Secrets => (CORE, "v1", "secrets", "secret", "Secret", true, &[]),
            Resource::Namespaces => (
                CORE,
                "v1",
                "namespaces",
                "namespace",
                "Namespace",
                false,
                &["ns"],
            ),
            Resource::Events => (CORE, "v1", "events", "event", "Event", true, &["ev"]),
            Resource::Leases => (COORDINATION, "v1", "leases", "lease", "Lease", true, &[]),
            Resource::Devices => (DEVICES, "v1beta1", "devices", "device", "Device", true, &[]),
            Resource::DeviceModels => (
                DEVICES,
                "v1beta1",
                "devicemodels",
                "devicemodel",
                "DeviceModel",
                true,
                &[],
            ),
        };
        Info {
            group,
            version,
            plural,
            singular,
            kind,
            namespaced,
            short_names,
        }
    }

    /// The resource named `plural` in `group`/`version`.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| {
            let i = r.info();
            i.group == group && i.version == version && i.plural == plural
        })
    }

    /// The store's kind, for the kinds the store holds (and the API writes).
    pub fn kind(self) -> Option<cloudstore::Kind> {
        use cloudstore::Kind;
        match self {
            Resource::Pods => Some(Kind::Pod),
            Resource::ConfigMaps => Some(Kind::ConfigMap),
            Resource::Secrets => Some(Kind::Secret),
            Resource::Devices => Some(Kind::Device),
            Resource::DeviceModels => Some(Kind::DeviceModel),
            Resource::Nodes | Resource::Namespaces | Resource::Events | Resource::Leases => None,
        }
    }

    /// Served as custom resources would be (no strategic merge patch, no unconditional
    /// update).
    pub fn is_custom(self) -> bool {
        self.info().group == DEVICES
    }

    /// The verbs discovery lists.
    pub fn verbs(self) -> &'static [&'static str] {
        if self.kind().is_some() {
            &WRITE_VERBS
        } else {
            &READ_VERBS
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() {
            i.version.to_owned()
        } else {
            format!("{}/{}", i.group, i.version)
        }
    }
}

/// The served groups other than core, each with its one version.
pub const GROUPS: [(&str, &str); 2] = [(COORDINATION, "v1"), (DEVICES, "v1beta1")];

/// `/api`: the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_json(name: &str, version: &str) -> Value {
    let gv = json!({ "groupVersion": format!("{name}/{version}"), "version": version });
    json!({ "name": name, "versions": [gv.clone()], "preferredVersion": gv })
}

/// `/apis`: the named groups.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = GROUPS.iter().map(|(g, v)| group_json(g, v)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/<group>`, if served.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = GROUPS.iter().find(|(g, _)| *g == group)?;
    let mut j = group_json(g, v);
    j["kind"] = json!("APIGroup");
    j["apiVersion"] = json!("v1");
    Some(j)
}

/// `/api/v1` or `/apis/<group>/<version>`: the resources served there, if any.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = Resource::ALL
        .into_iter()
        .map(|r| (r.info(), r.verbs()))
        .filter(|(i, _)| i.group == group && i.version == version)
        .map(|(i, verbs)| {
            let mut r = json!({
                "name": i.plural,
                "singularName": i.singular,
                "namespaced": i.namespaced,
                "kind": i.kind,
                "verbs": verbs,
            });
            if !i.short_names.is_empty() {
                r["shortNames"] = json!(i.short_names);
            }
            // `kubectl get all` is the `all` category: of the served kinds, pods.
            if i.plural == "pods" {
                r["categories"] = json!(["all"]);
            }
            r
        })
        .collect();
    let mut resources = resources;
    if group.is_empty() && version == "v1" {
        resources.push(json!({
            "name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod",
            "verbs": ["get", "patch", "update"],
        }));
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
