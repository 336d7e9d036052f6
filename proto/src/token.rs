//! The enrollment token (§3.3): `hex(sha256(CA DER)) + "." + JWT`, four dot-separated parts.
//!
//! The edge checks the first part against the CA it downloads and sends the JWT as a bearer
//! token; only the cloud can verify the JWT, so this module only checks its shape.

use std::fmt;

/// A parsed enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// SHA-256 of the cloud CA certificate's DER bytes.
    pub ca_sha256: [u8; 32],
    /// `header.claims.signature`, each base64url.
    pub jwt: String,
}

impl fmt::Debug for EnrollToken {
    // The JWT is a credential: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EnrollToken {{ ca_sha256: {}, jwt: <redacted> }}",
            hex(&self.ca_sha256)
        )
    }
}

/// Why a text is not an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token must have 4 dot-separated parts (<ca-hash>.<jwt header>.<jwt claims>.<jwt signature>), found {0}")]
    Parts(usize),
    #[error("token's first part must be the 64 hex digit SHA-256 of the cloud CA")]
    CaHash,
    #[error("token's JWT part contains characters outside base64url")]
    Jwt,
}

impl EnrollToken {
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 4 {
            return Err(TokenError::Parts(parts.len()));
        }
        let ca_sha256 = unhex32(parts[0]).ok_or(TokenError::CaHash)?;
        let b64url = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'=')
        };
        if !parts[1..].iter().all(|p| b64url(p)) {
            return Err(TokenError::Jwt);
        }
        Ok(EnrollToken {
            ca_sha256,
            jwt: parts[1..].join("."),
        })
    }
}

impl fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", hex(&self.ca_sha256), self.jwt)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "4d2c5a9b0f1e3d7c6b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c.eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln";

    #[test]
    fn parses_and_prints_back() {
        let t = EnrollToken::parse(GOOD).unwrap();
        assert_eq!(t.ca_sha256[0], 0x4d);
        assert_eq!(t.jwt, "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln");
        assert_eq!(t.to_string(), GOOD);
        assert!(!format!("{t:?}").contains("eyJ"));
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(EnrollToken::parse("abc"), Err(TokenError::Parts(1)));
        assert_eq!(EnrollToken::parse("a.b.c.d.e"), Err(TokenError::Parts(5)));
        assert_eq!(EnrollToken::parse("zz.a.b.c"), Err(TokenError::CaHash));
        let bad_jwt = format!("{}.a b.c.d", "0".repeat(64));
        assert_eq!(EnrollToken::parse(&bad_jwt), Err(TokenError::Jwt));
        let empty_jwt = format!("{}..c.d", "0".repeat(64));
        assert_eq!(EnrollToken::parse(&empty_jwt), Err(TokenError::Jwt));
    }
}
