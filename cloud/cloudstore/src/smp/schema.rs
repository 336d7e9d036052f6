//! Kubernetes' patch strategies, in one table: which lists merge by which key, which lists of
//! primitives merge as sets, and which fields carry `retainKeys`. Everything not listed here
//! follows the defaults of the reference implementation: maps and structs merge recursively,
//! lists are replaced whole.
//!
//! Derived from the `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api core/v1 and
//! apimachinery's ObjectMeta at Kubernetes v1.32 (the tags the apiserver reads by reflection;
//! OpenAPI list types drive only server-side apply). The table lists every tagged field of the
//! kinds cloudcore serves. A field whose list is replaced whole needs no entry, even if its
//! element type has tagged fields: a replaced list's elements are never merged.

/// How a list field is patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// No tag: the patch list replaces the list.
    Replace,
    /// `patchStrategy:"merge"` on a list of primitives: a set union (e.g. `finalizers`).
    MergeSet,
    /// `patchStrategy:"merge"` with `patchMergeKey`: elements merge by that key.
    MergeByKey {
        key: &'static str,
        /// `merge,retainKeys`: the strategy of `volumes` and `resourceClaims`. Informational:
        /// the `$retainKeys` directive is honoured in any map (as upstream does).
        retain_keys: bool,
    },
}

/// What a field is, for the patcher.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    /// A struct (JSON object) with a schema of its own.
    Struct(&'static Type),
    /// A list, with the schema of its elements when they are structs.
    List(ListStrategy, Option<&'static Type>),
}

/// The tagged fields of one Go type, by JSON name.
#[derive(Debug)]
pub struct Type {
    pub name: &'static str,
    pub fields: &'static [(&'static str, Field)],
}

impl Type {
    pub fn field(&self, name: &str) -> Option<Field> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}

/// A type with no tagged fields: maps merge, lists are replaced.
pub static UNTYPED: Type = Type {
    name: "untyped",
    fields: &[],
};

const fn by(key: &'static str, elem: &'static Type) -> Field {
    Field::List(
        ListStrategy::MergeByKey {
            key,
            retain_keys: false,
        },
        Some(elem),
    )
}

const fn by_retaining(key: &'static str, elem: &'static Type) -> Field {
    Field::List(
        ListStrategy::MergeByKey {
            key,
            retain_keys: true,
        },
        Some(elem),
    )
}

const SET: Field = Field::List(ListStrategy::MergeSet, None);

pub static OBJECT_META: Type = Type {
    name: "ObjectMeta",
    fields: &[
        ("ownerReferences", by("uid", &UNTYPED)),
        ("finalizers", SET),
    ],
};

pub static CONTAINER: Type = Type {
    name: "Container",
    fields: &[
        ("ports", by("containerPort", &UNTYPED)),
        ("env", by("name", &UNTYPED)),
        ("volumeMounts", by("mountPath", &UNTYPED)),
        ("volumeDevices", by("devicePath", &UNTYPED)),
    ],
};

pub static POD_SPEC: Type = Type {
    name: "PodSpec",
    fields: &[
        ("volumes", by_retaining("name", &UNTYPED)),
        ("initContainers", by("name", &CONTAINER)),
        ("containers", by("name", &CONTAINER)),
        ("ephemeralContainers", by("name", &CONTAINER)),
        ("imagePullSecrets", by("name", &UNTYPED)),
        ("hostAliases", by("ip", &UNTYPED)),
        ("topologySpreadConstraints", by("topologyKey", &UNTYPED)),
        ("schedulingGates", by("name", &UNTYPED)),
        ("resourceClaims", by_retaining("name", &UNTYPED)),
    ],
};

pub static POD_STATUS: Type = Type {
    name: "PodStatus",
    fields: &[
        ("conditions", by("type", &UNTYPED)),
        ("hostIPs", by("ip", &UNTYPED)),
        ("podIPs", by("ip", &UNTYPED)),
        ("resourceClaimStatuses", by_retaining("name", &UNTYPED)),
        // containerStatuses, initContainerStatuses, ephemeralContainerStatuses: untagged,
        // replaced whole (a kubelet always sends them whole).
    ],
};

pub static POD: Type = Type {
    name: "Pod",
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&POD_SPEC)),
        ("status", Field::Struct(&POD_STATUS)),
    ],
};

pub static NODE_SPEC: Type = Type {
    name: "NodeSpec",
    fields: &[("podCIDRs", SET)],
};

pub static NODE_STATUS: Type = Type {
    name: "NodeStatus",
    fields: &[
        ("conditions", by("type", &UNTYPED)),
        // Upstream calls this tag wrong (several addresses share a type); kubelets work
        // around it with a trailing `{"$patch":"replace"}` element, which the merge honours.
        ("addresses", by("type", &UNTYPED)),
    ],
};

pub static NODE: Type = Type {
    name: "Node",
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&NODE_SPEC)),
        ("status", Field::Struct(&NODE_STATUS)),
    ],
};

static NAMESPACE_STATUS: Type = Type {
    name: "NamespaceStatus",
    fields: &[("conditions", by("type", &UNTYPED))],
};

pub static NAMESPACE: Type = Type {
    name: "Namespace",
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("status", Field::Struct(&NAMESPACE_STATUS)),
    ],
};

pub static SERVICE_ACCOUNT: Type = Type {
    name: "ServiceAccount",
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("secrets", by("name", &UNTYPED)),
    ],
};

/// ConfigMap, Secret, Lease, Event: only their metadata has tagged fields.
pub static PLAIN_OBJECT: Type = Type {
    name: "Object",
    fields: &[("metadata", Field::Struct(&OBJECT_META))],
};

/// The schema of a Kubernetes kind (`Pod`, `Node`, …).
pub fn for_kind(kind: &str) -> &'static Type {
    match kind {
        "Pod" => &POD,
        "Node" => &NODE,
        "Namespace" => &NAMESPACE,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        _ => &PLAIN_OBJECT,
    }
}
