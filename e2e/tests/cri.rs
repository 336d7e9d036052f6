//! The CRI client against a real containerd on a private socket: version, images, a
//! host-network sandbox with a container that runs and exits with a known code, exec, and
//! clean removal.

use std::time::Duration;

use cri::v1;
use e2e::containerd::{Containerd, BUSYBOX};
use e2e::wait_for;

fn sandbox_config(name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: String::new(),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    pid: v1::NamespaceMode::Container as i32,
                    ipc: v1::NamespaceMode::Pod as i32,
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn cri_client_drives_a_real_containerd() {
    let ctrd = Containerd::start();
    let c = cri::CriClient::new(&ctrd.endpoint()).unwrap();
    smol::block_on(c.with(async {
        let v = c.version().await.unwrap();
        assert_eq!(v.runtime_name, "containerd");
        assert!(!v.runtime_version.is_empty());
        assert!(
            c.image_status(BUSYBOX).await.unwrap().is_some(),
            "imported test image is visible"
        );
        assert!(c
            .image_status("localhost/nope:missing")
            .await
            .unwrap()
            .is_none());
        let e = c.pull_image("localhost/nope:missing").await.unwrap_err();
        assert!(matches!(e, cri::CriError::Status { .. }), "{e}");

        let sb_cfg = sandbox_config("smoke");
        let sb = match c.run_pod_sandbox(sb_cfg.clone()).await {
            Ok(sb) => sb,
            Err(e) => panic!(
                "{e}\ncontainerd log:\n{}",
                ctrd.proc.as_ref().unwrap().log()
            ),
        };
        let st = c.pod_sandbox_status(&sb).await.unwrap();
        assert_eq!(st.state, v1::PodSandboxState::SandboxReady as i32);

        let cfg = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: BUSYBOX.into(),
                annotations: Default::default(),
            }),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo hi; sleep 0.3; exit 7".into(),
            ],
            envs: vec![v1::KeyValue {
                key: "GREETING".into(),
                value: "hello".into(),
            }],
            labels: [("edgecore.io/test".to_owned(), "yes".to_owned())].into(),
            ..Default::default()
        };
        let id = c.create_container(&sb, cfg, sb_cfg.clone()).await.unwrap();
        c.start_container(&id).await.unwrap();
        let listed = c.list_containers(None).await.unwrap();
        assert!(listed
            .iter()
            .any(|x| x.id == id
                && x.labels.get("edgecore.io/test").map(String::as_str) == Some("yes")));
        let mut status = None;
        for _ in 0..100 {
            let s = c.container_status(&id).await.unwrap();
            if s.state == v1::ContainerState::ContainerExited as i32 {
                status = Some(s);
                break;
            }
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        let status = status.expect("container exited");
        assert_eq!(status.exit_code, 7);

        // A long-running one to exec into.
        let cfg = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: "sleeper".into(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: BUSYBOX.into(),
                annotations: Default::default(),
            }),
            command: vec!["/bin/sleep".into(), "3600".into()],
            envs: vec![v1::KeyValue {
                key: "GREETING".into(),
                value: "hello".into(),
            }],
            ..Default::default()
        };
        let sleeper = c.create_container(&sb, cfg, sb_cfg).await.unwrap();
        c.start_container(&sleeper).await.unwrap();
        let out = c
            .exec_sync(
                &sleeper,
                vec!["/bin/sh".into(), "-c".into(), "echo $GREETING".into()],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
        assert_eq!(out.exit_code, 0);

        c.stop_pod_sandbox(&sb).await.unwrap();
        c.remove_pod_sandbox(&sb).await.unwrap();
        assert!(
            c.list_containers(None).await.unwrap().is_empty(),
            "removing the sandbox removes its containers"
        );
        let e = c.container_status(&id).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }));
    wait_for("nothing left running", Duration::from_secs(10), || {
        ctrd.ctr(&["tasks", "ls", "-q"], None)
            .stdout
            .is_empty()
            .then_some(())
    });
}
