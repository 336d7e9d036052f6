//! `edgecore meta list|get`: inspects MetaManager's store from outside the running agent.
//! redb allows readers in other processes, so this works while edgecore runs and while it
//! is stopped alike.

use std::path::PathBuf;

use anyhow::{bail, Context};
use bus::ObjectKind;
use lexopt::prelude::*;

use crate::config::{Config, CONFIG_FILE, DEFAULT_DATA_DIR};
use crate::UsageError;

fn objects(
    cfg: &Config,
    kind: Option<ObjectKind>,
) -> anyhow::Result<Vec<metamanager::StoredObject>> {
    let path = cfg.store_path()?;
    if !path.exists() {
        return Ok(Vec::new());
    }
    let prefix = match kind {
        Some(k) => format!("obj/{}/", k.as_str()),
        None => "obj/".to_owned(),
    };
    let pairs = match cfg.store_backend()? {
        store::Backend::Redb => match store::ReadOnly::open(&path) {
            Ok(ro) => ro.scan_prefix(prefix.as_bytes())?,
            // A store cut off mid-write (power loss) needs redb's recovery, which only a
            // writer may run: possible while edgecore is stopped, and what it does at start.
            Err(ro_err) => store::open(&path, store::Backend::Redb)
                .map_err(|e| anyhow::anyhow!("{ro_err}; recovering it failed too: {e}"))?
                .scan_prefix(prefix.as_bytes())?,
        },
        // sled allows one process only: this works while edgecore is stopped.
        store::Backend::Sled => store::open(&path, store::Backend::Sled)
            .context("the sled store can only be read while edgecore is stopped")?
            .scan_prefix(prefix.as_bytes())?,
    };
    Ok(metamanager::list_from(pairs)?)
}

pub fn cmd_meta(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let mut dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut json = false;
    let mut positional = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => dir = PathBuf::from(p.value()?),
            Short('o') | Long("output") => match crate::text(p.value()?)?.as_str() {
                "json" => json = true,
                other => {
                    return Err(UsageError(format!("unknown output {other:?}; use json")).into())
                }
            },
            Long("help") | Short('h') => {
                print!("{}", crate::USAGE);
                return Ok(());
            }
            Value(v) => positional.push(crate::text(v)?),
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    let cfg = Config::load(&dir.join(CONFIG_FILE)).map_err(|e| UsageError(format!("{e:#}")))?;
    let kind = |s: &String| s.parse::<ObjectKind>().map_err(UsageError);
    match positional.first().map(String::as_str) {
        Some("list") => {
            let k = positional.get(1).map(kind).transpose()?;
            let objs = objects(&cfg, k)?;
            if json {
                let items: Vec<serde_json::Value> = objs
                    .iter()
                    .map(|o| serde_json::from_slice(&o.record.json).unwrap_or_default())
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(());
            }
            println!(
                "{:<10} {:<20} {:<40} {:>10}",
                "KIND", "NAMESPACE", "NAME", "VERSION"
            );
            for o in objs {
                println!(
                    "{:<10} {:<20} {:<40} {:>10}",
                    o.kind.as_str(),
                    o.namespace,
                    o.name,
                    o.record.resource_version
                );
            }
            Ok(())
        }
        Some("get") => {
            let (Some(k), Some(target)) = (positional.get(1), positional.get(2)) else {
                return Err(UsageError("meta get needs <kind> <namespace>/<name>".into()).into());
            };
            let k = kind(k)?;
            let (ns, name) = target.split_once('/').unwrap_or(("default", target));
            let found = objects(&cfg, Some(k))?
                .into_iter()
                .find(|o| o.namespace == ns && o.name == name);
            let Some(o) = found else {
                bail!("no {} {ns}/{name} in the store", k.as_str())
            };
            let v: serde_json::Value =
                serde_json::from_slice(&o.record.json).context("stored object is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        _ => Err(UsageError(
            "meta needs a verb: list [kind] | get <kind> <namespace>/<name>".into(),
        )
        .into()),
    }
}
