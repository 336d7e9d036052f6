//! Strategic merge patch, as kube-apiserver applies it (apimachinery's
//! `strategicpatch.StrategicMergePatch` with the server's options: parallel delete lists
//! merged, unmatched nulls ignored).
//!
//! - Maps merge recursively; `null` deletes a key (a null for an absent key does nothing).
//! - Lists follow the field's strategy in [`schema`]: merged by key, merged as a set, or
//!   replaced whole (every untagged list, `containerStatuses` included).
//! - Directives: `$patch: replace|delete` on maps and as list elements (`merge` is refused, as
//!   upstream refuses it), `$retainKeys`, `$setElementOrder/<list>`,
//!   `$deleteFromPrimitiveList/<list>`.
//! - Merged lists are ordered as upstream orders them: `$setElementOrder` first, then the
//!   order of the patch, then the order of the live list (a new element with no known
//!   neighbour goes first).
//!
//! Errors carry the HTTP status the apiserver answers them with (400, 422 or 500).
//! [`json_merge_patch`] is RFC 7386, for kinds without patch strategies (CRDs).

pub mod schema;

use serde_json::{Map, Value};

use self::schema::{Field, ListStrategy, Type, UNTYPED};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// Why a patch cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SmpError {
    /// The HTTP status kube-apiserver answers this error with.
    pub code: u16,
    pub message: String,
}

fn bad(code: u16, message: impl Into<String>) -> SmpError {
    SmpError {
        code,
        message: message.into(),
    }
}

fn no_merge_key(item: &Value, key: &str) -> SmpError {
    bad(
        500,
        format!("map: {item} does not contain declared merge key: {key}"),
    )
}

/// Applies strategic-merge `patch` to `original` (an object of the kind `ty` describes).
pub fn apply(original: &Value, patch: &Value, ty: &'static Type) -> Result<Value, SmpError> {
    let Value::Object(p) = patch else {
        return Err(bad(400, "invalid JSON document: a patch must be an object"));
    };
    let o = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(o, p.clone(), ty).map(Value::Object)
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else
/// (lists included) replaces.
pub fn json_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            json_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn sub_struct(ty: &'static Type, key: &str) -> &'static Type {
    match ty.field(key) {
        Some(Field::Struct(t)) => t,
        Some(Field::List(_, Some(t))) => t,
        _ => &UNTYPED,
    }
}

fn list_meta(ty: &'static Type, key: &str) -> (ListStrategy, &'static Type) {
    match ty.field(key) {
        Some(Field::List(s, elem)) => (s, elem.unwrap_or(&UNTYPED)),
        _ => (ListStrategy::Replace, &UNTYPED),
    }
}

fn merge_key(s: ListStrategy) -> Option<&'static str> {
    match s {
        ListStrategy::MergeByKey { key, .. } => Some(key),
        _ => None,
    }
}

fn is_merge(s: ListStrategy) -> bool {
    !matches!(s, ListStrategy::Replace)
}

/// `mergeMap`: directives first (`$patch`, `$retainKeys`, `$setElementOrder`), then each key.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: &'static Type,
) -> Result<Map<String, Value>, SmpError> {
    if let Some(d) = patch.get(PATCH).cloned() {
        return match d.as_str() {
            Some("replace") => {
                patch.remove(PATCH);
                Ok(patch)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(bad(
                500,
                format!("unknown patch type: {d} in map: {}", Value::Object(patch)),
            )),
        };
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_order(&mut original, &mut patch, ty)?;
    for (k, pv) in patch {
        let (key, delete_list) = match k.strip_prefix(DELETE_FROM) {
            Some(rest) => (rest.to_owned(), true),
            None => (k, false),
        };
        if pv.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(ov) = original.get_mut(&key) else {
            if !delete_list {
                if let Some(v) = cleaned(pv) {
                    original.insert(key, v);
                }
            }
            continue;
        };
        let same_shape = matches!(
            (&*ov, &pv),
            (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_))
        );
        if !same_shape {
            if !delete_list {
                match cleaned(pv) {
                    Some(v) => *ov = v,
                    None => {
                        original.remove(&key);
                    }
                }
            }
            continue;
        }
        match (ov.take(), pv) {
            (Value::Object(om), Value::Object(pm)) => {
                *ov = Value::Object(merge_map(om, pm, sub_struct(ty, &key))?);
            }
            (Value::Array(ol), Value::Array(pl)) => {
                let (strategy, elem) = list_meta(ty, &key);
                *ov = Value::Array(if is_merge(strategy) || delete_list {
                    merge_slice(ol, pl, strategy, elem, delete_list, &key)?
                } else {
                    pl
                });
            }
            _ => unreachable!("shapes checked above"),
        }
    }
    Ok(original)
}

/// A patch value taken for a key the original lacks: nulls inside it dropped, maps carrying
/// a `$patch` directive (and such list elements) removed. `None`: the value itself was one.
fn cleaned(mut v: Value) -> Option<Value> {
    discard_nulls(&mut v);
    remove_directives(v)
}

fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(PATCH) {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter_map(|(k, x)| remove_directives(x).map(|x| (k, x)))
                    .collect(),
            ))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// `$retainKeys`: keys of the original not listed are dropped; every key the patch sets must
