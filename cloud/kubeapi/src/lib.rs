//! cloudcore's Kubernetes API, sans-IO: one request (method, path, `Accept`) and who sent it
//! in, one response out. The runner (`cloudcore`'s `kubeapi` listener) does TLS and HTTP and
//! hands the objects over through [`Objects`], reading the same store the admin API reads.
//!
//! - [`resources`]: what is served, and the discovery documents.
//! - [`selectors`]: `labelSelector` and `fieldSelector`.
//! - [`table`]: the `Table` form `kubectl get` asks for, with the printers' columns.
//! - [`watch`]: `?watch=1`, from the store's history of changes (410 Gone when too old),
//!   bookmarks; kinds without a history as a diff of the list.
//!
//! - [`write`]: create, update, patch and delete of the stored kinds, `dryRun=All`.
//! - [`jsonpatch`]: RFC 6902, for `kubectl patch --type json`.
//! - [`protobuf`]: the protobuf bodies of `kubectl create configmap|secret generic`.
//! - [`openapi`]: the least OpenAPI v3 kubectl needs to write without `--validate=false`.
//!
//! The admin identity (`O=system:masters`) reads everything and writes the stored kinds (pods,
//! configmaps, secrets, devices, devicemodels); anyone else authenticated is refused 403 until
//! Node-authorizer rules come, and a request without a client certificate 401, except the
//! health and version endpoints.

#![forbid(unsafe_code)]

pub mod jsonpatch;
pub mod openapi;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod table;
pub mod watch;
pub mod write;

use serde_json::{json, Value};

pub use resources::Resource;
use selectors::{FieldSelector, LabelSelector};
use table::Include;
pub use write::Deleted;

/// The Kubernetes version this API speaks (the one the edges report as their kubelet's).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";
pub const KUBE_GIT_VERSION: &str = "v1.32.10";

/// The group the admin identity belongs to, as in kube-apiserver's RBAC bootstrap.
pub const MASTERS_GROUP: &str = "system:masters";

/// Who sent a request, from its verified client certificate or bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Anonymous,
    /// `CN` is the name, each `O` a group (as kube-apiserver's x509 authenticator reads them).
    Cert {
        name: String,
        groups: Vec<String>,
    },
    /// A bearer token's user and groups (as the runner's token file records them).
    Token {
        name: String,
        groups: Vec<String>,
    },
}

/// One request, as far as the API needs it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path with query string.
    pub target: &'a str,
    pub accept: Option<&'a str>,
    /// `Content-Type` (a patch's type) and the body.
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// One response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

/// Where the objects come from. Objects returned are as stored; the API adds `kind` and
/// `apiVersion`.
pub trait Objects {
    /// Objects of `r` (in `namespace` if given) and the resourceVersion of the list.
    fn list(&self, r: Resource, namespace: Option<&str>) -> (Vec<Value>, String);

