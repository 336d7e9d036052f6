//! Sends pod statuses to the cloud and confirms graceful deletions, sans-IO.
//!
//! - A status is sent (`patch <ns>/podpatch/<name>`) when it differs from the last one the
//!   cloud accepted, one request per pod in flight; every status again after a reconnect.
//! - An error answer backs off (1 s doubling to a minute) instead of resending at once; a
//!   NotFound is final for that pod (the cloud has no such pod: its delete is on the way).
//! - A deleted pod whose terminal status the cloud accepted is confirmed with
//!   `delete <ns>/pod/<name>` (grace 0, uid precondition), retried with back-off until the
//!   cloud answers `"OK"` (or NotFound: already gone).

use std::collections::HashMap;
use std::time::Duration;

use bus::{CloudRequest, Outcome, Reply, RequestId};

use super::plan::{PodReport, Retry};

/// First retry after an error answer; doubles to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Request ids of pod work: a range of their own so NodeAgent ignores their replies.
pub const FIRST_ID: u32 = 0x8000_0000;
/// Status reports and deletions in flight at most, over all pods: with NodeAgent's few
/// requests this stays within Edged's part of the bus contract (its reply room).
pub const IN_FLIGHT: usize = 16;
const _: () = assert!(IN_FLIGHT + 8 <= bus::ModuleId::Edged.in_flight());

#[derive(Clone, Debug, PartialEq)]
enum Sent {
    Status(String),
    Delete,
}

#[derive(Default)]
struct Rep {
    namespace: String,
    name: String,
    /// The newest status offered, as text.
    latest: Option<String>,
    terminal: bool,
    /// What the cloud accepted last.
    accepted: Option<String>,
    accepted_terminal: bool,
    in_flight: Option<(RequestId, Sent)>,
    retry: Retry,
    /// The cloud has no such pod: nothing more is sent.
    gone: bool,
    confirmed: bool,
}

/// Status and deletion bookkeeping per pod uid.
pub struct Reporter {
    pods: HashMap<String, Rep>,
    connected: bool,
    next_id: u32,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter {
            pods: HashMap::new(),
            connected: false,
            next_id: FIRST_ID,
        }
    }
}

impl Reporter {
    pub fn is_mine(&self, id: RequestId) -> bool {
        id.0 >= FIRST_ID
    }

    /// The tunnel went up or down: nothing is in flight any more, and after a reconnect
    /// everything is sent again.
    pub fn link(&mut self, connected: bool) {
        self.connected = connected;
        for r in self.pods.values_mut() {
            r.in_flight = None;
            r.accepted = None;
            r.retry = Retry::default();
        }
    }

    /// The statuses of this pass; pods not offered are forgotten.
    pub fn offer(&mut self, reports: &[PodReport]) {
        self.pods
            .retain(|uid, _| reports.iter().any(|r| r.uid == *uid));
        for r in reports {
            let e = self.pods.entry(r.uid.clone()).or_default();
            e.namespace = r.namespace.clone();
            e.name = r.name.clone();
            e.latest = Some(r.patch.to_string());
            e.terminal = r.terminal;
        }
    }

    /// Requests to send now.
    pub fn poll(&mut self, now_ms: i64) -> Vec<(RequestId, CloudRequest)> {
        let mut out = Vec::new();
        if !self.connected {
            return out;
        }
        let mut in_flight = self.pods.values().filter(|r| r.in_flight.is_some()).count();
        for (uid, r) in self.pods.iter_mut() {
            if in_flight >= IN_FLIGHT {
                break; // the rest go as answers come back
            }
            if r.gone || r.in_flight.is_some() || now_ms < r.retry.not_before {
                continue;
            }
            let id = RequestId(self.next_id);
            let (sent, req) = match &r.latest {
                Some(text) if r.accepted.as_ref() != Some(text) => (
                    Sent::Status(text.clone()),
                    CloudRequest::PatchPodStatus {
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        patch: text.clone(),
                    },
                ),
                // kubelet's canBeDeleted: the cloud holds the terminal status.
                _ if r.accepted_terminal && r.terminal && !r.confirmed => (
                    Sent::Delete,
                    CloudRequest::DeletePod {
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        uid: uid.clone(),
                    },
                ),
                _ => continue,
            };
            self.next_id = self.next_id.wrapping_add(1).max(FIRST_ID);
            r.in_flight = Some((id, sent));
            in_flight += 1;
            out.push((id, req));
        }
        out
    }