/// be listed.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), SmpError> {
    let Some(list) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = list else {
        return Err(bad(400, "invalid patch format of retainKeys"));
    };
    let listed = |k: &str| list.iter().any(|x| x.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_FROM) || k.starts_with(SET_ORDER) {
            continue;
        }
        if !listed(k) {
            return Err(bad(400, "invalid patch format of retainKeys"));
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// The value an element is ordered and matched by: its merge key's value, or itself.
fn ident<'a>(v: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(k) => v.as_object().and_then(|m| m.get(k)),
        None => Some(v),
    }
}

fn index_in(list: &[Value], v: &Value, key: Option<&str>) -> Option<usize> {
    let id = ident(v, key)?;
    list.iter().position(|x| ident(x, key) == Some(id))
}

fn is_delete_element(v: &Value) -> bool {
    v.get(PATCH).and_then(Value::as_str) == Some("delete")
}

/// `normalizeElementOrder`: patch items sorted by `patch_order`, server-only items by
/// `server_order`, then interleaved: a server-only item goes before a patch item only when
/// both are in the live list and it came first there.
fn normalize_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, SmpError> {
    sort_by_order(&mut patch_items, patch_order, key)?;
    sort_by_order(&mut server_only, server_order, key)?;
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let (mut l, mut r) = (
        server_only.into_iter().peekable(),
        patch_items.into_iter().peekable(),
    );
    loop {
        let take_left = match (l.peek(), r.peek()) {
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
            (Some(a), Some(b)) => matches!(
                (index_in(server_order, a, key), index_in(server_order, b, key)),
                (Some(i), Some(j)) if i < j
            ),
        };
        let next = if take_left { l.next() } else { r.next() };
        out.extend(next);
    }
    Ok(out)
}

/// `normalizeSliceOrder`: a stable sort by position in `order`; for map lists every element
/// must carry the merge key, and `$patch: delete` elements move to the end.
fn sort_by_order(
    items: &mut Vec<Value>,
    order: &[Value],
    key: Option<&str>,
) -> Result<(), SmpError> {
    if let Some(k) = key {
        for v in items.iter().chain(order) {
            if v.get(k).is_none() {
                return Err(no_merge_key(v, k));
            }
        }
        let (deletes, keep): (Vec<Value>, Vec<Value>) =
            items.drain(..).partition(is_delete_element);
        *items = keep;
        items.sort_by_key(|v| index_in(order, v, key).unwrap_or(usize::MAX));
        items.extend(deletes);
    } else {
        items.sort_by_key(|v| index_in(order, v, key).unwrap_or(usize::MAX));
    }
    Ok(())
}

/// Splits `merged` into the items whose identity is in `by` and the rest.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut inside = Vec::new();
    let mut rest = Vec::new();
    for v in merged {
        if let Some(k) = key {
            if v.get(k).is_none() {
                return Err(no_merge_key(&v, k));
            }
        }
        if index_in(by, &v, key).is_some() {
            inside.push(v);
        } else {
            rest.push(v);
        }
    }
    Ok((inside, rest))
}

/// All elements of both lists must be of one kind, and not lists.
fn element_kind(a: &[Value], b: &[Value]) -> Result<Option<bool>, SmpError> {
    let mut is_map = None;
    for v in a.iter().chain(b) {
        if v.is_array() {
            return Err(bad(422, "lists of lists are not supported"));
        }
        let m = v.is_object();
        match is_map {
            None => is_map = Some(m),
            Some(x) if x != m => {
                return Err(bad(
                    500,
                    "list element types are not identical: a list mixes objects and values",
                ))
            }
            _ => {}
        }
    }
    Ok(is_map)
}

