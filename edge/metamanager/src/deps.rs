//! What the stored pods need that the cloud did not push: upstream's cloudcore pushes a
//! configmap or secret only when it changes, so one that existed before its pod was bound
//! must be asked for (`query <ns>/configmap/<name>`, §4.5), and projected
//! `serviceAccountToken` sources need tokens (`query <ns>/serviceaccounttoken/<account>`).
//!
//! [`Deps`] is sans-IO: [`Deps::poll`] compares what the pods reference with what the store
//! holds and returns the queries to send (bounded in flight, retried with back-off);
//! [`Deps::on_reply`] says what an answer means. Answers are stored by the runner before they
//! are used or acknowledged, exactly like pushes. An object the cloud says is missing is
//! remembered with the cloud's message, for Edged to put in the pod's status, and asked for
//! again later. Tokens are renewed at 80 % of their lifetime or after 24 h, as kubelet's token
//! manager renews them; a token whose pod is gone is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bus::{CloudRequest, ObjectKind, Outcome, Reply, RequestId, TokenKey};
use serde_json::{json, Value};

/// Queries in flight at most: a burst of new pods asks a few objects at a time.
pub const MAX_IN_FLIGHT: usize = bus::ModuleId::MetaManager.in_flight();
/// First retry of a failed or unanswered query; doubles to [`RETRY_MAX_MS`].
pub const RETRY_BASE_MS: i64 = 2_000;
pub const RETRY_MAX_MS: i64 = 60_000;
/// How long an answer may take before the query counts as lost (EdgeHub's reply timeout).
pub const ANSWER_TIMEOUT_MS: i64 = 60_000;
/// Tokens are renewed no later than this after they were issued (kubelet's 24 h).
pub const TOKEN_MAX_AGE_SECS: i64 = 24 * 3600;
/// Request ids of MetaManager's queries.
const FIRST_ID: u32 = 1;

/// Something a pod needs from the cloud.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Want {
    Object {
        kind: ObjectKind,
        namespace: String,
        name: String,
    },
    Token {
        namespace: String,
        pod_name: String,
        key: TokenKey,
    },
}

/// A stored service account token.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredToken {
    pub token: String,
    pub expires_unix: i64,
    /// The TokenRequest's lifetime, for the renewal point.
    pub expiration_secs: u64,
}

impl StoredToken {
    /// kubelet's `requiresRefresh`: within 20 % of the lifetime of expiring, or 24 h old.
    pub fn needs_renewal(&self, now_unix: i64) -> bool {
        let ttl = self.expiration_secs as i64;
        let issued = self.expires_unix - ttl;
        now_unix > issued + TOKEN_MAX_AGE_SECS || now_unix > self.expires_unix - ttl / 5
    }
}

/// What an answer means for the runner.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Store this object (as a push of it would be), then acknowledge the answer.
    Object {
        kind: ObjectKind,
        namespace: String,
        name: String,
        resource_version: String,
        object: Value,
    },
    /// Store this token.
    Token { key: TokenKey, token: StoredToken },
    /// The cloud said it does not exist (or refused it): remembered for the pod's status.
    Missing,
    /// Nothing to store (a stale answer, a lost query: retried later).
    Nothing,
}

struct Retry {
    attempts: u32,
    not_before_ms: i64,
}

/// Query bookkeeping.
#[derive(Default)]
pub struct Deps {
    /// Refusals repeat with every retry: one line a minute.
    refused_log: bus::Throttle,
    connected: bool,
    in_flight: HashMap<RequestId, (Want, i64)>,
    retry: HashMap<Want, Retry>,
    /// Objects the cloud answered NotFound/Forbidden for, with its message.
    missing: BTreeMap<(ObjectKind, String, String), String>,
    next_id: u32,
}