    /// One object by name (`namespace` for namespaced kinds).
    fn get(&self, r: Resource, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.list(r, namespace)
            .0
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    /// Creates or updates an object of a stored kind ([`Resource::kind`]) as the store's
    /// `put` does; the object as stored (with `dry_run`, as it would be).
    fn put(
        &self,
        r: Resource,
        obj: &Value,
        expect: cloudstore::Put,
        dry_run: bool,
    ) -> Result<Value, cloudstore::StoreError> {
        let _ = (obj, expect, dry_run);
        Err(cloudstore::StoreError::Patch(
            405,
            format!("{} are read-only here", r.info().plural),
        ))
    }

    /// Deletes an object of a stored kind; a pod running on a node gracefully, within
    /// `grace` seconds (its own `terminationGracePeriodSeconds` if `None`).
    fn delete(
        &self,
        r: Resource,
        namespace: Option<&str>,
        name: &str,
        grace: Option<u64>,
    ) -> Result<Deleted, cloudstore::StoreError> {
        let _ = (namespace, name, grace);
        Err(cloudstore::StoreError::Patch(
            405,
            format!("{} are read-only here", r.info().plural),
        ))
    }

    /// Replaces the status of an object (the `/status` subresource), at `expect_rv` if
    /// given; the object as stored (with `dry_run`, as it would be).
    fn put_status(
        &self,
        r: Resource,
        namespace: Option<&str>,
        name: &str,
        status: &Value,
        expect_rv: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, cloudstore::StoreError> {
        let _ = (namespace, name, status, expect_rv, dry_run);
        Err(cloudstore::StoreError::Patch(
            405,
            format!("{} are read-only here", r.info().plural),
        ))
    }

    /// Changes to `r` after resourceVersion `since` (`None`: from now, so none) and the
    /// version they bring a watcher to; `None` for kinds without a history (they are watched
    /// by diffing their list), `Err` when `since` is older than what is kept.
    fn changes(
        &self,
        r: Resource,
        since: Option<u64>,
    ) -> Option<Result<(Vec<cloudstore::history::Event>, u64), cloudstore::history::TooOld>> {
        let _ = (r, since);
        None
    }

    /// Random text, for `generateName` suffixes.
    fn entropy(&self) -> String {
        proto::message::new_msg_id()
    }
}

/// What a request gets: one response, or a watch the runner streams.
#[derive(Debug)]
pub enum Outcome {
    Response(Response),
    Watch(Box<watch::Watch>),
}

impl From<Response> for Outcome {
    fn from(r: Response) -> Outcome {
        Outcome::Response(r)
    }
}

/// What the server says of itself.
#[derive(Debug, Clone)]
pub struct Server {
    /// `host:port` clients reach this API at (discovery's `serverAddressByClientCIDRs`).
    pub address: String,
    /// cloudcore's own version, for `/version`'s build fields.
    pub build: String,
}

/// A `Status` failure with its `kind`, as the apiserver writes it.
pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Response {
    let mut body = proto::objresp::status(code, reason, message, details);
    body["kind"] = json!("Status");
    body["apiVersion"] = json!("v1");
    if body["details"].is_null() {
        body.as_object_mut().map(|m| m.remove("details"));
    }
    Response { status: code, body }
}

fn ok(body: Value) -> Response {
    Response { status: 200, body }
}

fn not_found_path() -> Response {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

/// Decodes `%XX` and `+` in a query value.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A request's query parameters, decoded.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Query, Response> {
        let mut out = Vec::new();
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match (percent_decode(k), percent_decode(v)) {
                (Some(k), Some(v)) => out.push((k, v)),
                _ => {
                    return Err(status(
                        400,
                        "BadRequest",
                        &format!("malformed query parameter {kv:?}"),
                        Value::Null,
                    ))
                }
            }
        }
        Ok(Query(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("1" | "true"))
    }
}

/// Where a resource request points.
#[derive(Debug, PartialEq)]
pub(crate) struct Target<'a> {
    resource: Resource,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    /// The `/status` subresource (of pods).
    status: bool,
}

/// What a path asks for.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Version,
    Health,
    ApiVersions,
    GroupList,
    Group(&'a str),
    ResourceList(&'a str, &'a str),
    OpenApiRoot,
    /// `/openapi/v3/<group-version path>`.
    OpenApi(String),
    Resource(Target<'a>),
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => return Route::Version,
        ["healthz" | "readyz" | "livez", ..] => return Route::Health,
        ["api"] => return Route::ApiVersions,
        ["apis"] => return Route::GroupList,
        ["apis", g] => return Route::Group(g),
        ["openapi", "v3"] => return Route::OpenApiRoot,
        ["openapi", "v3", gv @ ..] => return Route::OpenApi(gv.join("/")),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    let find = |plural| Resource::find(group, version, plural);
    let target = |resource: Option<Resource>, namespace, name| match resource {
        Some(resource) => Route::Resource(Target {
            resource,
            namespace,
            name,
            status: false,
        }),
        None => Route::NotFound,
    };
    match rest {
        [] => Route::ResourceList(group, version),
        // `pods/<name>/status`: the one subresource served.
        ["namespaces", ns, "pods", name, "status"] if group.is_empty() && version == "v1" => {
            Route::Resource(Target {
                resource: Resource::Pods,
                namespace: Some(*ns),
                name: Some(*name),
                status: true,
            })
        }
        // `/api/v1/namespaces/<ns>/<plural>[/<name>]`: namespaced kinds in one namespace.
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 1 => {
            let r = find(plural).filter(|r| r.info().namespaced);
            target(r, Some(*ns), tail.first().copied())
        }
        // Cluster-scoped kinds by name; namespaced kinds only listed across namespaces.
        [plural] => target(find(plural), None, None),
        [plural, name] => target(
            find(plural).filter(|r| !r.info().namespaced),
            None,
            Some(*name),
        ),
        _ => Route::NotFound,
    }
}

/// Whether the client takes a Table (`kubectl get`'s first choice).
fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|m| {
            let params: Vec<&str> = m.split(';').map(str::trim).collect();
            params.contains(&"as=Table")
                && params.contains(&"g=meta.k8s.io")
                && params.contains(&"v=v1")
        })
    })
}