    /// An answer to one of [`Reporter::poll`]'s requests.
    pub fn on_reply(&mut self, id: RequestId, outcome: &Outcome, now_ms: i64) {
        let Some(r) = self
            .pods
            .values_mut()
            .find(|r| r.in_flight.as_ref().is_some_and(|(i, _)| *i == id))
        else {
            return;
        };
        let (_, sent) = r.in_flight.take().expect("found by its id");
        let reply = match outcome {
            Outcome::Answered { reply, .. } => reply,
            // Offline or lost: sent again when possible (a reconnect resets everything).
            Outcome::NotConnected | Outcome::Lost => {
                back_off(r, now_ms);
                return;
            }
        };
        match (sent, reply) {
            (Sent::Status(text), Reply::Object(_)) => {
                r.retry = Retry::default();
                r.accepted_terminal = r.terminal && r.latest.as_ref() == Some(&text);
                r.accepted = Some(text);
            }
            (Sent::Status(_), Reply::Failed { code: 404, .. }) => {
                log::info!(
                    "pod {}/{}: the cloud has no such pod; not reporting it any more",
                    r.namespace,
                    r.name
                );
                r.gone = true;
            }
            (Sent::Delete, Reply::Ok) | (Sent::Delete, Reply::Failed { code: 404, .. }) => {
                log::info!(
                    "pod {}/{}: stopped and confirmed deleted",
                    r.namespace,
                    r.name
                );
                r.confirmed = true;
            }
            (sent, other) => {
                if r.retry.failures == 0 {
                    let what = match sent {
                        Sent::Status(_) => "status report",
                        Sent::Delete => "deletion",
                    };
                    log::warn!(
                        "pod {}/{}: the cloud refused its {what}: {}; retrying with back-off",
                        r.namespace,
                        r.name,
                        bus::reply_summary(other)
                    );
                }
                back_off(r, now_ms);
            }
        }
    }

    /// When [`Reporter::poll`] next has something to do after a back-off.
    pub fn next_due_ms(&self) -> Option<i64> {
        if self.pods.values().filter(|r| r.in_flight.is_some()).count() >= IN_FLIGHT {
            // Nothing can go before an answer comes back, and the answer wakes the loop: a
            // due time now would make the pod loop spin and starve every other task.
            return None;
        }
        self.pods
            .values()
            .filter(|r| r.in_flight.is_none() && !r.gone && r.retry.not_before > 0)
            .map(|r| r.retry.not_before)
            .min()
    }
}

