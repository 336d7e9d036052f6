//! A pod's status as kubelet writes it (Kubernetes v1.32 `generateAPIPodStatus`,
//! `status/generate.go`), from what the reconciler observed. Pure, so the exact JSON is
//! tested.
//!
//! - Conditions in kubelet's order, with kubelet's reasons and messages:
//!   `PodReadyToStartContainers`, `Initialized`, `Ready`, `ContainersReady`, `PodScheduled`;
//!   `lastTransitionTime` moves only when a condition's status changes ([`Transitions`]).
//! - Phase by kubelet's `getPhase`, including the terminal phase of a deleted pod.
//! - `containerStatuses` sorted by name, each with exactly one state; the list is replaced
//!   whole by a strategic-merge patch (it has no patch strategy), so nothing stale survives.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::spec::{PodSpec, RestartPolicy};

/// What one container is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
        started_at: String,
        finished_at: String,
        container_id: String,
    },
}

/// Observed state of one container of the pod spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `<runtime>://<id>`, empty before the container exists.
    pub container_id: String,
    pub restart_count: u32,
    pub ready: bool,
    pub state: State,
    pub last: Option<State>,
}

/// Everything a pod's status is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView<'a> {
    pub spec: &'a PodSpec,
    /// A ready sandbox with its network: `PodReadyToStartContainers`.
    pub sandbox_ready: bool,
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: String,
    pub containers: Vec<ContainerView>,
    /// The pod was deleted and every container has stopped: the phase is final.
    pub terminal: bool,
}

/// Condition statuses and when each last changed, per pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transitions(BTreeMap<String, (bool, String)>);

impl Transitions {
    /// The transition time of `kind` with `status` now.
    fn at(&mut self, kind: &str, status: bool, now: &str) -> String {
        match self.0.get(kind) {
            Some((s, t)) if *s == status => t.clone(),
            _ => {
                self.0.insert(kind.to_owned(), (status, now.to_owned()));
                now.to_owned()
            }
        }
    }
}

fn state_json(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } => {
            let mut w = json!({});
            if !reason.is_empty() {
                w["reason"] = json!(reason);
            }
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({ "waiting": w })
        }
        State::Running { started_at } => json!({ "running": { "startedAt": started_at } }),
        State::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
            container_id,
        } => {
            let mut t = json!({ "exitCode": exit_code, "reason": reason,
                "startedAt": null_if_empty(started_at), "finishedAt": null_if_empty(finished_at) });
            if !message.is_empty() {
                t["message"] = json!(message);
            }
            if !container_id.is_empty() {
                t["containerID"] = json!(container_id);
            }
            json!({ "terminated": t })
        }
    }
}

fn null_if_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        json!(s)
    }
}

/// The pod phase (kubelet's `getPhase`).
pub fn phase(view: &PodView) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Waiting to restart after a termination counts as stopped, not as pending.
            State::Waiting { .. } if matches!(c.last, Some(State::Terminated { .. })) => {
                stopped += 1;
            }
            State::Waiting { .. } => waiting += 1,
        }
    }
    let total = view.containers.len();
    if view.terminal {
        return if succeeded == total {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match view.spec.restart {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::Never => "Failed",
            RestartPolicy::OnFailure => "Running",
        };
    }
    "Pending"
}

