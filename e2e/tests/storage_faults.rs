//! The edge's store under faults, with real processes: a full disk under a running edgecore
//! (a size-limited tmpfs this test mounts), a store file deleted or emptied between runs, and
//! bytes flipped in a record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{wait_for, Cloud, Edge};
use rustix::process::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// A size-limited tmpfs mounted on `dir`, unmounted when dropped (lazily, should a process
/// still hold a file on it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes 64 KiB chunks to `path` until the filesystem is full (bounded by `max_bytes`).
fn fill(path: &Path, max_bytes: u64) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    let mut n = 0u64;
    while n < max_bytes {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    let _ = f.sync_all();
    n
}

/// `type` condition of `node` as the cloud lists it.
fn condition(cloud: &Cloud, node: &str, kind: &str) -> Option<Value> {
    cloud.nodes()["items"]
        .as_array()?
        .iter()
        .find(|n| n["metadata"]["name"] == node)?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: edge0\n  containers: [{{name: app, image: busybox}}]\n"
    )
}

fn stored_pod(edge: &Edge, name: &str) -> Option<()> {
    edge.stored("Pod", name).map(|_| ())
}

#[test]
fn a_full_disk_makes_the_node_not_ready_and_space_returning_makes_it_ready_without_a_restart() {
    let edge = Edge::new("edge0");
    let _fs = match Tmpfs::mount(edge.dir.path(), "8m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({e}); run as root to test a full disk");
            return;
        }
    };
    let cloud = Cloud::start(&[]);
    edge.join_ok(&cloud);
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    cloud.apply_ok(&pod("before"));
    wait_for("a pod stored before the disk fills", T, || {
        stored_pod(&edge, "before")
    });

    let filler = edge.dir.path().join("filler");
    assert!(fill(&filler, 64 << 20) > 0);
    // Something to write: MetaManager cannot store it, so acknowledges nothing. Large, so it
    // cannot fit in pages the store file already has: 700 KiB in environment values (pod
    // annotations hold 256 KiB at most).
    let env: Vec<String> = (0..7)
        .map(|i| format!("{{name: B{i}, value: {}}}", "x".repeat(100 << 10)))
        .collect();
    cloud.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: during}}\nspec:\n  nodeName: edge0\n  containers: [{{name: app, image: busybox, env: [{}]}}]\n",
        env.join(", ")
    ));
    cloud.wait_ready("edge0", false, T);
    let ready = condition(&cloud, "edge0", "Ready").unwrap();
    assert_eq!(ready["reason"], "KubeletNotReady", "{ready}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("store cannot write") && message.contains("No space left on device"),
        "{ready}"
    );
    assert_eq!(
        condition(&cloud, "edge0", "DiskPressure").unwrap()["status"],
        "True"
    );
    assert!(stored_pod(&edge, "during").is_none());
    run.wait_log("cannot write", T);

    std::fs::remove_file(&filler).unwrap();
    cloud.wait_ready("edge0", true, T);
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "edgecore recovered without a restart"
    );
    assert_eq!(run.log().matches("starting node").count(), 1, "one start");
    run.wait_log("writes again", T);
    cloud.apply_ok(&pod("after"));
    wait_for("a pod applied after space returned", T, || {
        stored_pod(&edge, "after")
    });
    // The one that could not be stored is resent until acknowledged (backing off to 60 s).
    wait_for(
        "the pod that arrived on a full disk",
        Duration::from_secs(120),
        || stored_pod(&edge, "during"),
    );
    assert_eq!(
        condition(&cloud, "edge0", "DiskPressure").unwrap()["status"],
        "False"
    );
    run.signal(Signal::TERM);
    assert_eq!(run.wait_exit(T), Some(0));
}

