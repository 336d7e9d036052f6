//! Bearer tokens for the Kubernetes API (kube-apiserver's static token file, made revocable):
//! `cloudcore api-token create --user NAME [--group G]…` prints a token `<id>.<secret>` once;
//! the data dir keeps only its id, SHA-256 and identity, one line each, in [`TOKENS_FILE`]
//! (mode 0600). The API reads the file on each request that brings a token, so a revocation
//! (`api-token revoke ID`) holds from the next request on, without a restart.

use std::path::Path;

use anyhow::Context;

/// The file in the data dir.
pub const TOKENS_FILE: &str = "api-tokens";
/// The file is read at most this far (about 2,000 tokens): a larger one is refused whole.
pub const MAX_TOKENS_FILE_BYTES: u64 = 256 << 10;
/// Random bytes in a token's id (shown, to revoke it by) and in its secret.
const ID_BYTES: usize = 3;
const SECRET_BYTES: usize = 16;

/// One token's record: `<id> <sha256 hex> <user> <groups, comma-separated, or ->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    hash: String,
    pub user: String,
    pub groups: Vec<String>,
}

impl Record {
    fn line(&self) -> String {
        let groups = if self.groups.is_empty() {
            "-".to_owned()
        } else {
            self.groups.join(",")
        };
        format!("{} {} {} {groups}\n", self.id, self.hash, self.user)
    }

    fn parse(line: &str) -> Option<Record> {
        let mut w = line.split(' ');
        let (id, hash, user, groups) = (w.next()?, w.next()?, w.next()?, w.next()?);
        let groups = match groups {
            "-" => Vec::new(),
            g => g.split(',').map(str::to_owned).collect(),
        };
        Some(Record {
            id: id.into(),
            hash: hash.into(),
            user: user.into(),
            groups,
        })
    }
}

fn sha256_hex(token: &str) -> String {
    proto::token::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// A name or group as a record holds it: no spaces, commas or control characters.
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 || s.chars().any(|c| c.is_control() || c == ' ' || c == ',') {
        return Err(format!(
            "{what} must be 1 to 253 characters, without spaces, commas or control characters"
        ));
    }
    Ok(())
}

/// The records in the data dir (none without the file).
pub fn load(data_dir: &Path) -> anyhow::Result<Vec<Record>> {
    let path = data_dir.join(TOKENS_FILE);
    let text = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        Ok(m) if m.len() > MAX_TOKENS_FILE_BYTES => anyhow::bail!(
            "{} is over {MAX_TOKENS_FILE_BYTES} bytes (MAX_TOKENS_FILE_BYTES)",
            path.display()
        ),
        Ok(_) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    };
    Ok(text.lines().filter_map(Record::parse).collect())
}

fn save(data_dir: &Path, records: &[Record]) -> anyhow::Result<()> {
    let text: String = records.iter().map(Record::line).collect();
    anyhow::ensure!(
        text.len() as u64 <= MAX_TOKENS_FILE_BYTES,
        "too many tokens: the file would be over {MAX_TOKENS_FILE_BYTES} bytes"
    );
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    crate::write_private(&data_dir.join(TOKENS_FILE), text.as_bytes())
}

/// Makes a token for `user` in `groups`; returns the token (kept nowhere in clear).
pub fn create(data_dir: &Path, user: &str, groups: &[String]) -> anyhow::Result<String> {
    check_name("--user", user).map_err(anyhow::Error::msg)?;
    for g in groups {
        check_name("--group", g).map_err(anyhow::Error::msg)?;
    }
    let mut bytes = [0u8; ID_BYTES + SECRET_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the OS random source failed"))?;
    let id = proto::token::hex(&bytes[..ID_BYTES]);
    let token = format!("{id}.{}", proto::token::hex(&bytes[ID_BYTES..]));
    let mut records = load(data_dir)?;
    records.push(Record {
        id,
        hash: sha256_hex(&token),
        user: user.into(),
        groups: groups.to_vec(),
    });
    save(data_dir, &records)?;
    Ok(token)
}

/// Removes the token `id`; whether there was one.
pub fn revoke(data_dir: &Path, id: &str) -> anyhow::Result<bool> {
    let mut records = load(data_dir)?;
    let before = records.len();
    records.retain(|r| r.id != id);
    if records.len() == before {
        return Ok(false);
    }
    save(data_dir, &records)?;
    Ok(true)
}

/// Who `token` names, if it is one of the records.
pub fn lookup(records: &[Record], token: &str) -> Option<(String, Vec<String>)> {
    let hash = sha256_hex(token);
    records
        .iter()
        .find(|r| r.hash == hash)
        .map(|r| (r.user.clone(), r.groups.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_until_revoked_and_is_kept_only_hashed() {
        let dir = std::env::temp_dir().join(format!("apitokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = create(&dir, "alice", &["system:masters".into(), "ops".into()]).unwrap();
        let other = create(&dir, "bob", &[]).unwrap();
        let file = std::fs::read_to_string(dir.join(TOKENS_FILE)).unwrap();
        assert!(!file.contains(&t) && !file.contains(&other), "{file}");
        let records = load(&dir).unwrap();
        assert_eq!(
            lookup(&records, &t),
            Some(("alice".into(), vec!["system:masters".into(), "ops".into()]))
        );
        assert_eq!(lookup(&records, &other), Some(("bob".into(), vec![])));
        assert_eq!(lookup(&records, "nope"), None);
        let id = t.split('.').next().unwrap();
        assert!(revoke(&dir, id).unwrap());
        assert!(!revoke(&dir, id).unwrap(), "gone already");
        let records = load(&dir).unwrap();
        assert_eq!(lookup(&records, &t), None);
        assert!(lookup(&records, &other).is_some(), "the others stay");
        assert!(create(&dir, "a b", &[]).is_err(), "bad input: refused");
        assert_eq!(load(&dir).unwrap().len(), 1, "state intact");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
