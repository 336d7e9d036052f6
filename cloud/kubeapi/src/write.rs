//! The write verbs for the stored kinds, with kube-apiserver's semantics: create (POST to the
//! collection, `generateName`), update (PUT, optimistic concurrency on
//! `metadata.resourceVersion`), patch (JSON merge, RFC 6902 JSON patch, strategic merge with
//! the store's patch strategies), delete (a running pod gracefully) and `dryRun=All` for each.
//! Validation, defaults and limits are the store's ([`cloudstore::CloudStore::put`]), the
//! same code the admin API's apply runs; a patch is applied here to the stored object and the
//! result written as an update conditioned on the version it was applied to.

use cloudstore::{smp, Put, StoreError};
use serde_json::{json, Value};

use crate::{jsonpatch, qualified, status, typed, Objects, Query, Request, Response, Target};

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// Removed; its last state.
    Gone(Value),
    /// Marked (`deletionTimestamp`): its node stops it, then it is removed.
    Terminating(Value),
}

/// The conflict message kube-apiserver gives a stale update (its `OptimisticLockErrorMsg`).
pub const CONFLICT_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Characters of a `generateName` suffix (apimachinery's `utilrand.String`: no vowels, no
/// look-alikes, so no words and no confusion).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const SUFFIX_LEN: usize = 5;

fn bad_request(message: &str) -> Response {
    status(400, "BadRequest", message, Value::Null)
}

fn details(t: &Target, name: &str) -> Value {
    let info = t.resource.info();
    let mut d = json!({ "name": name, "kind": info.plural });
    if !info.group.is_empty() {
        d["group"] = json!(info.group);
    }
    d
}

/// A store refusal as the apiserver's `Status`.
fn refused(t: &Target, name: &str, e: StoreError) -> Response {
    let info = t.resource.info();
    let what = format!("{} \"{name}\"", qualified(&info));
    match e {
        StoreError::NotFound(_) => status(
            404,
            "NotFound",
            &format!("{what} not found"),
            details(t, name),
        ),
        StoreError::AlreadyExists(_) => status(
            409,
            "AlreadyExists",
            &format!("{what} already exists"),
            details(t, name),
        ),
        StoreError::Conflict(..) => status(
            409,
            "Conflict",
            &format!("Operation cannot be fulfilled on {what}: {CONFLICT_MESSAGE}"),
            details(t, name),
        ),
        StoreError::Refused(r, _) if r.code == 422 => invalid(t, name, &r.message),
        StoreError::Refused(r, _) => status(
            r.code,
            r.reason,
            &r.full_message(info.kind, &qualified(&info), name),
            details(t, name),
        ),
        StoreError::Patch(code, message) => {
            let reason = if code == 422 { "Invalid" } else { "BadRequest" };
            status(code, reason, &message, Value::Null)
        }
        other => status(500, "InternalError", &other.to_string(), Value::Null),
    }
}

/// 422 Invalid for `problem` (`<field>: <what>`), with the cause kubectl prints: it shows
/// `The <Kind> "<name>" is invalid: <field>: <what>` from the details, not the message.
fn invalid(t: &Target, name: &str, problem: &str) -> Response {
    let info = t.resource.info();
    let (field, what) = match problem.split_once(": ") {
        Some((f, w)) if !f.contains(' ') => (f, w),
        _ => ("", problem),
    };
    let mut d = json!({
        "name": name, "kind": info.kind,
        "causes": [{ "reason": "FieldValueInvalid", "message": what, "field": field }],
    });
    if !info.group.is_empty() {
        d["group"] = json!(info.group);
    }
    status(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {problem}", info.kind),
        d,
    )
}

/// `dryRun=All` (the only value the apiserver knows), from the query or DeleteOptions.
fn dry_run(q: &Query, options: &Value) -> Result<bool, Response> {
    let from_body = options["dryRun"].as_array().into_iter().flatten();
    let values: Vec<&str> =
        q.0.iter()
            .filter(|(k, _)| k == "dryRun")
            .map(|(_, v)| v.as_str())
            .chain(from_body.filter_map(Value::as_str))
            .collect();
    match values.iter().find(|v| **v != "All") {
        Some(v) => Err(bad_request(&format!(
            "Invalid dry run value: {v:?}: supported values: \"All\""
        ))),
        None => Ok(!values.is_empty()),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(&format!(
            "the body of the request was in an unknown format - accepted media types include: application/json: {e}"
        ))
    })
}