#[test]
fn a_deleted_or_emptied_store_gets_every_object_again() {
    const PODS: usize = 200;
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    let mut manifest =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {k: v}\n");
    for i in 0..PODS {
        manifest.push_str("---\n");
        manifest.push_str(&pod(&format!("p{i}")));
        if i == 0 {
            manifest.push_str("  volumes: [{name: cfg, configMap: {name: shared}}]\n");
        }
    }
    cloud.apply_ok(&manifest);
    let all = PODS + 1;
    wait_for(
        "all 201 objects on the edge",
        Duration::from_secs(60),
        || (edge.meta().len() == all).then_some(()),
    );
    wait_for("all acknowledged", T, || {
        (cloud.synced("edge0", "Pod").len() == PODS).then_some(())
    });
    let store = edge.dir.path().join("edgecore.redb");
    for (round, how) in ["deleted", "emptied"].into_iter().enumerate() {
        run.signal(Signal::TERM);
        assert_eq!(run.wait_exit(T), Some(0));
        if how == "deleted" {
            std::fs::remove_file(&store).unwrap();
        } else {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&store)
                .unwrap();
            f.set_len(0).unwrap();
        }
        assert!(edge.meta().is_empty(), "{how}: nothing left");
        run = edge.run("1s");
        wait_for(
            &format!("all 201 objects again after the store was {how}"),
            Duration::from_secs(60),
            || (edge.meta().len() == all).then_some(()),
        );
        assert_eq!(
            cloud.proc.log().matches("has a new store").count(),
            round + 1,
            "{how}"
        );
    }
    assert!(edge.stored("ConfigMap", "shared").is_some());
}

/// Flips `n` bytes in the middle of every copy of `needle` in the file.
fn flip_in_file(p: &Path, needle: &[u8], n: usize) -> usize {
    let mut bytes = std::fs::read(p).unwrap();
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            let mid = i + needle.len() / 2 - n / 2;
            for b in &mut bytes[mid..mid + n] {
                *b ^= 0xA5;
            }
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(p, bytes).unwrap();
    hits
}

fn meta(edge: &Edge, args: &[&str]) -> std::process::Output {
    std::process::Command::new(e2e::bin("edgecore"))
        .arg("meta")
        .args(args)
        .arg("--data-dir")
        .arg(edge.dir.path())
        .output()
        .unwrap()
}

#[test]
fn sixty_four_flipped_bytes_are_reported_with_the_key_and_never_printed_as_an_object() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    let value: String = (0..400u32)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    cloud.apply_ok(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bad}}\ndata: {{k: {value}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: good}}\ndata: {{k: fine}}\n---\n{}  volumes: [{{name: a, configMap: {{name: bad}}}}, {{name: b, configMap: {{name: good}}}}]\n",
        pod("web")
    ));
    wait_for("three objects on the edge", T, || {
        (edge.meta().len() == 3).then_some(())
    });
    run.signal(Signal::TERM);
    assert_eq!(run.wait_exit(T), Some(0));
    let store = edge.dir.path().join("edgecore.redb");
    assert!(flip_in_file(&store, value.as_bytes(), 64) >= 1);

    let key = "obj/configmap/default/bad";
    for args in [
        &["list", "-o", "json"][..],
        &["list"],
        &["list", "configmaps"],
        &["get", "configmap", "default/bad"],
        &["check"],
    ] {
        let out = meta(&edge, args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "meta {args:?}: {stdout} {stderr}"
        );
        assert!(
            stderr.contains(&format!("corrupt record {key}")) && stderr.contains("checksum"),
            "meta {args:?}: {stderr}"
        );
        assert!(!stdout.contains("null"), "meta {args:?}: {stdout}");
    }
    // The intact records are still shown.
    let out = meta(&edge, &["list", "-o", "json"]);
    let shown: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = shown
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good", "web"]);
    assert!(meta(&edge, &["get", "configmap", "default/good"])
        .status
        .success());

    // edgecore runs on, saying which record it cannot read.
    let run = edge.run("1s");
    run.wait_log(key, T);
    cloud.wait_ready("edge0", true, T);
    assert!(run.log().contains("corrupt"), "{}", run.log());
    drop(run);
}
