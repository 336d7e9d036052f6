//! A minimal OpenAPI v3 (`/openapi/v3` and one document per group-version): for each stored
//! kind, the PATCH operation of its object path with its group-version-kind and the
//! `fieldValidation` query parameter. That is what kubectl 1.32 reads before `create`,
//! `replace` and `apply` to learn that the server validates (it then sends
//! `fieldValidation=Strict` instead of validating against OpenAPI v2, which it wants as
//! protobuf); without it kubectl refuses to write unless given `--validate=false`. No schemas
//! are served: `kubectl explain` does not work, and `apply` computes its strategic merge
//! patches from the types compiled into kubectl, as it does for a server without them.

use serde_json::{json, Value};

use crate::resources::GROUPS;
use crate::Resource;

/// `api/v1` or `apis/<group>/<version>`, as the root document names group-versions.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is (the hash is the build's, so a
/// client's cache is dropped when cloudcore changes).
pub fn root(build: &str) -> Value {
    // FNV-1a of the build: a hash safe in a query string, whatever the build string holds.
    let hash = build.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut paths = serde_json::Map::new();
    for (g, v) in std::iter::once(("", "v1")).chain(GROUPS) {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash={hash:016X}") }),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/<gv path>`, if served.
pub fn group_version(path: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in Resource::ALL.into_iter().filter(|r| r.kind().is_some()) {
        let i = r.info();
        if gv_path(i.group, i.version) != path {
            continue;
        }
        let object = if i.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}/{{name}}", i.plural)
        } else {
            format!("/{path}/{}/{{name}}", i.plural)
        };
        paths.insert(
            object,
            json!({ "patch": {
                "operationId": format!("patch{}", i.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": { "group": i.group, "version": i.version, "kind": i.kind },
                "parameters": [
                    { "name": "dryRun", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
                    { "name": "fieldValidation", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
                ],
                "responses": { "200": { "description": "OK" } },
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": crate::KUBE_GIT_VERSION },
        "paths": paths,
    }))
}