/// A request's media type, without parameters.
fn media_type<'a>(req: &Request<'a>) -> &'a str {
    req.content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
}

fn unsupported_media(accepted: &[&str]) -> Response {
    status(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
        Value::Null,
    )
}

/// An object or DeleteOptions body: JSON, or protobuf for the configmaps and secrets
/// kubectl's generators send that way (`kubectl create configmap|secret generic`).
fn object_body(req: &Request) -> Result<Value, Response> {
    match media_type(req) {
        "" | "application/json" => parse_body(req.body),
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(req.body)
            .map_err(|e| bad_request(&format!("the protobuf body cannot be read: {e}"))),
        _ => Err(unsupported_media(&[
            "application/json",
            crate::protobuf::MEDIA_TYPE,
        ])),
    }
}

/// Puts the URL's namespace into `obj` (or refuses a different one) and checks its kind.
fn place(t: &Target, obj: &mut Value) -> Result<(), Response> {
    let info = t.resource.info();
    if !obj.is_object() || !obj["metadata"].is_object() && !obj["metadata"].is_null() {
        return Err(bad_request("the object must be a mapping with metadata"));
    }
    match obj["kind"].as_str() {
        None => obj["kind"] = json!(info.kind),
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(bad_request(&format!(
                "the kind of the provided object ({k}) does not match the resource ({})",
                info.plural
            )))
        }
    }
    if let Some(ns) = t.namespace {
        match obj["metadata"]["namespace"].as_str() {
            None | Some("") => obj["metadata"]["namespace"] = json!(ns),
            Some(given) if given == ns => {}
            Some(_) => {
                return Err(bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
        }
    }
    Ok(())
}

/// A `generateName` suffix from `entropy` (any random text: the runner's).
fn suffix(entropy: &str) -> String {
    entropy
        .bytes()
        .take(SUFFIX_LEN)
        .map(|b| SUFFIX_ALPHABET[b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

fn created(code: u16, t: &Target, obj: Value) -> Response {
    Response {
        status: code,
        body: typed(t.resource, obj),
    }
}

/// Answers a write (`verb` create, update, patch, delete or deletecollection) on a stored
/// kind.
pub(crate) fn write(
    t: &Target,
    verb: &str,
    req: &Request,
    q: &Query,
    objects: &dyn Objects,
) -> Response {
    let options = match verb {
        "delete" | "deletecollection" if !req.body.is_empty() => match object_body(req) {
            Ok(o) => o,
            Err(r) => return r,
        },
        _ => Value::Null,
    };
    let dry = match dry_run(q, &options) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let result = match verb {
        "create" => create(t, req, objects, dry),
        "update" => update(t, req, objects, dry),
        "patch" => patch(t, req, objects, dry),
        "deletecollection" => delete_collection(t, q, &options, objects, dry),
        _ => delete(t, q, &options, objects, dry),
    };
    result.unwrap_or_else(|r| r)
}

fn create(
    t: &Target,
    req: &Request,
    objects: &dyn Objects,
    dry: bool,
) -> Result<Response, Response> {
    let mut obj = object_body(req)?;
    place(t, &mut obj)?;
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        if let Some(prefix) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
        {
            let name = format!("{prefix}{}", suffix(&objects.entropy()));
            obj["metadata"]["name"] = json!(name);
        }
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if obj["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty())
    {
        return Err(status(
            500,
            "InternalError",
            "resourceVersion should not be set on objects to be created",
            Value::Null,
        ));
    }
    let stored = objects
        .put(t.resource, &obj, Put::Create, dry)
        .map_err(|e| refused(t, &name, e))?;
    Ok(created(201, t, stored))
}

fn update(
    t: &Target,
    req: &Request,
    objects: &dyn Objects,
    dry: bool,
) -> Result<Response, Response> {
    let mut obj = object_body(req)?;
    place(t, &mut obj)?;
    let url_name = t.name.unwrap_or("");
    put_named(t, url_name, obj, objects, dry)
}

/// An update of `url_name` to `obj`, conditioned on the resourceVersion `obj` carries.
fn put_named(
    t: &Target,
    url_name: &str,
    obj: Value,
    objects: &dyn Objects,
    dry: bool,
) -> Result<Response, Response> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name != url_name {
        return Err(bad_request(&format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name})"
        )));
    }
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .filter(|v| !v.is_empty());
    // Custom resources take no unconditional update (their strategy's
    // AllowUnconditionalUpdate is false); the core kinds here do.
    if rv.is_none() && t.resource.is_custom() {
        return Err(invalid(
            t,
            name,
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
        ));
    }
    let stored = objects
        .put(t.resource, &obj, Put::Update(rv), dry)
        .map_err(|e| refused(t, name, e))?;
    Ok(created(200, t, stored))
}

fn patch(
    t: &Target,
    req: &Request,
    objects: &dyn Objects,
    dry: bool,
) -> Result<Response, Response> {
    let name = t.name.unwrap_or("");
    let patched = patched(t, req, objects)?;
    put_named(t, name, patched, objects, dry)
}

/// The stored object with the request's patch applied; with no resourceVersion of its own,
/// the one it was applied to.
fn patched(t: &Target, req: &Request, objects: &dyn Objects) -> Result<Value, Response> {
    let name = t.name.unwrap_or("");
    let media = media_type(req);
    let mut accepted = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if !t.resource.is_custom() {
        accepted.push("application/strategic-merge-patch+json");
    }
    if media == "application/apply-patch+yaml" {
        return Err(status(
            415,
            "UnsupportedMediaType",
            "server-side apply (application/apply-patch+yaml) is not served by cloudcore: use client-side kubectl apply",
            Value::Null,
        ));
    }
    if !accepted.contains(&media) {
        return Err(unsupported_media(&accepted));
    }
    let current = objects
        .get(t.resource, t.namespace, name)
        .ok_or_else(|| refused(t, name, StoreError::NotFound(name.into())))?;
    let current = typed(t.resource, current);
    let patch = parse_body(req.body)?;
    let mut patched = match media {
        "application/merge-patch+json" => {
            let mut o = current.clone();
            smp::json_merge_patch(&mut o, &patch);
            o
        }
        "application/json-patch+json" => jsonpatch::apply(&current, &patch).map_err(|e| {
            if e.applies {
                status(422, "Invalid", &e.message, Value::Null)
            } else {
                bad_request(&e.message)
            }
        })?,
        // The apiserver takes no strategic merge patch for custom resources.
        "application/strategic-merge-patch+json" if !t.resource.is_custom() => {
            let schema = smp::schema::for_kind(t.resource.info().kind);
            smp::apply(&current, &patch, schema)
                .map_err(|e| refused(t, name, StoreError::Patch(e.code, e.message)))?
        }
        _ => return Err(unsupported_media(&accepted)),
    };
    // A patch without a resourceVersion applies to the version it was applied to.
    if patched["metadata"]["resourceVersion"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    }
    Ok(patched)
}

/// PUT or PATCH of `pods/<name>/status`: only the status changes (the rest of the body or
/// patch result is ignored, as the status strategy ignores it), conditioned on the
/// resourceVersion given or patched against.
pub(crate) fn write_status(
    t: &Target,
    verb: &str,
    req: &Request,
    q: &Query,
    objects: &dyn Objects,
) -> Response {
    let run = || -> Result<Response, Response> {
        let dry = dry_run(q, &Value::Null)?;
        let name = t.name.unwrap_or("");
        let obj = if verb == "update" {
            let mut obj = object_body(req)?;
            place(t, &mut obj)?;
            let given = obj["metadata"]["name"].as_str().unwrap_or("");
            if given != name {
                return Err(bad_request(&format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            obj
        } else {
            patched(t, req, objects)?
        };
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty());
        let stored = objects
            .put_status(t.resource, t.namespace, name, &obj["status"], rv, dry)
            .map_err(|e| refused(t, name, e))?;
        Ok(created(200, t, stored))
    };
    run().unwrap_or_else(|r| r)
}

fn delete(
    t: &Target,
    q: &Query,
    options: &Value,
    objects: &dyn Objects,
    dry: bool,
) -> Result<Response, Response> {
    let name = t.name.unwrap_or("");
    let grace = match q.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| bad_request(&format!("gracePeriodSeconds: invalid value {g:?}")))?,
        ),
        None => options["gracePeriodSeconds"].as_i64(),
    };
    // A negative grace period means "the object's own", as with none given.
    let grace = grace.and_then(|g| u64::try_from(g).ok());
    let current = objects
        .get(t.resource, t.namespace, name)
        .ok_or_else(|| refused(t, name, StoreError::NotFound(name.into())))?;
    let pre = &options["preconditions"];
    for (field, given) in [
        ("UID", &pre["uid"]),
        ("ResourceVersion", &pre["resourceVersion"]),
    ] {
        let key = if field == "UID" {
            "uid"
        } else {
            "resourceVersion"
        };
        if let Some(given) = given.as_str() {
            let actual = current["metadata"][key].as_str().unwrap_or("");
            if given != actual {
                return Err(status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {field} in precondition: {given}, {field} in object meta: {actual}",
                        qualified(&t.resource.info())
                    ),
                    details(t, name),
                ));
            }
        }
    }
    let result = if dry {
        Deleted::Gone(current)
    } else {
        objects
            .delete(t.resource, t.namespace, name, grace)
            .map_err(|e| refused(t, name, e))?
    };
    // Pods answer with the object (their registry returns the deleted object); the other
    // kinds with a Success Status naming it.
    let r = match result {
        Deleted::Terminating(o) => created(200, t, o),
        Deleted::Gone(o) if t.resource == crate::Resource::Pods => created(200, t, o),
        Deleted::Gone(o) => {
            let mut d = details(t, name);
            d["uid"] = o["metadata"]["uid"].clone();
            Response {
                status: 200,
                body: json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "details": d,
                }),
            }
        }
    };
    Ok(r)
}

