//! Enrollment tokens in upstream's format (§3.3): `hex(sha256(CA DER)).<JWT>`, the JWT HS256
//! keyed by the CA private key's DER bytes.
//!
//! Upstream edgecore and keadm only split the token in four at the dots and compare the first
//! part with the CA they download; the claims are the cloud's business. Upstream's cloud
//! writes `{"exp":N}` (golang-jwt `RegisteredClaims`); ours adds registered and private
//! claims an upstream edge never reads:
//!
//! | claim | meaning |
//! |---|---|
//! | `exp` | expiry, Unix seconds (required, as upstream) |
//! | `iat` | when `cloudcore token` made it |
//! | `jti` | the token's id: what its uses are counted under |
//! | `uses` | how many certificates it may get at most (needs `jti`) |
//! | `node` | the one node name it may enroll |
//!
//! A token with only `exp`, as upstream's cloud and our earlier versions made them, is valid
//! for any name and any number of uses until it expires.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use proto::token::EnrollToken;
use serde_json::{json, Value};

use crate::{Ca, PkiError};

/// Default lifetime of an enrollment token (upstream: 2 × 12 h refresh).
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 24 * 3600;
/// Random bytes in a token id.
pub const TOKEN_ID_BYTES: usize = 16;
/// Longest token id accepted (ours are 32 hex digits).
pub const MAX_TOKEN_ID_BYTES: usize = 64;

/// The JOSE header golang-jwt writes for HS256 (`{"alg":"HS256","typ":"JWT"}`, keys sorted),
/// base64url: every token upstream's cloud makes starts with it, and so do ours.
pub const UPSTREAM_HS256_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Why a bearer token was refused. Shown to the enrolling edge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRejected {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature does not match this cloud's CA")]
    BadSignature,
    #[error("token expired {0} s ago; ask for a new one with `cloudcore token`")]
    Expired(i64),
    #[error("token is not valid for another {0} s")]
    NotYetValid(i64),
    #[error("token claim {0}")]
    Claim(String),
}

/// What a token says. `TokenClaims::expiring(exp)` is upstream's shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenClaims {
    /// Expiry, Unix seconds.
    pub exp: i64,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    /// `jti`.
    pub id: Option<String>,
    /// Most certificates this token may get.
    pub uses: Option<u32>,
    /// The only node name it may enroll.
    pub node: Option<String>,
}

impl TokenClaims {
    /// Upstream's claims: an expiry, nothing else.
    pub fn expiring(exp: i64) -> TokenClaims {
        TokenClaims {
            exp,
            ..TokenClaims::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut c = json!({ "exp": self.exp });
        let mut put = |k: &str, v: Value| c[k] = v;
        if let Some(v) = self.iat {
            put("iat", json!(v));
        }
        if let Some(v) = self.nbf {
            put("nbf", json!(v));
        }
        if let Some(v) = &self.id {
            put("jti", json!(v));
        }
        if let Some(v) = self.uses {
            put("uses", json!(v));
        }
        if let Some(v) = &self.node {
            put("node", json!(v));
        }
        c
    }

    fn from_json(c: &Value) -> Result<TokenClaims, TokenRejected> {
        let bad = |what: &str| TokenRejected::Claim(what.to_owned());
        if !c.is_object() {
            return Err(TokenRejected::Malformed);
        }
        // golang-jwt writes NumericDate as an integer; a float is legal JWT, so take its floor.
        let time = |k: &str| -> Result<Option<i64>, TokenRejected> {
            match c.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                    .map(Some)
                    .ok_or_else(|| bad(&format!("{k} is not a number"))),
            }
        };
        let exp = time("exp")?.ok_or_else(|| bad("exp is missing"))?;
        let id = match c.get("jti") {
            None => None,
            Some(v) => {
                let s = v.as_str().ok_or_else(|| bad("jti is not a string"))?;
                let ok = !s.is_empty()
                    && s.len() <= MAX_TOKEN_ID_BYTES
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(bad(&format!(
                        "jti must be 1 to {MAX_TOKEN_ID_BYTES} letters, digits, '-' or '_'"
                    )));
                }
                Some(s.to_owned())
            }
        };
        let uses = match c.get("uses") {
            None => None,
            Some(v) => {
                let n = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| bad("uses must be a whole number from 1"))?;
                if id.is_none() {
                    return Err(bad("uses needs a jti to count them under"));
                }
                Some(n)
            }
        };
        let node = match c.get("node") {
            None => None,
            Some(v) => {
                let s = v.as_str().ok_or_else(|| bad("node is not a string"))?;
                proto::validate_node_name(s).map_err(|e| bad(&format!("node: {e}")))?;
                Some(s.to_owned())
            }
        };
        Ok(TokenClaims {
            exp,
            iat: time("iat")?,
            nbf: time("nbf")?,
            id,
            uses,
            node,
        })
    }
}