/// The `status` object and the strategic-merge patch kubelet would send for it
/// (`{"metadata":{"uid"},"status":{…}}` with `$setElementOrder/conditions`).
pub fn pod_status(view: &PodView, tr: &mut Transitions, now: &str) -> Value {
    let phase = phase(view);
    let spec = view.spec;
    let mut unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    unready.sort();
    let terminal_reason = match phase {
        "Succeeded" => Some("PodCompleted"),
        "Failed" if view.terminal || spec.restart == RestartPolicy::Never => Some("PodFailed"),
        _ => None,
    };
    let ready = unready.is_empty() && terminal_reason.is_none() && !view.containers.is_empty();
    let mut cond = |kind: &str, status: bool, reason: Option<&str>, message: Option<String>| {
        let t = tr.at(kind, status, now);
        let mut c = json!({ "type": kind, "status": if status { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": t });
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
    let (ready_reason, ready_message) = match terminal_reason {
        Some(r) => (Some(r), None),
        None if !ready => (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        ),
        None => (None, None),
    };
    let initialized_reason = (phase == "Succeeded").then_some("PodCompleted");
    let mut conditions = vec![
        cond("PodReadyToStartContainers", view.sandbox_ready, None, None),
        cond("Initialized", true, initialized_reason, None),
        cond("Ready", ready, ready_reason, ready_message.clone()),
        cond("ContainersReady", ready, ready_reason, ready_message),
        cond("PodScheduled", true, None, None),
    ];
    if !spec.unsupported.is_empty() {
        conditions.push(cond(
            "EdgeUnsupportedFields",
            true,
            Some("NotSupportedByEdgecore"),
            Some(format!(
                "edgecore does not act on: {}",
                spec.unsupported.join(", ")
            )),
        ));
    }
    let order: Vec<Value> = conditions
        .iter()
        .map(|c| json!({ "type": c["type"] }))
        .collect();
    let mut containers = view.containers.clone();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut s = json!({
                "name": c.name,
                "state": state_json(&c.state),
                "lastState": c.last.as_ref().map(state_json).unwrap_or_else(|| json!({})),
                "ready": c.ready,
                "restartCount": c.restart_count,
                "image": c.image,
                "imageID": c.image_id,
                "started": matches!(c.state, State::Running { .. }),
            });
            if !c.container_id.is_empty() {
                s["containerID"] = json!(c.container_id);
            }
            s
        })
        .collect();
    let ips = |ip: &str| {
        if ip.is_empty() {
            Value::Null
        } else {
            json!([{ "ip": ip }])
        }
    };
    json!({
        "metadata": { "uid": spec.uid },
        "status": {
            "$setElementOrder/conditions": order,
            "conditions": conditions,
            "phase": phase,
            "hostIP": null_if_empty(&view.host_ip),
            "hostIPs": ips(&view.host_ip),
            "podIP": null_if_empty(&view.pod_ip),
            "podIPs": ips(&view.pod_ip),
            "startTime": null_if_empty(&view.start_time),
            "containerStatuses": statuses,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(restart: RestartPolicy) -> PodSpec {
        let mut s = PodSpec::parse(&json!({"metadata": {"uid": "u", "name": "p"}, "spec": {"containers": [{"name": "a", "image": "i:1"}]}})).unwrap();
        s.restart = restart;
        s
    }

    fn c(state: State, restarts: u32, ready: bool) -> ContainerView {
        ContainerView {
            name: "a".into(),
            image: "i:1".into(),
            image_id: "sha".into(),
            container_id: "containerd://abc".into(),
            restart_count: restarts,
            ready,
            state,
            last: None,
        }
    }

    fn term(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: String::new(),
            started_at: "t0".into(),
            finished_at: "t1".into(),
            container_id: "containerd://abc".into(),
        }
    }

    fn view(s: &PodSpec, containers: Vec<ContainerView>) -> PodView<'_> {
        PodView {
            spec: s,
            sandbox_ready: true,
            pod_ip: String::new(),
            host_ip: "10.0.0.2".into(),
            start_time: "t0".into(),
            containers,
            terminal: false,
        }
    }

    fn waiting(reason: &str) -> State {
        State::Waiting {
            reason: reason.into(),
            message: String::new(),
        }
    }

    #[test]
    fn phases_follow_kubelets_rules() {
        let always = spec(RestartPolicy::Always);
        let running = c(
            State::Running {
                started_at: "t".into(),
            },
            0,
            true,
        );
        assert_eq!(phase(&view(&always, vec![running.clone()])), "Running");
        assert_eq!(
            phase(&view(
                &always,
                vec![c(waiting("ContainerCreating"), 0, false)]
            )),
            "Pending"
        );
        let mut backoff = c(waiting("CrashLoopBackOff"), 3, false);
        backoff.last = Some(term(1));
        assert_eq!(
            phase(&view(&always, vec![backoff])),
            "Running",
            "a restart wait is not pending"
        );
        let never = spec(RestartPolicy::Never);
        assert_eq!(
            phase(&view(&never, vec![c(term(0), 0, false)])),
            "Succeeded"
        );
        assert_eq!(phase(&view(&never, vec![c(term(2), 0, false)])), "Failed");
        let on_failure = spec(RestartPolicy::OnFailure);
        assert_eq!(
            phase(&view(&on_failure, vec![c(term(0), 1, false)])),
            "Succeeded"
        );
        assert_eq!(phase(&view(&always, vec![c(term(0), 1, false)])), "Running");
        // A deleted pod ends Succeeded only if everything exited 0, whatever the policy.
        let mut v = view(&always, vec![c(term(0), 0, false)]);
        v.terminal = true;
        assert_eq!(phase(&v), "Succeeded");
        v.containers = vec![c(term(143), 0, false)];
        assert_eq!(phase(&v), "Failed");
    }

    #[test]
    fn conditions_have_kubelets_reasons_order_and_transition_times() {
        let s = spec(RestartPolicy::Always);
        let mut tr = Transitions::default();
        let v = view(&s, vec![c(waiting("ContainerCreating"), 0, false)]);
        let st = pod_status(&v, &mut tr, "t1");
        let conds = st["status"]["conditions"].as_array().unwrap();
        let types: Vec<&str> = conds.iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert_eq!(conds[2]["reason"], "ContainersNotReady");
        assert_eq!(conds[2]["message"], "containers with unready status: [a]");
        assert_eq!(conds[2]["lastTransitionTime"], "t1");
        assert_eq!(
            st["status"]["$setElementOrder/conditions"][4],
            json!({"type": "PodScheduled"})
        );
        assert_eq!(st["metadata"]["uid"], "u");
        // Ready later: only Ready and ContainersReady move.
        let v = view(
            &s,
            vec![c(
                State::Running {
                    started_at: "t".into(),
                },
                0,
                true,
            )],
        );
        let st = pod_status(&v, &mut tr, "t2");
        let conds = st["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds[0]["lastTransitionTime"], "t1");
        assert_eq!(conds[2]["lastTransitionTime"], "t2");
        assert_eq!(conds[2]["status"], "True");
        assert!(conds[2].get("reason").is_none());
        let cs = &st["status"]["containerStatuses"][0];
        assert_eq!(
            cs["state"],
            json!({"running": {"startedAt": "t"}}),
            "exactly one state"
        );
        assert_eq!(cs["lastState"], json!({}));
        assert_eq!(cs["containerID"], "containerd://abc");
        assert!(st["status"]["podIP"].is_null());
        assert_eq!(st["status"]["hostIPs"], json!([{"ip": "10.0.0.2"}]));
    }

    #[test]
    fn terminal_and_unsupported() {
        let mut s = spec(RestartPolicy::Always);
        s.unsupported.push("spec.initContainers".into());
        let mut v = view(&s, vec![c(term(0), 0, false)]);
        v.terminal = true;
        let st = pod_status(&v, &mut Transitions::default(), "t");
        assert_eq!(st["status"]["phase"], "Succeeded");
        assert_eq!(st["status"]["conditions"][2]["reason"], "PodCompleted");
        let u = st["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "EdgeUnsupportedFields")
            .unwrap();
        assert!(u["message"]
            .as_str()
            .unwrap()
            .contains("spec.initContainers"));
        let t = &st["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (t["exitCode"].as_i64(), t["reason"].as_str()),
            (Some(0), Some("Completed"))
        );
    }
}