/// Everything `pods` reference: configmaps and secrets (volumes, projected sources, env,
/// envFrom, image pull secrets) and projected service account tokens.
pub fn wanted<'a>(pods: impl IntoIterator<Item = &'a Value>) -> BTreeSet<Want> {
    let mut out = BTreeSet::new();
    for pod in pods {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let obj = |kind, name: Option<&str>| {
            name.filter(|n| !n.is_empty()).map(|n| Want::Object {
                kind,
                namespace: ns.to_owned(),
                name: n.to_owned(),
            })
        };
        let spec = &pod["spec"];
        let account = spec["serviceAccountName"]
            .as_str()
            .or(spec["serviceAccount"].as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        for vol in spec["volumes"].as_array().into_iter().flatten() {
            out.extend(obj(
                ObjectKind::ConfigMap,
                vol["configMap"]["name"].as_str(),
            ));
            out.extend(obj(
                ObjectKind::Secret,
                vol["secret"]["secretName"].as_str(),
            ));
            for src in vol["projected"]["sources"].as_array().into_iter().flatten() {
                out.extend(obj(
                    ObjectKind::ConfigMap,
                    src["configMap"]["name"].as_str(),
                ));
                out.extend(obj(ObjectKind::Secret, src["secret"]["name"].as_str()));
                let t = &src["serviceAccountToken"];
                if t.is_object() {
                    out.insert(Want::Token {
                        namespace: ns.to_owned(),
                        pod_name: pod["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                        key: TokenKey {
                            pod_uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
                            service_account: account.to_owned(),
                            audience: t["audience"].as_str().unwrap_or("").to_owned(),
                            expiration_secs: t["expirationSeconds"].as_u64().unwrap_or(3600),
                        },
                    });
                }
            }
        }
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                for e in c["env"].as_array().into_iter().flatten() {
                    let from = &e["valueFrom"];
                    out.extend(obj(
                        ObjectKind::ConfigMap,
                        from["configMapKeyRef"]["name"].as_str(),
                    ));
                    out.extend(obj(
                        ObjectKind::Secret,
                        from["secretKeyRef"]["name"].as_str(),
                    ));
                }
                for e in c["envFrom"].as_array().into_iter().flatten() {
                    out.extend(obj(
                        ObjectKind::ConfigMap,
                        e["configMapRef"]["name"].as_str(),
                    ));
                    out.extend(obj(ObjectKind::Secret, e["secretRef"]["name"].as_str()));
                }
            }
        }
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            out.extend(obj(ObjectKind::Secret, s["name"].as_str()));
        }
    }
    out
}

/// The TokenRequest kubelet's projected volume sends (`authentication.k8s.io/v1`).
pub fn token_request(pod_name: &str, key: &TokenKey) -> Value {
    let audiences = if key.audience.is_empty() {
        Value::Null
    } else {
        json!([key.audience])
    };
    json!({
        "metadata": { "creationTimestamp": null },
        "spec": {
            "audiences": audiences,
            "expirationSeconds": key.expiration_secs,
            "boundObjectRef": { "kind": "Pod", "apiVersion": "v1", "name": pod_name, "uid": key.pod_uid },
        },
        "status": { "token": "", "expirationTimestamp": null },
    })
}

impl Deps {
    pub fn new() -> Self {
        Deps {
            next_id: FIRST_ID,
            ..Default::default()
        }
    }

    /// Objects the cloud said are missing, with its message.
    pub fn missing(&self) -> &BTreeMap<(ObjectKind, String, String), String> {
        &self.missing
    }

    /// An object arrived (pushed or answered): it is no longer missing.
    pub fn arrived(&mut self, kind: ObjectKind, namespace: &str, name: &str) -> bool {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.retry.remove(&Want::Object {
            kind,
            namespace: key.1.clone(),
            name: key.2.clone(),
        });
        self.missing.remove(&key).is_some()
    }

    /// The tunnel went up or down: queries are sent only while up; none in flight survives.
    pub fn link(&mut self, connected: bool) {
        self.connected = connected;
        self.in_flight.clear();
    }