/// `mergeSlice` for a list with a merge strategy (or a `$deleteFromPrimitiveList`).
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    strategy: ListStrategy,
    elem: &'static Type,
    delete_list: bool,
    field: &str,
) -> Result<Vec<Value>, SmpError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let is_map = element_kind(&original, &patch)?.unwrap_or(false);
    if !is_map {
        if delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (inside, rest) = partition(merged, &patch, None)?;
        return normalize_order(inside, rest, &patch, &original, None);
    }
    let Some(key) = merge_key(strategy) else {
        return Err(bad(
            500,
            format!("cannot merge lists without merge key for {field}"),
        ));
    };
    // Special elements: `$patch: delete` removes by key, `$patch: replace` takes the patch's
    // other elements as the list.
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        match v.get(PATCH) {
            None => plain.push(v),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(id) = v.get(key) else {
                        return Err(no_merge_key(&v, key));
                    };
                    original.retain(|x| x.get(key) != Some(id));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(bad(
                        500,
                        "merging lists cannot yet be specified in the patch",
                    ))
                }
                _ => return Err(bad(500, format!("unknown patch type: {d} in map: {v}"))),
            },
        }
    }
    if replace {
        return Ok(plain);
    }
    let server_order = original.clone();
    let mut merged = original;
    for v in &plain {
        let Some(id) = v.get(key) else {
            return Err(no_merge_key(v, key));
        };
        match merged.iter().position(|x| x.get(key) == Some(id)) {
            Some(i) => {
                let (Value::Object(om), Value::Object(pm)) = (merged[i].take(), v.clone()) else {
                    unreachable!("element kinds checked above");
                };
                merged[i] = Value::Object(merge_map(om, pm, elem)?);
            }
            None => merged.push(v.clone()),
        }
    }
    let (inside, rest) = partition(merged, &plain, Some(key))?;
    normalize_order(inside, rest, &plain, &server_order, Some(key))
}

/// `$setElementOrder/<list>`: validates the patch list against the order, merges the list
/// and orders the result by the order list, then by the live list.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: &'static Type,
) -> Result<(), SmpError> {
    let orders: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for directive in orders {
        let order = patch.remove(&directive).expect("key listed above");
        let field = &directive[SET_ORDER.len()..];
        let Value::Array(order) = order else {
            return Err(bad(500, format!("{directive} must be a list, not {order}")));
        };
        let (strategy, elem) = list_meta(ty, field);
        let key = merge_key(strategy);
        let orig_list = match original.get(field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                return Err(bad(
                    500,
                    format!("expected a list for {field}, found {other}"),
                ))
            }
        };
        let patch_list = match patch.remove(field) {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(other) => {
                return Err(bad(
                    500,
                    format!("expected a list for {field}, found {other}"),
                ))
            }
        };
        if let Some(pl) = &patch_list {
            validate_against_order(pl, &order, key)?;
        }
        let merged = match (&orig_list, patch_list) {
            (None, None) => continue,
            (Some(o), None) => o.clone(),
            (None, Some(p)) => match remove_directives(Value::Array(p)) {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            },
            (Some(o), Some(p)) => {
                if is_merge(strategy) {
                    merge_slice(o.clone(), p, strategy, elem, false, field)?
                } else {
                    p
                }
            }
        };
        let is_map = merged.iter().any(Value::is_object) || order.iter().any(Value::is_object);
        if is_map && key.is_none() {
            // Upstream panics here ("hash of unhashable type") and answers 500.
            return Err(bad(
                500,
                format!(
                    "$setElementOrder is not supported for list {field}, which has no merge key"
                ),
            ));
        }
        let server_order = orig_list.unwrap_or_default();
        let (inside, rest) = partition(merged, &order, key)?;
        let both = normalize_order(inside, rest, &order, &server_order, key)?;
        original.insert(field.to_owned(), Value::Array(both));
    }
    Ok(())
}

/// The patch list (without `$patch: delete` elements) must appear in the order list as a
/// subsequence, as `validatePatchWithSetOrderList` checks.
fn validate_against_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<(), SmpError> {
    let mismatch = || {
        bad(
            500,
            format!(
                "The order in patch list: {} doesn't match $setElementOrder list: {}",
                Value::Array(patch.to_vec()),
                Value::Array(order.to_vec())
            ),
        )
    };
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = patch
        .iter()
        .filter(|v| key.is_none() || !is_delete_element(v))
        .collect();
    let (mut i, mut j) = (0, 0);
    while i < non_delete.len() && j < order.len() {
        let p = non_delete[i];
        if p.get(PATCH).is_some() {
            i += 1; // other directive elements are skipped
            continue;
        }
        let (pid, oid) = (ident(p, key), ident(&order[j], key));
        if pid.is_some() && pid == oid {
            i += 1;
        }
        j += 1;
    }
    if i < non_delete.len() {
        return Err(mismatch());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