fn back_off(r: &mut Rep, now_ms: i64) {
    r.retry.fail(RETRY_BASE, RETRY_MAX, now_ms, 1000);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(phase: &str, terminal: bool) -> PodReport {
        PodReport {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            patch: json!({"metadata": {"uid": "u1"}, "status": {"phase": phase}}),
            terminal,
        }
    }

    fn answered(reply: Reply) -> Outcome {
        Outcome::Answered {
            reply,
            resource_version: String::new(),
            ack: None,
        }
    }

    #[test]
    fn sends_changes_once_and_again_after_a_reconnect() {
        let mut r = Reporter::default();
        r.offer(&[report("Running", false)]);
        assert!(r.poll(0).is_empty(), "offline: nothing");
        r.link(true);
        let sent = r.poll(0);
        assert!(
            matches!(&sent[..], [(_, CloudRequest::PatchPodStatus { name, .. })] if name == "web")
        );
        assert!(r.poll(0).is_empty(), "one in flight per pod");
        r.on_reply(sent[0].0, &answered(Reply::Object(json!({}))), 0);
        r.offer(&[report("Running", false)]);
        assert!(
            r.poll(1).is_empty(),
            "unchanged and accepted: not sent again"
        );
        r.link(false);
        r.link(true);
        assert_eq!(r.poll(2).len(), 1, "after a reconnect, everything again");
    }

    #[test]
    fn errors_back_off_and_not_found_is_final() {
        let mut r = Reporter::default();
        r.link(true);
        r.offer(&[report("Running", false)]);
        let refused = answered(Reply::Failed {
            code: 500,
            reason: "InternalError".into(),
            message: "x".into(),
        });
        let mut t = 0;
        let mut gaps = Vec::new();
        for _ in 0..4 {
            let sent = r.poll(t);
            assert_eq!(sent.len(), 1);
            r.on_reply(sent[0].0, &refused, t);
            let due = r.next_due_ms().unwrap();
            assert!(r.poll(due - 1).is_empty(), "not before the back-off");
            gaps.push(due - t);
            t = due;
        }
        assert_eq!(gaps, [1000, 2000, 4000, 8000], "doubling, not at once");
        let sent = r.poll(t);
        r.on_reply(
            sent[0].0,
            &answered(Reply::Failed {
                code: 404,
                reason: "NotFound".into(),
                message: String::new(),
            }),
            t,
        );
        r.offer(&[report("Failed", false)]);
        assert!(r.poll(t + 100_000).is_empty(), "NotFound is final");
    }

    #[test]
    fn a_terminal_accepted_status_is_confirmed_as_a_delete() {
        let mut r = Reporter::default();
        r.link(true);
        r.offer(&[report("Running", false)]);
        let s = r.poll(0);
        r.on_reply(s[0].0, &answered(Reply::Object(json!({}))), 0);
        assert!(r.poll(0).is_empty(), "not terminal: no delete");
        r.offer(&[report("Succeeded", true)]);
        let s = r.poll(1);
        assert!(
            matches!(s[0].1, CloudRequest::PatchPodStatus { .. }),
            "the terminal status first"
        );
        r.on_reply(s[0].0, &answered(Reply::Object(json!({}))), 1);
        let d = r.poll(2);
        assert!(matches!(&d[..], [(_, CloudRequest::DeletePod { uid, .. })] if uid == "u1"));
        // An error string is not "OK": retried later.
        r.on_reply(d[0].0, &answered(Reply::Text("boom".into())), 2);
        assert!(r.poll(3).is_empty());
        let d = r.poll(r.next_due_ms().unwrap());
        assert_eq!(d.len(), 1);
        r.on_reply(d[0].0, &answered(Reply::Ok), 5000);
        assert!(r.poll(10_000).is_empty(), "confirmed once");
    }

    #[test]
    fn at_most_in_flight_reports_and_nothing_due_while_the_window_is_full() {
        let mut r = Reporter::default();
        r.link(true);
        let reports: Vec<PodReport> = (0..IN_FLIGHT + 4)
            .map(|i| PodReport {
                uid: format!("u{i}"),
                name: format!("p{i}"),
                ..report("Pending", false)
            })
            .collect();
        r.offer(&reports);
        let fail = answered(Reply::Failed {
            code: 500,
            reason: "InternalError".into(),
            message: String::new(),
        });
        // Every pod sent once and refused: all back off.
        let mut t = 0;
        while r.pods.values().any(|p| p.retry.failures == 0) {
            let sent = r.poll(t);
            assert!(sent.len() <= IN_FLIGHT);
            for (id, _) in sent {
                r.on_reply(id, &fail, t);
            }
            t += 100;
        }
        // Long after every back-off: the window takes IN_FLIGHT, the rest are past due.
        let later = t + RETRY_MAX.as_millis() as i64;
        assert_eq!(r.poll(later).len(), IN_FLIGHT);
        assert_eq!(
            r.next_due_ms(),
            None,
            "a full window waits for an answer, not for a clock already past"
        );
    }
}
