//! A pod's status as Kubernetes shows it, from what the runtime reports. Pure, so the exact
//! JSON is tested. Every container state carries all three of `running`, `waiting`,
//! `terminated` (two as `null`), so a strategic-merge patch of the whole status replaces the
//! old state instead of merging into it.

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
        started_at: String,
        finished_at: String,
    },
}

/// Observed state of one container of the pod spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: String,
    pub restart_count: u32,
    pub ready: bool,
    pub state: State,
    pub last: Option<State>,
}

fn state_json(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } => {
            json!({ "running": null, "terminated": null, "waiting": { "reason": reason, "message": message } })
        }
        State::Running { started_at } => {
            json!({ "running": { "startedAt": started_at }, "terminated": null, "waiting": null })
        }
        State::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => json!({
            "running": null, "waiting": null,
            "terminated": { "exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at }
        }),
    }
}

/// The pod phase (Kubernetes' rules, as kubelet applies them).
pub fn phase(spec: &PodSpec, sandbox_ready: bool, containers: &[Observed]) -> &'static str {
    if !sandbox_ready
        || containers
            .iter()
            .any(|c| matches!(c.state, State::Waiting { .. }) && c.restart_count == 0)
    {
        return "Pending";
    }
    let all_done = containers
        .iter()
        .all(|c| matches!(c.state, State::Terminated { .. }));
    let all_ok = containers
        .iter()
        .all(|c| matches!(c.state, State::Terminated { exit_code: 0, .. }));
    match spec.restart {
        RestartPolicy::Never if all_done => {
            if all_ok {
                "Succeeded"
            } else {
                "Failed"
            }
        }
        RestartPolicy::OnFailure if all_done && all_ok => "Succeeded",
        _ => "Running",
    }
}

/// The status patch for `patch <ns>/podpatch/<name>`.
pub fn pod_status(
    spec: &PodSpec,
    sandbox_ready: bool,
    pod_ip: &str,
    host_ip: &str,
    start_time: &str,
    containers: &[Observed],
) -> Value {
    let ready = sandbox_ready && !containers.is_empty() && containers.iter().all(|c| c.ready);
    let tf = |b: bool| if b { "True" } else { "False" };
    let mut conditions = vec![
        json!({ "type": "PodScheduled", "status": "True" }),
        json!({ "type": "Initialized", "status": "True" }),
        json!({ "type": "ContainersReady", "status": tf(ready) }),
        json!({ "type": "Ready", "status": tf(ready) }),
    ];
    if !spec.unsupported.is_empty() {
        conditions.push(json!({
            "type": "EdgeUnsupportedFields", "status": "True", "reason": "NotSupportedByEdgecore",
            "message": format!("edgecore does not act on: {}", spec.unsupported.join(", "))
        }));
    }
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": c.image_id,
                "containerID": if c.container_id.is_empty() { Value::Null } else { json!(format!("containerd://{}", c.container_id)) },
                "restartCount": c.restart_count,
                "ready": c.ready,
                "started": matches!(c.state, State::Running { .. }),
                "state": state_json(&c.state),
                "lastState": c.last.as_ref().map(state_json).unwrap_or_else(|| json!({ "running": null, "waiting": null, "terminated": null })),
            })
        })
        .collect();
    let ips = if pod_ip.is_empty() {
        json!([])
    } else {
        json!([{ "ip": pod_ip }])
    };
    json!({
        "metadata": { "uid": spec.uid },
        "status": {
            "phase": phase(spec, sandbox_ready, containers),
            "conditions": conditions,
            "hostIP": host_ip,
            "podIP": if pod_ip.is_empty() { Value::Null } else { json!(pod_ip) },
            "podIPs": ips,
            "startTime": if start_time.is_empty() { Value::Null } else { json!(start_time) },
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

    fn obs(state: State, restarts: u32, ready: bool) -> Observed {
        Observed {
            name: "a".into(),
            image: "i:1".into(),
            image_id: "sha".into(),
            container_id: "abc".into(),
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
            started_at: "t0".into(),
            finished_at: "t1".into(),
        }
    }

    #[test]
    fn phases_follow_restart_policy() {
        let running = obs(
            State::Running {
                started_at: "t".into(),
            },
            0,
            true,
        );
        assert_eq!(
            phase(
                &spec(RestartPolicy::Always),
                true,
                std::slice::from_ref(&running)
            ),
            "Running"
        );
        assert_eq!(
            phase(&spec(RestartPolicy::Always), false, &[running]),
            "Pending"
        );
        let creating = obs(
            State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            0,
            false,
        );
        assert_eq!(
            phase(&spec(RestartPolicy::Always), true, &[creating]),
            "Pending"
        );
        let backoff = obs(
            State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: String::new(),
            },
            3,
            false,
        );
        assert_eq!(
            phase(&spec(RestartPolicy::Always), true, &[backoff]),
            "Running"
        );
        assert_eq!(
            phase(&spec(RestartPolicy::Never), true, &[obs(term(0), 0, false)]),
            "Succeeded"
        );
        assert_eq!(
            phase(&spec(RestartPolicy::Never), true, &[obs(term(2), 0, false)]),
            "Failed"
        );
        assert_eq!(
            phase(
                &spec(RestartPolicy::OnFailure),
                true,
                &[obs(term(0), 1, false)]
            ),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &spec(RestartPolicy::OnFailure),
                true,
                &[obs(term(1), 1, false)]
            ),
            "Running"
        );
    }

    #[test]
    fn status_json_replaces_old_states_and_reports_unsupported_fields() {
        let mut s = spec(RestartPolicy::Always);
        s.unsupported.push("spec.initContainers".into());
        let mut o = obs(
            State::Running {
                started_at: "t".into(),
            },
            2,
            true,
        );
        o.last = Some(term(1));
        let st = pod_status(&s, true, "", "10.0.0.2", "t0", &[o]);
        let cs = &st["status"]["containerStatuses"][0];
        assert_eq!(cs["restartCount"], 2);
        assert_eq!(cs["containerID"], "containerd://abc");
        assert!(
            cs["state"]["waiting"].is_null()
                && cs["state"]["terminated"].is_null()
                && cs["state"]["running"].is_object()
        );
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(st["status"]["conditions"][3]["status"], "True");
        let unsupported = st["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "EdgeUnsupportedFields")
            .unwrap();
        assert!(unsupported["message"]
            .as_str()
            .unwrap()
            .contains("spec.initContainers"));
        assert!(st["status"]["podIP"].is_null());
    }
}