    pub fn is_mine(&self, id: RequestId) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// The queries to send now. `has_object` says whether the store holds an object;
    /// `token` what token it holds for a key.
    pub fn poll(
        &mut self,
        wanted: &BTreeSet<Want>,
        has_object: impl Fn(ObjectKind, &str, &str) -> bool,
        token: impl Fn(&TokenKey) -> Option<StoredToken>,
        now_ms: i64,
    ) -> Vec<(RequestId, CloudRequest)> {
        // Forget what no pod wants any more.
        self.retry.retain(|w, _| wanted.contains(w));
        self.missing.retain(|(k, ns, n), _| {
            wanted.contains(&Want::Object {
                kind: *k,
                namespace: ns.clone(),
                name: n.clone(),
            })
        });
        let expired: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, (_, sent))| now_ms - sent > ANSWER_TIMEOUT_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((w, _)) = self.in_flight.remove(&id) {
                self.back_off(w, now_ms);
            }
        }
        let mut out = Vec::new();
        if !self.connected {
            return out;
        }
        for w in wanted {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            if self.in_flight.values().any(|(x, _)| x == w)
                || self.retry.get(w).is_some_and(|r| now_ms < r.not_before_ms)
            {
                continue;
            }
            let req = match w {
                Want::Object {
                    kind,
                    namespace,
                    name,
                } => {
                    if has_object(*kind, namespace, name) {
                        continue;
                    }
                    CloudRequest::QueryObject {
                        kind: *kind,
                        namespace: namespace.clone(),
                        name: name.clone(),
                    }
                }
                Want::Token {
                    namespace,
                    pod_name,
                    key,
                } => {
                    if token(key).is_some_and(|t| !t.needs_renewal(now_ms / 1000)) {
                        continue;
                    }
                    CloudRequest::QueryToken {
                        namespace: namespace.clone(),
                        service_account: key.service_account.clone(),
                        request: token_request(pod_name, key),
                    }
                }
            };
            let id = RequestId(self.next_id);
            self.next_id = self.next_id.wrapping_add(1).max(FIRST_ID);
            self.in_flight.insert(id, (w.clone(), now_ms));
            out.push((id, req));
        }
        out
    }

    fn back_off(&mut self, w: Want, now_ms: i64) {
        let r = self.retry.entry(w).or_insert(Retry {
            attempts: 0,
            not_before_ms: 0,
        });
        let delay = RETRY_BASE_MS
            .saturating_mul(1 << r.attempts.min(10))
            .min(RETRY_MAX_MS);
        r.attempts += 1;
        r.not_before_ms = now_ms + delay;
    }

    /// What the answer to query `id` means.
    pub fn on_reply(&mut self, id: RequestId, outcome: Outcome, now_ms: i64) -> Answer {
        let Some((want, _)) = self.in_flight.remove(&id) else {
            return Answer::Nothing;
        };
        let (reply, rv) = match outcome {
            Outcome::Answered {
                reply,
                resource_version,
                ..
            } => (reply, resource_version),
            Outcome::NotConnected | Outcome::Lost => {
                self.back_off(want, now_ms);
                return Answer::Nothing;
            }
        };
        match (want.clone(), reply) {
            (
                Want::Object {
                    kind,
                    namespace,
                    name,
                },
                Reply::Object(object),
            ) if object["metadata"]["name"].as_str() == Some(name.as_str()) => {
                self.retry.remove(&want);
                self.missing
                    .remove(&(kind, namespace.clone(), name.clone()));
                let resource_version = if rv.is_empty() {
                    object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                } else {
                    rv
                };
                Answer::Object {
                    kind,
                    namespace,
                    name,
                    resource_version,
                    object,
                }
            }
            (
                Want::Object {
                    kind,
                    namespace,
                    name,
                },
                Reply::Failed { code, message, .. },
            ) if code == 404 || code == 403 => {
                self.back_off(want, now_ms);
                let message = if message.is_empty() {
                    format!("{} \"{name}\" not found", kind.as_str())
                } else {
                    message
                };
                self.missing.insert((kind, namespace, name), message);
                Answer::Missing
            }
            (Want::Token { key, .. }, Reply::Object(tr)) => {
                let token = tr["status"]["token"].as_str().unwrap_or("");
                let expires = tr["status"]["expirationTimestamp"]
                    .as_str()
                    .and_then(proto_time);
                match expires {
                    Some(expires_unix) if !token.is_empty() => {
                        self.retry.remove(&want);
                        let expiration_secs = tr["spec"]["expirationSeconds"]
                            .as_u64()
                            .unwrap_or(key.expiration_secs);
                        Answer::Token {
                            key,
                            token: StoredToken {
                                token: token.to_owned(),
                                expires_unix,
                                expiration_secs,
                            },
                        }
                    }
                    _ => {
                        log::warn!(
                            "the cloud answered a token request for {} without a token; retrying",
                            key.service_account
                        );
                        self.back_off(want, now_ms);
                        Answer::Nothing
                    }
                }
            }
            (w, other) => {
                if let Some(n) = self.refused_log.allow(std::time::Instant::now()) {
                    log::warn!(
                        "the cloud answered {w:?} with {}; retrying later{n}",
                        bus::reply_summary(&other)
                    );
                }
                self.back_off(want, now_ms);
                Answer::Nothing
            }
        }
    }

    /// When [`Deps::poll`] next has something to do (a retry coming due), if anything waits.
    pub fn next_retry_ms(&self) -> Option<i64> {
        self.retry.values().map(|r| r.not_before_ms).min()
    }
}

