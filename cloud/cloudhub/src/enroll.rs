//! Who holds a node name (sans-IO): the certificates issued to each node, the serials revoked
//! when an admin deleted a node, and how often each counted token was used.
//!
//! The rules the certificate endpoint and the tunnel apply with it:
//!
//! - A name is *enrolled* while the registry has its node or a certificate issued for it has
//!   not expired. An enrolled name gets a new certificate only for a request that presents a
//!   current certificate of that node (renewal); a token alone gets `409 Conflict`. Only
//!   `cloudcore delete node` frees the name.
//! - Deleting a node revokes every unexpired certificate issued to it: the serials are kept
//!   until the certificates would have expired, and refused on the tunnel and the certificate
//!   endpoint. Certificates issued before the cloud kept records (earlier versions) are not
//!   known by serial: for a deleted name, every certificate not issued after the deletion is
//!   refused ([`Enrollment::delete`] keeps a mark for as long as such a certificate can live).
//! - A token's uses are counted under its `jti`, in the same durable write that records the
//!   certificate it got, so a use is never lost nor counted twice across a restart.
//! - New names count against `--node-limit` together with registered nodes, so certificates
//!   cannot be collected for names that never connect.
//!
//! Every table is bounded (constants below); a full table refuses with a reason, never
//! forgets a revocation. Expired entries go in [`Enrollment::prune`].

use std::collections::BTreeMap;

use pki::{CertFacts, TokenClaims};
use serde::{Deserialize, Serialize};

/// Key of this state in the store's state table.
pub const STATE_KEY: &str = "enrollment";
/// Unexpired certificates one node may hold. Edges renew at 70–90 % of the lifetime, so a
/// node holds one, two while a renewal's answer is on its way; more means a renewal loop.
pub const MAX_CERTS_PER_NODE: usize = 4;
/// Revoked serials remembered at once (each until its certificate expires).
pub const MAX_REVOKED: usize = 8192;
/// Deleted names remembered at once (for certificates issued before records were kept).
pub const MAX_DELETED: usize = 8192;
/// Counted tokens (those with a use limit) remembered at once, each until it expires.
pub const MAX_COUNTED_TOKENS: usize = 1024;

/// A request refused, with the HTTP status and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// What a certificate request presents.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A current certificate of the node (checked with [`Enrollment::check_cert`]).
    Renewal(&'a CertFacts),
    /// A verified token.
    Token(&'a TokenClaims),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TokenUse {
    used: u32,
    /// The token's expiry: the record goes with it.
    exp: i64,
}

/// The enrollment state, saved whole under [`STATE_KEY`] after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Per node: serial → notAfter of each unexpired certificate issued to it.
    nodes: BTreeMap<String, BTreeMap<String, i64>>,
    /// Revoked serial → notAfter.
    revoked: BTreeMap<String, i64>,
    /// Deleted name → until when certificates it holds without a record are refused.
    deleted: BTreeMap<String, i64>,
    /// Token id → uses so far.
    tokens: BTreeMap<String, TokenUse>,
}

/// What [`Enrollment::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Serials revoked.
    pub serials: Vec<String>,
    /// Whether the name held a certificate the cloud knew of.
    pub was_enrolled: bool,
}

