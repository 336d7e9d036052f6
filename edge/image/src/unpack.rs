//! One layer (plain or gzip tar) unpacked over a directory, with the OCI whiteouts:
//! `.wh.<name>` removes `<name>` from the layers below, `.wh..wh..opq` empties its directory.
//! Paths never leave the directory (the tar crate refuses `..` and absolute links out).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::ImageError;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// A relative path without `..`, or `None`.
fn inside(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir | Component::RootDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn layer(blob: &Path, dst: &Path, digest: &str) -> Result<(), ImageError> {
    let bad = |e: std::io::Error| {
        // The tar crate puts the cause in the inner error.
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        ImageError::Invalid(format!("layer {digest}: {e}{cause}"))
    };
    let magic = crate::archive::magic(blob).map_err(bad)?;
    let f = std::fs::File::open(blob).map_err(bad)?;
    let reader: Box<dyn Read> = match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(f)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            return Err(ImageError::Unsupported(format!(
                "layer {digest} is zstd-compressed, which this edgecore does not unpack (use gzip or uncompressed layers)"
            )))
        }
        _ => Box::new(f),
    };
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(rel) = inside(&path) else {
            return Err(ImageError::Invalid(format!(
                "layer {digest}: path {} leaves the root",
                path.display()
            )));
        };
        let file = rel.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent = rel
            .parent()
            .map(|p| dst.join(p))
            .unwrap_or_else(|| dst.to_owned());
        match file.as_deref() {
            Some(OPAQUE) => {
                if let Ok(rd) = std::fs::read_dir(&parent) {
                    for e in rd.flatten() {
                        remove_any(&e.path()).map_err(bad)?;
                    }
                }
                continue;
            }
            Some(f) if f.starts_with(WHITEOUT) => {
                remove_any(&parent.join(&f[WHITEOUT.len()..])).map_err(bad)?;
                continue;
            }
            _ => {}
        }
        // A directory where a file was, or the reverse: the upper layer's kind wins.
        let target = dst.join(&rel);
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            let is_dir = entry.header().entry_type().is_dir();
            if m.is_dir() != is_dir || (!is_dir && m.file_type().is_symlink()) {
                remove_any(&target).map_err(bad)?;
            }
        }
        entry.unpack_in(dst).map_err(bad)?;
    }
    Ok(())
}
