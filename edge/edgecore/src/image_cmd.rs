//! `edgecore image`: the direct runtime's image store (`<data-dir>/images`). Import writes
//! by rename only, so it is safe while `edgecore run` uses the store.

use std::path::PathBuf;

use anyhow::Context;
use lexopt::prelude::*;
use support::cli::UsageError;

use crate::config::DEFAULT_DATA_DIR;

pub fn cmd_image(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let mut dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut name = None;
    let mut positional = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => dir = PathBuf::from(p.value()?),
            Long("name") => name = Some(crate::text(p.value()?)?),
            Long("help") | Short('h') => {
                print!("{}", crate::USAGE);
                return Ok(());
            }
            Value(v) => positional.push(v),
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    let store = image::ImageStore::open(&dir.join("images"))
        .with_context(|| format!("cannot open the image store in {}", dir.display()))?;
    match positional.first().and_then(|v| v.to_str()) {
        Some("import") => {
            let Some(file) = positional.get(1) else {
                return Err(UsageError("image import needs an archive path".into()).into());
            };
            let file = PathBuf::from(file);
            let images = image::archive::import(&store, &file, name.as_deref())
                .with_context(|| format!("cannot import {}", file.display()))?;
            for i in &images {
                // Unpacked now, so the first start of a pod does not wait for it.
                store
                    .rootfs(i)
                    .with_context(|| format!("cannot unpack {}", i.name))?;
                println!("{} {}", i.name, i.manifest_digest);
            }
            Ok(())
        }
        Some("list") => {
            println!("{:<60} DIGEST", "IMAGE");
            for i in store.list() {
                println!("{:<60} {}", i.name, i.manifest_digest);
            }
            Ok(())
        }
        _ => Err(UsageError("image needs a command: import or list".into()).into()),
    }
}