fn forbidden(user: &str, verb: &str, t: &Target) -> Response {
    let info = t.resource.info();
    let scope = match t.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    let subject = match t.name {
        Some(n) => format!("{} \"{n}\"", qualified(&info)),
        None => qualified(&info),
    };
    let mut details = json!({ "kind": info.plural });
    if let Some(n) = t.name {
        details["name"] = json!(n);
    }
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    status(
        403,
        "Forbidden",
        &format!(
            "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{}{}\" in API group \"{}\" {scope}",
            info.plural, if t.status { "/status" } else { "" }, info.group
        ),
        details,
    )
}

/// `pods` or `leases.coordination.k8s.io`, as messages name a resource.
fn qualified(info: &resources::Info) -> String {
    if info.group.is_empty() {
        info.plural.to_owned()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

/// Answers one request at `now` (unix seconds, for ages in Tables).
pub fn handle(
    req: &Request,
    user: &User,
    objects: &dyn Objects,
    server: &Server,
    now: i64,
) -> Outcome {
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let route = route(path);
    // The health and version endpoints are public, as kube-apiserver's
    // system:public-info-viewer role makes them.
    if matches!(route, Route::Version | Route::Health) {
        if req.method != "GET" && req.method != "HEAD" {
            return method_not_allowed(req.method).into();
        }
        let r = match route {
            Route::Version => ok(json!({
                "major": KUBE_MAJOR, "minor": KUBE_MINOR, "gitVersion": KUBE_GIT_VERSION,
                "gitCommit": server.build, "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
                "goVersion": "none (edgecore cloudcore, Rust)", "compiler": "rustc", "platform": "linux/unknown",
            })),
            _ => Response {
                status: 200,
                body: json!("ok"),
            },
        };
        return r.into();
    }
    let (name, groups) = match user {
        User::Anonymous => return status(401, "Unauthorized", "Unauthorized", Value::Null).into(),
        User::Cert { name, groups } | User::Token { name, groups } => (name, groups),
    };
    let admin = groups.iter().any(|g| g == MASTERS_GROUP);
    let verb = match (req.method, &route) {
        ("GET", Route::Resource(t)) if t.name.is_none() => {
            let q = Query::parse(query).unwrap_or_default();
            if q.flag("watch") {
                "watch"
            } else {
                "list"
            }
        }
        ("GET", _) => "get",
        ("POST", Route::Resource(t)) if t.name.is_none() => "create",
        ("PUT", Route::Resource(t)) if t.name.is_some() => "update",
        ("PATCH", Route::Resource(t)) if t.name.is_some() => "patch",
        ("DELETE", Route::Resource(t)) if t.name.is_some() => "delete",
        ("DELETE", Route::Resource(t)) if !t.status => "deletecollection",
        _ => return method_not_allowed(req.method).into(),
    };
    // Discovery is open to every authenticated user (kube-apiserver's system:discovery
    // role), so a refused client learns what it may not do, by name.
    let discovery = !matches!(route, Route::Resource(_) | Route::NotFound);
    if !admin && !discovery {
        // Node-authorizer rules for edges' certificates come later: refused for now.
        let r = match &route {
            Route::Resource(t) => forbidden(name, verb, t),
            _ => status(
                403,
                "Forbidden",
                &format!("forbidden: User \"{name}\" cannot get path \"{path}\""),
                json!({}),
            ),
        };
        return r.into();
    }
    let query = match Query::parse(query) {
        Ok(q) => q,
        Err(r) => return r.into(),
    };
    let r = match route {
        Route::ApiVersions => ok(resources::api_versions(&server.address)),
        Route::GroupList => ok(resources::api_group_list()),
        Route::Group(g) => resources::api_group(g).map_or_else(not_found_path, ok),
        Route::ResourceList(g, v) => resources::resource_list(g, v).map_or_else(not_found_path, ok),
        Route::OpenApiRoot => ok(openapi::root(&server.build)),
        Route::OpenApi(gv) => openapi::group_version(&gv).map_or_else(not_found_path, ok),
        Route::Resource(t) if matches!(verb, "get" | "list" | "watch") => {
            return read(&t, verb, &query, req.accept, objects, now)
        }
        Route::Resource(t) if t.status && matches!(verb, "update" | "patch") => {
            write::write_status(&t, verb, req, &query, objects)
        }
        Route::Resource(t) if t.status => method_not_allowed(req.method),
        Route::Resource(t) if t.resource.kind().is_some() => {
            write::write(&t, verb, req, &query, objects)
        }
        Route::Resource(_) => method_not_allowed(req.method),
        Route::Version | Route::Health | Route::NotFound => not_found_path(),
    };
    r.into()
}

fn method_not_allowed(method: &str) -> Response {
    status(
        405,
        "MethodNotAllowed",
        &format!("{method} is not supported on this resource: the server does not allow this method on the requested resource"),
        json!({}),
    )
}

/// Sets `kind` and `apiVersion` as the apiserver serializes a single object.
pub(crate) fn typed(r: Resource, mut o: Value) -> Value {
    if let Some(m) = o.as_object_mut() {
        m.insert("kind".into(), json!(r.info().kind));
        m.insert("apiVersion".into(), json!(r.api_version()));
    }
    o
}

fn include(q: &Query) -> Include {
    match q.get("includeObject") {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    }
}

fn read(
    t: &Target,
    verb: &str,
    q: &Query,
    accept: Option<&str>,
    objects: &dyn Objects,
    now: i64,
) -> Outcome {
    let info = t.resource.info();
    let table = wants_table(accept);
    if let Some(name) = t.name {
        let r = match objects.get(t.resource, t.namespace, name) {
            Some(o) if table => {
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                ok(table::table(
                    t.resource,
                    &[typed(t.resource, o)],
                    &rv,
                    include(q),
                    now,
                ))
            }
            Some(o) => ok(typed(t.resource, o)),
            None => {
                let mut details = json!({ "name": name, "kind": info.plural });
                if !info.group.is_empty() {
                    details["group"] = json!(info.group);
                }
                status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", qualified(&info)),
                    details,
                )
            }
        };
        return r.into();
    }
    let labels = match LabelSelector::parse(q.get("labelSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => {
            return status(
                400,
                "BadRequest",
                &format!("unable to parse requirement: {e}"),
                Value::Null,
            )
            .into()
        }
    };
    let fields = match FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), t.resource) {
        Ok(s) => s,
        Err(e) => return status(400, "BadRequest", &e, Value::Null).into(),
    };
    if verb == "watch" {
        let since = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0);
        let mut w = watch::Watch::new(
            t.resource,
            t.namespace,
            labels,
            fields,
            table,
            include(q),
            since,
        );
        w.timeout_secs = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(watch::DEFAULT_TIMEOUT_SECS)
            .min(watch::MAX_TIMEOUT_SECS);
        w.bookmarks = q.flag("allowWatchBookmarks");
        return Outcome::Watch(Box::new(w));
    }
    let (items, rv) = objects.list(t.resource, t.namespace);
    let items: Vec<Value> = items
        .into_iter()
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .map(|o| typed(t.resource, o))
        .collect();
    if table {
        return ok(table::table(t.resource, &items, &rv, include(q), now)).into();
    }
    ok(json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": t.resource.api_version(),
        "metadata": { "resourceVersion": rv },
        "items": items,
    }))
    .into()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_tests;
