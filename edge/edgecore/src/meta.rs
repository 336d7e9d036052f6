//! `edgecore meta list|get|check`: inspects the store from outside the running agent.
//! redb allows readers in other processes, so this works while edgecore runs and while it
//! is stopped alike.
//!
//! Every record is checked (the store's per-record checksum, then MetaManager's decoding): a
//! corrupt one is reported on stderr with its key and the command exits 1, while the good
//! ones are still shown. Nothing corrupt is ever printed as an object.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bus::ObjectKind;
use lexopt::prelude::*;
use serde_json::Value;

use crate::config::{Config, CONFIG_FILE, DEFAULT_DATA_DIR};
use crate::UsageError;

/// Good pairs under `prefix` and the records that failed their check.
fn scan(path: &Path, cfg: &Config, prefix: &[u8]) -> anyhow::Result<(store::Pairs, Vec<Bad>)> {
    // No file, or an empty one (redb makes a store of it on the writer's first open): nothing
    // stored, and nothing for this command to create.
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(Default::default());
    }
    let (good, bad) = match cfg.store_backend()? {
        store::Backend::Redb => match store::ReadOnly::open(path) {
            Ok(ro) => ro.scan_checked(prefix)?,
            // A store cut off mid-write (power loss) needs redb's recovery, which only a
            // writer may run: possible while edgecore is stopped, and what it does at start.
            Err(ro_err) => store::Store::open(path, store::Backend::Redb)
                .map_err(|e| anyhow::anyhow!("{ro_err}; recovering it failed too: {e}"))?
                .scan_checked(prefix)?,
        },
        // sled allows one process only: this works while edgecore is stopped.
        store::Backend::Sled => store::Store::open(path, store::Backend::Sled)
            .context("the sled store can only be read while edgecore is stopped")?
            .scan_checked(prefix)?,
    };
    let bad = bad
        .into_iter()
        .map(|c| Bad {
            key: String::from_utf8_lossy(&c.key).into_owned(),
            why: c.why,
        })
        .collect();
    Ok((good, bad))
}

/// A record that cannot be shown, and why.
struct Bad {
    key: String,
    why: String,
}

/// A decoded object and its JSON.
type Shown = (metamanager::StoredObject, Value);

/// MetaManager's objects (of `kind`, or all), decoded down to their JSON, and the records
/// that failed on the way.
fn objects(
    path: &Path,
    cfg: &Config,
    kind: Option<ObjectKind>,
) -> anyhow::Result<(Vec<Shown>, Vec<Bad>)> {
    let prefix = match kind {
        Some(k) => format!("obj/{}/", k.as_str()),
        None => "obj/".to_owned(),
    };
    let (good, mut bad) = scan(path, cfg, prefix.as_bytes())?;
    let mut out = Vec::with_capacity(good.len());
    for pair in good {
        let key = String::from_utf8_lossy(&pair.0).into_owned();
        let decoded = metamanager::list_from(vec![pair]).map(|mut v| v.pop());
        match decoded {
            Ok(Some(o)) => match serde_json::from_slice(&o.record.json) {
                Ok(json) => out.push((o, json)),
                Err(e) => bad.push(Bad {
                    key,
                    why: format!("the stored object is not JSON: {e}"),
                }),
            },
            Ok(None) => {}
            Err(metamanager::MetaError::Corrupt(_, why)) => bad.push(Bad { key, why }),
            Err(e) => bad.push(Bad {
                key,
                why: e.to_string(),
            }),
        }
    }
    Ok((out, bad))
}

/// Names every corrupt record on stderr; an error (exit 1) if there was any.
fn report(path: &Path, bad: &[Bad]) -> anyhow::Result<()> {
    for b in bad {
        eprintln!("corrupt record {}: {}", b.key, b.why);
    }
    if bad.is_empty() {
        return Ok(());
    }
    bail!(
        "{} corrupt record(s) in {}. To have the cloud send everything again, stop edgecore and \
         move the file aside: a new store has a new identity, and the cloud resends all of it \
         to a new store",
        bad.len(),
        path.display()
    )
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
    let path = cfg.store_path()?;
    let kind = |s: &String| s.parse::<ObjectKind>().map_err(UsageError);
    match positional.first().map(String::as_str) {
        Some("list") => {
            let k = positional.get(1).map(kind).transpose()?;
            let (objs, bad) = objects(&path, &cfg, k)?;
            if json {
                let items: Vec<&Value> = objs.iter().map(|(_, j)| j).collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!(
                    "{:<10} {:<20} {:<40} {:>10}",
                    "KIND", "NAMESPACE", "NAME", "VERSION"
                );
                for (o, _) in &objs {
                    println!(
                        "{:<10} {:<20} {:<40} {:>10}",
                        o.kind.as_str(),
                        o.namespace,
                        o.name,
                        o.record.resource_version
                    );
                }
            }
            report(&path, &bad)
        }
        Some("get") => {
            let (Some(k), Some(target)) = (positional.get(1), positional.get(2)) else {
                return Err(UsageError("meta get needs <kind> <namespace>/<name>".into()).into());
            };
            let k = kind(k)?;
            let (ns, name) = target.split_once('/').unwrap_or(("default", target));
            let (objs, bad) = objects(&path, &cfg, Some(k))?;
            let key = String::from_utf8_lossy(&metamanager::key(k, ns, name)).into_owned();
            if let Some(b) = bad.iter().find(|b| b.key == key) {
                return report(&path, std::slice::from_ref(b));
            }
            let Some((_, v)) = objs
                .into_iter()
                .find(|(o, _)| o.namespace == ns && o.name == name)
            else {
                bail!("no {} {ns}/{name} in the store", k.as_str())
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Some("check") => {
            // Every module's records (objects, tokens, devices, models, queued reports).
            let (good, mut bad) = scan(&path, &cfg, b"")?;
            let checked = good.len() + bad.len();
            let (_, obj_bad) = objects(&path, &cfg, None)?;
            for b in obj_bad {
                if !bad.iter().any(|x| x.key == b.key) {
                    bad.push(b);
                }
            }
            report(&path, &bad)?;
            println!(
                "{checked} records checked in {}: all intact",
                path.display()
            );
            Ok(())
        }
        _ => Err(UsageError(
            "meta needs a verb: list [kind] | get <kind> <namespace>/<name> | check".into(),
        )
        .into()),
    }
}