fn proto_time(s: &str) -> Option<i64> {
    proto::time::parse_rfc3339(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}, "spec": {
            "volumes": [{"name": "a", "configMap": {"name": "cm1"}}, {"name": "b", "secret": {"secretName": "s1"}},
                {"name": "kube-api-access-x", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt"}}]}}],
            "containers": [{"name": "c", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "cm2"}}]}],
            "imagePullSecrets": [{"name": "reg"}]}})
    }

    fn answered(reply: Reply, rv: &str) -> Outcome {
        Outcome::Answered {
            reply,
            resource_version: rv.into(),
            ack: None,
        }
    }

    #[test]
    fn every_reference_is_wanted() {
        let w = wanted(&[pod()]);
        let objects: Vec<String> = w
            .iter()
            .filter_map(|w| match w {
                Want::Object { kind, name, .. } => Some(format!("{}/{name}", kind.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            objects,
            [
                "configmap/cm1",
                "configmap/cm2",
                "configmap/kube-root-ca.crt",
                "secret/reg",
                "secret/s1",
                "secret/s2"
            ]
        );
        let token = w.iter().find_map(|w| match w {
            Want::Token { key, pod_name, .. } => Some((key.clone(), pod_name.clone())),
            _ => None,
        });
        let (key, pod_name) = token.unwrap();
        assert_eq!(pod_name, "web");
        assert_eq!(key.service_account, "default");
        assert_eq!(key.expiration_secs, 3607);
        let tr = token_request(&pod_name, &key);
        assert_eq!(
            tr["spec"],
            json!({"audiences": null, "expirationSeconds": 3607,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "u1"}})
        );
    }

    #[test]
    fn token_requests_have_upstreams_golden_shape() {
        const SHAPES: &str = include_str!("../../../proto/tests/golden/upstream-shapes.jsonl");
        let want = SHAPES
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["name"] == "serviceaccount-token-query")
            .unwrap();
        let content = &want["frame"]["content"];
        let key = TokenKey {
            pod_uid: content["spec"]["boundObjectRef"]["uid"]
                .as_str()
                .unwrap()
                .into(),
            service_account: "default".into(),
            audience: String::new(),
            expiration_secs: 3607,
        };
        assert_eq!(&token_request("web", &key), content);
    }

    #[test]
    fn asks_for_what_is_missing_only_while_connected_and_bounded() {
        let w = wanted(&[pod()]);
        let mut d = Deps::new();
        assert!(
            d.poll(&w, |_, _, _| false, |_| None, 0).is_empty(),
            "offline: nothing"
        );
        d.link(true);
        let have_cm1 = |k: ObjectKind, _: &str, n: &str| k == ObjectKind::ConfigMap && n == "cm1";
        let reqs = d.poll(&w, have_cm1, |_| None, 0);
        assert_eq!(
            reqs.len(),
            6,
            "5 objects the store lacks and the token: {reqs:?}"
        );
        assert!(!reqs
            .iter()
            .any(|(_, r)| matches!(r, CloudRequest::QueryObject { name, .. } if name == "cm1")));
        assert!(
            d.poll(&w, have_cm1, |_| None, 1).is_empty(),
            "in flight: not asked twice"
        );
        let many: BTreeSet<Want> = (0..20)
            .map(|i| Want::Object {
                kind: ObjectKind::Secret,
                namespace: "default".into(),
                name: format!("s{i}x"),
            })
            .collect();
        let mut d = Deps::new();
        d.link(true);
        assert_eq!(
            d.poll(&many, |_, _, _| false, |_| None, 0).len(),
            MAX_IN_FLIGHT
        );
    }

    #[test]
    fn answers_not_found_and_back_off() {
        let w = wanted(&[pod()]);
        let mut d = Deps::new();
        d.link(true);
        let reqs = d.poll(
            &w,
            |_, _, _| false,
            |_| {
                Some(StoredToken {
                    token: "t".into(),
                    expires_unix: i64::MAX / 2,
                    expiration_secs: 3607,
                })
            },
            0,
        );
        let id_of = |name: &str| {
            reqs.iter()
                .find(|(_, r)| matches!(r, CloudRequest::QueryObject { name: n, .. } if n == name))
                .unwrap()
                .0
        };
        let obj = json!({"kind": "ConfigMap", "metadata": {"name": "cm1", "resourceVersion": "7"}, "data": {"k": "v"}});
        match d.on_reply(id_of("cm1"), answered(Reply::Object(obj.clone()), "9"), 10) {
            Answer::Object {
                name,
                resource_version,
                object,
                ..
            } => {
                assert_eq!((name.as_str(), resource_version.as_str()), ("cm1", "9"));
                assert_eq!(object, obj);
            }
            other => panic!("{other:?}"),
        }
        let nf = Reply::Failed {
            code: 404,
            reason: "NotFound".into(),
            message: "configmap \"cm2\" not found".into(),
        };
        assert_eq!(
            d.on_reply(id_of("cm2"), answered(nf, ""), 10),
            Answer::Missing
        );
        assert_eq!(
            d.missing()
                .get(&(ObjectKind::ConfigMap, "default".into(), "cm2".into()))
                .map(String::as_str),
            Some("configmap \"cm2\" not found")
        );
        // Not asked again before the back-off, asked again after it.
        let again = |d: &mut Deps, t| {
            d.poll(
                &w,
                |k, _, n| k == ObjectKind::ConfigMap && n == "cm1",
                |_| {
                    Some(StoredToken {
                        token: "t".into(),
                        expires_unix: i64::MAX / 2,
                        expiration_secs: 3607,
                    })
                },
                t,
            )
            .into_iter()
            .filter(|(_, r)| matches!(r, CloudRequest::QueryObject { name, .. } if name == "cm2"))
            .count()
        };
        assert_eq!(again(&mut d, 10 + RETRY_BASE_MS - 1), 0);
        assert_eq!(again(&mut d, 10 + RETRY_BASE_MS), 1);
        // A push of it clears the missing mark.
        assert!(d.arrived(ObjectKind::ConfigMap, "default", "cm2"));
        assert!(d.missing().is_empty());
        // A lost query is retried later, an unknown id means nothing.
        assert_eq!(
            d.on_reply(RequestId(999_999), Outcome::Lost, 0),
            Answer::Nothing
        );
    }

    #[test]
    fn tokens_are_stored_and_renewed_like_kubelets() {
        let w = wanted(&[pod()]);
        let mut d = Deps::new();
        d.link(true);
        let reqs = d.poll(&w, |_, _, _| true, |_| None, 0);
        assert_eq!(reqs.len(), 1);
        let (id, req) = &reqs[0];
        assert!(
            matches!(req, CloudRequest::QueryToken { service_account, .. } if service_account == "default")
        );
        let tr = json!({"kind": "TokenRequest", "spec": {"expirationSeconds": 3607},
            "status": {"token": "eyJ", "expirationTimestamp": "2026-01-01T01:00:07Z"}});
        let stored = match d.on_reply(*id, answered(Reply::Object(tr), ""), 0) {
            Answer::Token { token, key } => {
                assert_eq!(key.pod_uid, "u1");
                token
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(stored.token, "eyJ");
        let exp = stored.expires_unix;
        assert!(!stored.needs_renewal(exp - 3607 + 100));
        assert!(
            !stored.needs_renewal(exp - 3607 / 5 - 1),
            "before the last 20 %"
        );
        assert!(
            stored.needs_renewal(exp - 3607 / 5 + 1),
            "inside the last 20 %"
        );
        let long = StoredToken {
            token: "t".into(),
            expires_unix: 100 * 3600,
            expiration_secs: 48 * 3600,
        };
        assert!(!long.needs_renewal(76 * 3600 - 1));
        assert!(
            long.needs_renewal(76 * 3600 + 1),
            "24 h after issue, long before the last 20 %"
        );
        // A stored fresh token is not asked for again.
        let fresh = stored.clone();
        assert!(d
            .poll(
                &w,
                |_, _, _| true,
                move |_| Some(fresh.clone()),
                (exp - 3000) * 1000
            )
            .is_empty());
    }
}