/// A random token id: 32 hex digits.
pub fn new_token_id() -> Result<String, PkiError> {
    let mut b = [0u8; TOKEN_ID_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| PkiError::Random)?;
    Ok(proto::token::hex(&b))
}

impl Ca {
    /// A token with `claims`, in upstream's format.
    pub fn issue_token(&self, claims: &TokenClaims) -> EnrollToken {
        let signing_input = format!(
            "{UPSTREAM_HS256_HEADER}.{}",
            B64.encode(claims.to_json().to_string())
        );
        let sig = ring::hmac::sign(&self.hmac_key(), signing_input.as_bytes());
        EnrollToken {
            ca_sha256: self.sha256(),
            jwt: format!("{signing_input}.{}", B64.encode(sig.as_ref())),
        }
    }

    /// Checks a bearer JWT: HS256, the signature (constant time), expiry and not-before
    /// against `now_unix`, and the claims' shapes. Use counts and node bindings are the
    /// caller's to enforce.
    pub fn verify_token(&self, jwt: &str, now_unix: i64) -> Result<TokenClaims, TokenRejected> {
        let parts: Vec<&str> = jwt.trim().split('.').collect();
        let [header, claims, sig] = parts[..] else {
            return Err(TokenRejected::Malformed);
        };
        let decode = |p: &str| {
            B64.decode(p.trim_end_matches('='))
                .map_err(|_| TokenRejected::Malformed)
        };
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenRejected::Malformed)?;
        // Upstream refuses anything but HMAC; only HS256 is ever made.
        if header["alg"] != "HS256" {
            return Err(TokenRejected::Claim(format!(
                "alg must be HS256, found {}",
                header["alg"]
            )));
        }
        let jwt = jwt.trim();
        let signing_input = &jwt[..jwt.rfind('.').unwrap_or(0)];
        ring::hmac::verify(&self.hmac_key(), signing_input.as_bytes(), &decode(sig)?)
            .map_err(|_| TokenRejected::BadSignature)?;
        let claims: Value =
            serde_json::from_slice(&decode(claims)?).map_err(|_| TokenRejected::Malformed)?;
        let claims = TokenClaims::from_json(&claims)?;
        if now_unix >= claims.exp {
            return Err(TokenRejected::Expired(now_unix - claims.exp));
        }
        if let Some(nbf) = claims.nbf.filter(|&nbf| now_unix < nbf) {
            return Err(TokenRejected::NotYetValid(nbf - now_unix));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_ca(tag: &str) -> Ca {
        let d = std::env::temp_dir().join(format!("pki-token-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Ca::load_or_create(&d).unwrap()
    }

    /// Upstream's `VerifyCAAndGetRealToken` (pkg/security/token/token.go), as an upstream
    /// edgecore and keadm apply it: four parts, the first the CA's hash, the rest the JWT.
    fn upstream_edge_reads(token: &str, ca_der: &[u8]) -> Option<String> {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let hash = proto::token::hex(ring::digest::digest(&ring::digest::SHA256, ca_der).as_ref());
        (parts[0] == hash).then(|| parts[1..].join("."))
    }

    #[test]
    fn upstream_shaped_tokens_are_byte_for_byte_upstreams_and_verify() {
        let ca = new_ca("upstream");
        // Upstream's Create: golang-jwt HS256 over RegisteredClaims{ExpiresAt}.
        let golden_claims = B64.encode(br#"{"exp":1893456000}"#);
        assert_eq!(golden_claims, "eyJleHAiOjE4OTM0NTYwMDB9");
        let t = ca.issue_token(&TokenClaims::expiring(1_893_456_000));
        let text = t.to_string();
        let jwt = upstream_edge_reads(&text, ca.cert_der()).expect("upstream's parser accepts it");
        assert_eq!(
            jwt,
            format!(
                "{UPSTREAM_HS256_HEADER}.{golden_claims}.{}",
                jwt.rsplit('.').next().unwrap()
            )
        );
        // What golang-jwt writes for the header, decoded.
        assert_eq!(
            B64.decode(UPSTREAM_HS256_HEADER).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
        let claims = ca.verify_token(&jwt, 1_000).unwrap();
        assert_eq!(claims, TokenClaims::expiring(1_893_456_000));
        assert_eq!(proto::token::EnrollToken::parse(&text).unwrap(), t);
    }

    #[test]
    fn our_claims_round_trip_and_upstreams_parser_still_takes_the_token() {
        let ca = new_ca("claims");
        let claims = TokenClaims {
            exp: 5_000,
            iat: Some(1_000),
            nbf: None,
            id: Some(new_token_id().unwrap()),
            uses: Some(3),
            node: Some("edge-7".into()),
        };
        let t = ca.issue_token(&claims).to_string();
        let jwt = upstream_edge_reads(&t, ca.cert_der()).unwrap();
        assert!(jwt.starts_with(UPSTREAM_HS256_HEADER));
        assert_eq!(ca.verify_token(&jwt, 1_001).unwrap(), claims);
        assert_eq!(
            ca.verify_token(&jwt, 5_010),
            Err(TokenRejected::Expired(10))
        );
    }

    #[test]
    fn signature_expiry_and_claims_are_checked() {
        let ca = new_ca("check");
        let t = ca.issue_token(&TokenClaims::expiring(1000));
        assert!(ca.verify_token(&t.jwt, 999).is_ok());
        assert_eq!(
            ca.verify_token(&t.jwt, 1010),
            Err(TokenRejected::Expired(10))
        );
        assert_eq!(
            new_ca("check-other").verify_token(&t.jwt, 0),
            Err(TokenRejected::BadSignature)
        );
        assert_eq!(ca.verify_token("garbage", 0), Err(TokenRejected::Malformed));
        assert_eq!(ca.verify_token("a.b.c.d", 0), Err(TokenRejected::Malformed));
        let mut tampered = t.jwt.clone();
        tampered.insert(40, 'A');
        assert!(ca.verify_token(&tampered, 0).is_err());

        // Validly signed, but claims of the wrong shape.
        let signed = |claims: &str| {
            let input = format!("{UPSTREAM_HS256_HEADER}.{}", B64.encode(claims));
            let sig = ring::hmac::sign(&ca.hmac_key(), input.as_bytes());
            format!("{input}.{}", B64.encode(sig.as_ref()))
        };
        for (claims, want) in [
            (r#"{}"#, "exp is missing"),
            (r#"{"exp":"soon"}"#, "exp is not a number"),
            (r#"{"exp":99,"uses":2}"#, "uses needs a jti"),
            (r#"{"exp":99,"jti":"x","uses":0}"#, "uses must be"),
            (r#"{"exp":99,"jti":"a b"}"#, "jti must be"),
            (r#"{"exp":99,"node":"A..b"}"#, "node: node name"),
        ] {
            match ca.verify_token(&signed(claims), 0) {
                Err(TokenRejected::Claim(m)) => assert!(m.contains(want), "{claims}: {m}"),
                other => panic!("{claims}: {other:?}"),
            }
        }
        assert_eq!(
            ca.verify_token(&signed(r#"{"exp":99,"nbf":50}"#), 10),
            Err(TokenRejected::NotYetValid(40))
        );
        assert_eq!(
            ca.verify_token(&signed(r#"{"exp":99.5}"#), 10).unwrap().exp,
            99
        );
        // Another algorithm in the header is refused even before the signature.
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), B64.encode("{}"));
        assert!(matches!(
            ca.verify_token(&none, 0),
            Err(TokenRejected::Claim(m)) if m.contains("alg must be HS256")
        ));
    }
}