/// `DELETE` on a collection: every object the label and field selectors pick, in one
/// namespace, each deleted as `delete` deletes it (pods gracefully); the answer is the list of
/// what was deleted, as kube-apiserver gives it. The first refusal ends it (what was deleted
/// before stays deleted, as there). Across all namespaces it is not served, as there.
fn delete_collection(
    t: &Target,
    q: &Query,
    options: &Value,
    objects: &dyn Objects,
    dry: bool,
) -> Result<Response, Response> {
    let info = t.resource.info();
    if info.namespaced && t.namespace.is_none() {
        return Err(crate::method_not_allowed("DELETE"));
    }
    let labels = crate::selectors::LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(|e| bad_request(&format!("unable to parse requirement: {e}")))?;
    let fields =
        crate::selectors::FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), t.resource)
            .map_err(|e| bad_request(&e))?;
    let (items, _) = objects.list(t.resource, t.namespace);
    let mut deleted = Vec::new();
    for o in items
        .into_iter()
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
    {
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let one = Target {
            resource: t.resource,
            namespace: t.namespace,
            name: Some(&name),
            status: false,
        };
        delete(&one, q, options, objects, dry)?;
        deleted.push(typed(t.resource, o));
    }
    Ok(Response {
        status: 200,
        body: json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": t.resource.api_version(),
            "metadata": {},
            "items": deleted,
        }),
    })
}