impl Enrollment {
    pub fn decode(bytes: &[u8]) -> Result<Enrollment, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("enrollment state: {e}"))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain maps serialize")
    }

    /// Forgets what expired by `now`: certificates, revocations, marks and tokens.
    pub fn prune(&mut self, now: i64) {
        for certs in self.nodes.values_mut() {
            certs.retain(|_, not_after| *not_after > now);
        }
        self.nodes.retain(|_, certs| !certs.is_empty());
        self.revoked.retain(|_, not_after| *not_after > now);
        self.deleted.retain(|_, until| *until > now);
        self.tokens.retain(|_, t| t.exp > now);
    }

    /// Whether a certificate the cloud issued for `node` is still unexpired (after
    /// [`Enrollment::prune`]).
    pub fn holds_certificate(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Names holding an unexpired certificate.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Serials and expiries of the certificates `node` holds.
    pub fn certificates(&self, node: &str) -> impl Iterator<Item = (&str, i64)> {
        self.nodes
            .get(node)
            .into_iter()
            .flatten()
            .map(|(s, t)| (s.as_str(), *t))
    }

    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    /// Whether `cert` (chained to the CA, already checked by TLS) may stand for `node`.
    pub fn check_cert(&self, cert: &CertFacts, node: &str) -> Result<(), Refusal> {
        if self.revoked.contains_key(&cert.serial) {
            return Err(refuse(
                403,
                format!("certificate {} of node {node:?} was revoked when the node was deleted; join again with a new token", cert.serial),
            ));
        }
        let recorded = self
            .nodes
            .get(node)
            .is_some_and(|c| c.contains_key(&cert.serial));
        if self.deleted.contains_key(node) && !recorded {
            return Err(refuse(
                403,
                format!("certificate {} of node {node:?} was issued before the node was deleted; join again with a new token", cert.serial),
            ));
        }
        Ok(())
    }

    /// Whether `node` may get a certificate with `cred`. `registered`: the registry has the
    /// node; `slots_used`: names registered or holding certificates; `limit`: the node
    /// limit. Changes nothing: [`Enrollment::record`] does once the certificate is made.
    pub fn may_issue(
        &self,
        node: &str,
        cred: Credential<'_>,
        registered: bool,
        slots_used: usize,
        limit: usize,
    ) -> Result<(), Refusal> {
        let held = self.nodes.get(node).map_or(0, BTreeMap::len);
        if held >= MAX_CERTS_PER_NODE {
            return Err(refuse(
                429,
                format!("node {node:?} already holds {held} unexpired certificates; renew only when the current one nears its end"),
            ));
        }
        let Credential::Token(claims) = cred else {
            return Ok(());
        };
        if let Some(bound) = claims.node.as_deref().filter(|b| *b != node) {
            return Err(refuse(
                403,
                format!("this token may only enroll node {bound:?}, not {node:?}"),
            ));
        }
        if registered || self.holds_certificate(node) {
            return Err(refuse(
                409,
                format!("node name {node:?} is already enrolled: a certificate for it is issued only to the node itself (renewal with its current certificate), or after `cloudcore delete node {node}`; choose another --node-name"),
            ));
        }
        if slots_used >= limit {
            return Err(refuse(
                429,
                format!("node limit of {limit} reached: free slots with `cloudcore delete node NAME`, or raise --node-limit"),
            ));
        }
        if let (Some(id), Some(uses)) = (claims.id.as_deref(), claims.uses) {
            match self.tokens.get(id) {
                Some(t) if t.used >= uses => {
                    return Err(refuse(
                        401,
                        format!("this token was good for {uses} enrollment(s) and has been used for all of them; ask for a new one with `cloudcore token`"),
                    ))
                }
                Some(_) => {}
                None if self.tokens.len() >= MAX_COUNTED_TOKENS => {
                    return Err(refuse(
                        503,
                        format!("{MAX_COUNTED_TOKENS} tokens with a use limit are in use; try again when some expired, or use a token without --uses"),
                    ))
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Records `cert`, just issued to `node` with `cred`, and counts the token's use. A
    /// deleted name's mark stays: certificates issued from now on are recorded, so they pass.
    pub fn record(&mut self, node: &str, cert: &CertFacts, cred: Credential<'_>) {
        self.nodes
            .entry(node.to_owned())
            .or_default()
            .insert(cert.serial.clone(), cert.not_after);
        if let Credential::Token(claims) = cred {
            if let (Some(id), Some(_)) = (claims.id.as_deref(), claims.uses) {
                let t = self.tokens.entry(id.to_owned()).or_default();
                t.used += 1;
                t.exp = claims.exp;
            }
        }
    }

    /// Token uses counted so far under `id`.
    pub fn token_uses(&self, id: &str) -> u32 {
        self.tokens.get(id).map_or(0, |t| t.used)
    }

    /// The admin deleted `node`: its certificates are revoked and its name freed. Every
    /// certificate for it the cloud has no record of stays refused until `mark_until`.
    pub fn delete(&mut self, node: &str, mark_until: i64) -> Result<Revoked, Refusal> {
        let certs = self.nodes.get(node).cloned().unwrap_or_default();
        if self.revoked.len() + certs.len() > MAX_REVOKED
            || (!self.deleted.contains_key(node) && self.deleted.len() >= MAX_DELETED)
        {
            return Err(refuse(
                507,
                format!("the revocation list is full ({MAX_REVOKED} serials, {MAX_DELETED} deleted names); entries leave as their certificates expire, sooner with a shorter --edge-cert-validity"),
            ));
        }
        self.nodes.remove(node);
        let serials: Vec<String> = certs.keys().cloned().collect();
        self.revoked.extend(certs);
        let until = self.deleted.entry(node.to_owned()).or_insert(mark_until);
        *until = (*until).max(mark_until);
        Ok(Revoked {
            was_enrolled: !serials.is_empty(),
            serials,
        })
    }
}

/// Why the tunnel refuses the client certificate `cert_der`, if it does: revoked, or issued
/// before its node was deleted.
pub fn tunnel_refusal(hub: &crate::Hub, cert_der: &[u8]) -> Option<String> {
    let facts = pki::cert_facts(cert_der)?;
    let node = facts.common_name.as_deref()?.strip_prefix("system:node:")?;
    let refusal = hub.enrollment.borrow().check_cert(&facts, node).err()?;
    Some(refusal.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str, not_after: i64) -> CertFacts {
        CertFacts {
            common_name: Some("system:node:n".into()),
            serial: serial.into(),
            not_before: 0,
            not_after,
        }
    }

    fn token(uses: Option<u32>, node: Option<&str>) -> TokenClaims {
        TokenClaims {
            exp: 1_000,
            id: Some("t1".into()),
            uses,
            node: node.map(str::to_owned),
            ..TokenClaims::default()
        }
    }

    #[test]
    fn an_enrolled_name_needs_its_certificate_and_a_deleted_one_is_free_again() {
        let mut e = Enrollment::default();
        let t = token(None, None);
        assert_eq!(
            e.may_issue("n", Credential::Token(&t), false, 0, 10),
            Ok(())
        );
        let c1 = cert("01", 500);
        e.record("n", &c1, Credential::Token(&t));
        // The token again, for the enrolled name: refused, whether registered or not.
        for registered in [false, true] {
            let r = e
                .may_issue("n", Credential::Token(&t), registered, 1, 10)
                .unwrap_err();
            assert_eq!(r.status, 409, "{r:?}");
            assert!(r.message.contains("cloudcore delete node n"), "{r:?}");
        }
        // A name only in the registry (enrolled before records were kept) is taken too.
        assert_eq!(
            e.may_issue("old", Credential::Token(&t), true, 1, 10)
                .unwrap_err()
                .status,
            409
        );
        // Renewal with the current certificate is fine.
        assert_eq!(e.check_cert(&c1, "n"), Ok(()));
        assert_eq!(
            e.may_issue("n", Credential::Renewal(&c1), true, 1, 10),
            Ok(())
        );
        let c2 = cert("02", 900);
        e.record("n", &c2, Credential::Renewal(&c1));

        let revoked = e.delete("n", 2_000).unwrap();
        assert_eq!(revoked.serials, ["01", "02"]);
        for c in [&c1, &c2] {
            let r = e.check_cert(c, "n").unwrap_err();
            assert_eq!(r.status, 403);
            assert!(r.message.contains("revoked"), "{r:?}");
        }
        // A certificate from before records were kept, for the deleted name: refused too.
        let legacy = cert("0a", 900);
        assert!(e
            .check_cert(&legacy, "n")
            .unwrap_err()
            .message
            .contains("before the node was deleted"));
        assert_eq!(e.check_cert(&legacy, "other"), Ok(()));
        // The name is free; a new certificate for it is good.
        assert_eq!(
            e.may_issue("n", Credential::Token(&t), false, 0, 10),
            Ok(())
        );
        let c3 = cert("03", 1_500);
        e.record("n", &c3, Credential::Token(&t));
        assert_eq!(e.check_cert(&c3, "n"), Ok(()));
        assert!(e.check_cert(&c1, "n").is_err());

        // Revocations last exactly as long as the certificates would have.
        e.prune(600);
        assert!(e
            .check_cert(&c2, "n")
            .unwrap_err()
            .message
            .contains("revoked"));
        // c1's revocation is gone with its validity; the deletion mark still covers it.
        assert!(e
            .check_cert(&c1, "n")
            .unwrap_err()
            .message
            .contains("before the node was deleted"));
        e.prune(900);
        assert_eq!(e.revoked_count(), 0);
        e.prune(2_000);
        assert!(!e.holds_certificate("n"));
    }

    #[test]
    fn uses_bindings_and_the_node_limit() {
        let mut e = Enrollment::default();
        let two = token(Some(2), None);
        for (i, name) in ["a", "b"].iter().enumerate() {
            assert_eq!(
                e.may_issue(name, Credential::Token(&two), false, i, 10),
                Ok(())
            );
            e.record(name, &cert(&format!("0{i}"), 900), Credential::Token(&two));
        }
        assert_eq!(e.token_uses("t1"), 2);
        let r = e
            .may_issue("c", Credential::Token(&two), false, 2, 10)
            .unwrap_err();
        assert_eq!(r.status, 401);
        assert!(r.message.contains("used for all of them"), "{r:?}");
        // The count survives an encode/decode (what a restart does).
        let back = Enrollment::decode(&e.encode()).unwrap();
        assert_eq!(back, e);
        assert!(back
            .may_issue("c", Credential::Token(&two), false, 2, 10)
            .is_err());
        // Pruned with the token's expiry.
        let mut later = back.clone();
        later.prune(1_000);
        assert_eq!(later.token_uses("t1"), 0);

        let bound = token(None, Some("gw-1"));
        let r = e
            .may_issue("gw-2", Credential::Token(&bound), false, 0, 10)
            .unwrap_err();
        assert_eq!(r.status, 403);
        assert!(r.message.contains("only enroll node \"gw-1\""), "{r:?}");
        assert_eq!(
            e.may_issue("gw-1", Credential::Token(&bound), false, 0, 10),
            Ok(())
        );

        let free = token(None, None);
        let r = e
            .may_issue("z", Credential::Token(&free), false, 10, 10)
            .unwrap_err();
        assert_eq!(r.status, 429);
        assert!(r.message.contains("cloudcore delete node"), "{r:?}");
    }

    #[test]
    fn tables_are_bounded_and_full_ones_refuse() {
        let mut e = Enrollment::default();
        let c = cert("00", 900);
        for i in 0..MAX_CERTS_PER_NODE {
            assert_eq!(
                e.may_issue("n", Credential::Renewal(&c), true, 1, 10),
                Ok(())
            );
            e.record("n", &cert(&format!("{i:02}"), 900), Credential::Renewal(&c));
        }
        assert_eq!(
            e.may_issue("n", Credential::Renewal(&c), true, 1, 10)
                .unwrap_err()
                .status,
            429
        );
        let mut e = Enrollment::default();
        for i in 0..MAX_COUNTED_TOKENS {
            let mut t = token(Some(1), None);
            t.id = Some(format!("t{i}"));
            e.record(
                &format!("n{i}"),
                &cert(&format!("{i}"), 900),
                Credential::Token(&t),
            );
        }
        let mut t = token(Some(1), None);
        t.id = Some("new".into());
        assert_eq!(
            e.may_issue("x", Credential::Token(&t), false, 0, usize::MAX)
                .unwrap_err()
                .status,
            503
        );
        let mut e = Enrollment::default();
        for i in 0..MAX_DELETED {
            e.delete(&format!("n{i}"), 100).unwrap();
        }
        let before = e.clone();
        assert_eq!(e.delete("one-more", 100).unwrap_err().status, 507);
        assert_eq!(e, before, "a refused delete changes nothing");
        assert!(e.delete("n0", 200).is_ok(), "a name already marked fits");
    }
}
