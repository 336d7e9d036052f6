use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("image-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tar of (path, content); a content of `None` is a directory.
fn tar_of(files: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        match c {
            Some(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(0o755);
                b.append_data(&mut h, p, *data).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// An OCI archive of one image with `layers`; returns its bytes and manifest digest.
fn oci_archive(layers: &[Vec<u8>], name: &str, corrupt: bool) -> (Vec<u8>, String) {
    let config = json!({
        "architecture": archive::go_arch(), "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "WorkingDir": "/srv", "User": "1000:1000"},
        "rootfs": {"type": "layers", "diff_ids": []}
    })
    .to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config.as_bytes()), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(l), "size": l.len()})).collect::<Vec<_>>(),
    })
    .to_string();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(manifest.as_bytes()), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": name}}]})
    .to_string();
    let mut blobs: Vec<(String, Vec<u8>)> = vec![
        (
            format!("./blobs/sha256/{}", sha256_hex(config.as_bytes())),
            config.into_bytes(),
        ),
        (
            format!("./blobs/sha256/{}", sha256_hex(manifest.as_bytes())),
            manifest.clone().into_bytes(),
        ),
    ];
    for l in layers {
        let mut content = l.clone();
        if corrupt {
            content.push(0);
        }
        blobs.push((format!("./blobs/sha256/{}", sha256_hex(l)), content));
    }
    let mut files: Vec<(&str, Option<&[u8]>)> = vec![
        ("./oci-layout", Some(br#"{"imageLayoutVersion":"1.0.0"}"#)),
        ("./index.json", Some(index.as_bytes())),
    ];
    for (p, c) in &blobs {
        files.push((p, Some(c)));
    }
    (tar_of(&files), digest(manifest.as_bytes()))
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn an_oci_archive_imports_and_unpacks_with_whiteouts() {
    let d = Dir::new("oci");
    let store = ImageStore::open(&d.0.join("store")).unwrap();
    let lower = gzip(&tar_of(&[
        ("bin/", None),
        ("bin/app", Some(b"#!/bin/sh\n")),
        ("etc/", None),
        ("etc/old", Some(b"gone")),
        ("var/cache/", None),
        ("var/cache/x", Some(b"cached")),
    ]));
    let upper = tar_of(&[
        ("etc/.wh.old", Some(b"")),
        ("var/cache/.wh..wh..opq", Some(b"")),
        ("var/cache/y", Some(b"new")),
    ]);
    let (ar, manifest) = oci_archive(&[lower, upper], "localhost/app:1", false);
    let path = write(&d.0, "app.tar", &ar);
    let imported = archive::import(&store, &path, None).unwrap();
    assert_eq!(imported.len(), 1);
    let img = store.get("localhost/app:1").expect("tagged");
    assert_eq!(img, imported[0]);
    assert_eq!(img.manifest_digest, manifest);
    assert_eq!(img.image_ref(), format!("localhost/app@{manifest}"));
    assert_eq!(img.config.entrypoint, ["/bin/app"]);
    assert_eq!(img.config.cmd, ["--serve"]);
    assert_eq!(
        (img.config.working_dir.as_str(), img.config.user.as_str()),
        ("/srv", "1000:1000")
    );
    let root = store.rootfs(&img).unwrap();
    assert_eq!(std::fs::read(root.join("bin/app")).unwrap(), b"#!/bin/sh\n");
    assert!(!root.join("etc/old").exists(), "whited out");
    assert!(root.join("etc").is_dir());
    assert!(!root.join("var/cache/x").exists(), "opaque dir emptied");
    assert_eq!(std::fs::read(root.join("var/cache/y")).unwrap(), b"new");
    assert_eq!(store.rootfs(&img).unwrap(), root, "unpacked once");
    assert_eq!(store.list().len(), 1);
    // By digest too.
    assert!(store.get(&format!("localhost/app@{manifest}")).is_some());
    assert!(store.get("localhost/other:1").is_none());
}

#[test]
fn a_blob_whose_content_does_not_match_its_digest_is_refused() {
    let d = Dir::new("corrupt");
    let store = ImageStore::open(&d.0.join("store")).unwrap();
    let layer = gzip(&tar_of(&[("f", Some(b"x"))]));
    let (ar, _) = oci_archive(&[layer], "localhost/bad:1", true);
    let path = write(&d.0, "bad.tar", &ar);
    let e = archive::import(&store, &path, None).unwrap_err();
    assert!(matches!(e, ImageError::Digest(_)), "{e}");
    assert!(e.to_string().contains("blobs/sha256/"), "{e}");
    assert!(store.get("localhost/bad:1").is_none(), "nothing tagged");
    // Nothing half-written is left in staging.
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn a_bare_tag_needs_a_name_and_zstd_layers_are_refused_clearly() {
    let d = Dir::new("zstd");
    let store = ImageStore::open(&d.0.join("store")).unwrap();
    let zstd = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0];
    let (ar, _) = oci_archive(&[zstd], "latest", false);
    let path = write(&d.0, "z.tar", &ar);
    let e = archive::import(&store, &path, None).unwrap_err();
    assert!(e.to_string().contains("--name"), "{e}");
    let img = archive::import(&store, &path, Some("zz"))
        .unwrap()
        .remove(0);
    assert_eq!(img.name, "docker.io/library/zz:latest");
    let e = store.rootfs(&img).unwrap_err();
    assert!(e.to_string().contains("zstd"), "{e}");
    assert!(!store
        .root()
        .join("rootfs")
        .join(digest_hex(&img.config_digest).unwrap())
        .exists());
}

#[test]
fn a_docker_archive_imports_with_its_layers_checked_against_the_config() {
    let d = Dir::new("docker");
    let store = ImageStore::open(&d.0.join("store")).unwrap();
    let layer = tar_of(&[("hello", Some(b"world"))]);
    let mk = |diff: &str| {
        let config = json!({"config": {"Cmd": ["/hello"]}, "rootfs": {"type": "layers", "diff_ids": [diff]}}).to_string();
        let cname = format!("{}.json", sha256_hex(config.as_bytes()));
        let manifest =
            json!([{"Config": cname, "RepoTags": ["hello:v1"], "Layers": ["abc/layer.tar"]}])
                .to_string();
        tar_of(&[
            ("manifest.json", Some(manifest.as_bytes())),
            (&cname, Some(config.as_bytes())),
            ("abc/layer.tar", Some(&layer)),
        ])
    };
    let good = write(&d.0, "good.tar", &mk(&digest(&layer)));
    let img = archive::import(&store, &good, None).unwrap().remove(0);
    assert_eq!(img.name, "docker.io/library/hello:v1");
    assert_eq!(img.config.cmd, ["/hello"]);
    assert_eq!(
        std::fs::read(store.rootfs(&img).unwrap().join("hello")).unwrap(),
        b"world"
    );
    let bad = write(&d.0, "bad.tar", &mk(&format!("sha256:{}", "0".repeat(64))));
    let e = archive::import(&store, &bad, Some("hello:v2")).unwrap_err();
    assert!(matches!(e, ImageError::Digest(_)), "{e}");
    assert!(store.get("hello:v2").is_none());
}

#[test]
fn an_image_index_resolves_to_this_platform() {
    let d = Dir::new("index");
    let store = ImageStore::open(&d.0.join("store")).unwrap();
    let layer = tar_of(&[("f", Some(b"ours"))]);
    let config = json!({"config": {}}).to_string();
    let man = |l: &[u8]| {
        json!({"schemaVersion": 2, "config": {"digest": digest(config.as_bytes())},
               "layers": [{"digest": digest(l)}]})
        .to_string()
    };
    let other_layer = tar_of(&[("f", Some(b"theirs"))]);
    let (ours, theirs) = (man(&layer), man(&other_layer));
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"digest": digest(theirs.as_bytes()), "platform": {"os": "linux", "architecture": "s390x"}},
        {"digest": digest(ours.as_bytes()), "platform": {"os": "linux", "architecture": archive::go_arch()}},
    ]})
    .to_string();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": digest(index.as_bytes()), "annotations": {"io.containerd.image.name": "example.com/multi:1"}}]})
    .to_string();
    let mut files: Vec<(String, Vec<u8>)> = vec![("index.json".into(), top.into_bytes())];
    for b in [
        config.as_bytes(),
        ours.as_bytes(),
        theirs.as_bytes(),
        index.as_bytes(),
        &layer,
        &other_layer,
    ] {
        files.push((format!("blobs/sha256/{}", sha256_hex(b)), b.to_vec()));
    }
    let refs: Vec<(&str, Option<&[u8]>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_slice())))
        .collect();
    let path = write(&d.0, "multi.tar", &tar_of(&refs));
    let img = archive::import(&store, &path, None).unwrap().remove(0);
    assert_eq!(img.manifest_digest, digest(ours.as_bytes()));
    assert_eq!(
        std::fs::read(store.rootfs(&img).unwrap().join("f")).unwrap(),
        b"ours"
    );
}
