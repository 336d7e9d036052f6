use super::*;

struct Fixture(Vec<(Resource, Value)>);

impl Objects for Fixture {
    fn list(&self, r: Resource, namespace: Option<&str>) -> (Vec<Value>, String) {
        let items = self
            .0
            .iter()
            .filter(|(k, o)| *k == r && namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
            .map(|(_, o)| o.clone())
            .collect();
        (items, "42".into())
    }
}

fn fixture() -> Fixture {
    Fixture(vec![
        (
            Resource::Pods,
            json!({ "metadata": { "name": "a", "namespace": "default", "labels": { "app": "x" } },
            "spec": { "nodeName": "edge-1", "containers": [{}] }, "status": { "phase": "Running" } }),
        ),
        (
            Resource::Pods,
            json!({ "metadata": { "name": "b", "namespace": "other" },
            "spec": { "containers": [{}] }, "status": { "phase": "Pending" } }),
        ),
        (Resource::Nodes, json!({ "metadata": { "name": "edge-1" } })),
        (
            Resource::Leases,
            json!({ "metadata": { "name": "edge-1", "namespace": "kube-node-lease" } }),
        ),
    ])
}

fn server() -> Server {
    Server {
        address: "127.0.0.1:6443".into(),
        build: "test".into(),
    }
}

fn admin() -> User {
    User::Cert {
        name: "admin".into(),
        groups: vec![MASTERS_GROUP.into()],
    }
}

fn get(target: &str, user: &User, accept: Option<&str>) -> Response {
    let req = Request {
        method: "GET",
        target,
        accept,
        content_type: None,
        body: b"",
    };
    match handle(&req, user, &fixture(), &server(), 1_700_000_000) {
        Outcome::Response(r) => r,
        Outcome::Watch(_) => panic!("{target} is not a watch"),
    }
}

fn names(r: &Response) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn paths_route_to_what_the_apiserver_serves_there() {
    let t = |resource, namespace, name| {
        Route::Resource(Target {
            resource,
            namespace,
            name,
            status: false,
        })
    };
    assert_eq!(route("/api/v1/pods"), t(Resource::Pods, None, None));
    assert_eq!(
        route("/api/v1/namespaces/ns/pods"),
        t(Resource::Pods, Some("ns"), None)
    );
    assert_eq!(
        route("/api/v1/namespaces/ns/pods/p"),
        t(Resource::Pods, Some("ns"), Some("p"))
    );
    assert_eq!(
        route("/api/v1/nodes/n"),
        t(Resource::Nodes, None, Some("n"))
    );
    assert_eq!(
        route("/api/v1/namespaces/ns"),
        t(Resource::Namespaces, None, Some("ns"))
    );
    assert_eq!(
        route("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/e"),
        t(Resource::Leases, Some("kube-node-lease"), Some("e"))
    );
    assert_eq!(
        route("/apis/devices.kubeedge.io/v1beta1/devices"),
        t(Resource::Devices, None, None)
    );
    assert_eq!(route("/api/v1"), Route::ResourceList("", "v1"));
    assert_eq!(
        route("/apis/devices.kubeedge.io"),
        Route::Group("devices.kubeedge.io")
    );
    for nowhere in [
        "/api/v1/pods/p",                    // a namespaced kind by name needs its namespace
        "/api/v1/namespaces/ns/nodes",       // nodes are cluster-scoped
        "/apis/coordination.k8s.io/v1/pods", // wrong group
        "/api/v2/pods",
        "/api/v1/namespaces/ns/pods/p/status/x",
        "/metrics",
    ] {
        assert_eq!(route(nowhere), Route::NotFound, "{nowhere}");
    }
}

#[test]
fn anonymous_gets_401_nodes_403_and_health_is_public() {
    let r = get("/api/v1/pods", &User::Anonymous, None);
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    assert_eq!(r.body["kind"], "Status");
    for public in ["/healthz", "/readyz", "/livez", "/version"] {
        assert_eq!(get(public, &User::Anonymous, None).status, 200, "{public}");
    }
    let node = User::Cert {
        name: "system:node:edge-1".into(),
        groups: vec!["system:nodes".into()],
    };
    let r = get("/api/v1/namespaces/default/pods/a", &node, None);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body["message"],
        "pods \"a\" is forbidden: User \"system:node:edge-1\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    let r = get("/api/v1/nodes", &node, None);
    assert_eq!(
        r.body["message"],
        "nodes is forbidden: User \"system:node:edge-1\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    assert_eq!(
        get("/api", &node, None).status,
        200,
        "discovery is for everyone authenticated"
    );
    assert_eq!(get("/apis/coordination.k8s.io/v1", &node, None).status, 200);
    let r = get("/metrics", &node, None);
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (
            403,
            Some("forbidden: User \"system:node:edge-1\" cannot get path \"/metrics\"")
        )
    );
    assert_eq!(get("/api", &User::Anonymous, None).status, 401);
    assert_eq!(get("/api/v1/pods", &admin(), None).status, 200);
}

#[test]
fn lists_filter_by_namespace_labels_and_fields() {
    assert_eq!(names(&get("/api/v1/pods", &admin(), None)), ["a", "b"]);
    let r = get("/api/v1/namespaces/default/pods", &admin(), None);
    assert_eq!(
        (
            names(&r),
            &r.body["kind"],
            &r.body["metadata"]["resourceVersion"]
        ),
        (vec!["a".to_owned()], &json!("PodList"), &json!("42"))
    );
    assert_eq!(
        names(&get("/api/v1/pods?labelSelector=app%3Dx", &admin(), None)),
        ["a"]
    );
    assert_eq!(
        names(&get(
            "/api/v1/pods?labelSelector=app+notin+%28x%29",
            &admin(),
            None
        )),
        ["b"]
    );
    assert_eq!(
        names(&get(
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1",
            &admin(),
            None
        )),
        ["a"]
    );
    assert_eq!(
        names(&get(
            "/api/v1/pods?fieldSelector=status.phase%3DPending",
            &admin(),
            None
        )),
        ["b"]
    );
    let r = get("/api/v1/pods?fieldSelector=spec.foo%3Dx", &admin(), None);
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (400, Some("field label not supported: spec.foo"))
    );
    assert_eq!(
        get("/api/v1/pods?labelSelector=a+in+%28", &admin(), None).status,
        400
    );
    assert_eq!(
        get("/api/v1/pods?labelSelector=%ZZ", &admin(), None).status,
        400
    );
}

#[test]
fn get_answers_the_object_or_not_found_as_kubectl_expects() {
    let r = get("/api/v1/namespaces/default/pods/a", &admin(), None);
    assert_eq!(
        (r.status, &r.body["kind"], &r.body["apiVersion"]),
        (200, &json!("Pod"), &json!("v1"))
    );
    let r = get("/api/v1/namespaces/other/pods/a", &admin(), None);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "pods \"a\" not found", "reason": "NotFound", "details": { "name": "a", "kind": "pods" }, "code": 404 })
    );
    let r = get(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/nope",
        &admin(),
        None,
    );
    assert_eq!(
        r.body["message"],
        "leases.coordination.k8s.io \"nope\" not found"
    );
    assert_eq!(r.body["details"]["group"], "coordination.k8s.io");
    assert_eq!(get("/nowhere", &admin(), None).status, 404);
    let post = Request {
        method: "POST",
        target: "/api/v1/nodes",
        accept: None,
        content_type: None,
        body: b"",
    };
    assert!(matches!(
        handle(&post, &admin(), &fixture(), &server(), 0),
        Outcome::Response(Response { status: 405, .. })
    ));
}

#[test]
fn watches_are_authorized_and_their_selectors_checked_before_they_start() {
    let watch = |target, user: &User| {
        let req = Request {
            method: "GET",
            target,
            accept: None,
            content_type: None,
            body: b"",
        };
        handle(&req, user, &fixture(), &server(), 0)
    };
    assert!(matches!(
        watch("/api/v1/pods?watch=1", &admin()),
        Outcome::Watch(_)
    ));
    assert!(matches!(
        watch(
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion=42",
            &admin()
        ),
        Outcome::Watch(_)
    ));
    let node = User::Cert {
        name: "system:node:e".into(),
        groups: vec![],
    };
    match watch("/api/v1/pods?watch=1", &node) {
        Outcome::Response(r) => assert!(r.body["message"]
            .as_str()
            .unwrap()
            .contains("cannot watch resource \"pods\"")),
        Outcome::Watch(_) => panic!("a node may not watch"),
    }
    assert!(matches!(
        watch("/api/v1/pods?watch=1", &User::Anonymous),
        Outcome::Response(Response { status: 401, .. })
    ));
    assert!(matches!(
        watch("/api/v1/pods?watch=1&fieldSelector=spec.x%3D1", &admin()),
        Outcome::Response(Response { status: 400, .. })
    ));
}

#[test]
fn tables_are_served_when_asked_for() {
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let r = get("/api/v1/pods", &admin(), Some(kubectl));
    assert_eq!(r.body["kind"], "Table");
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 2);
    assert_eq!(
        r.body["rows"][0]["object"]["metadata"]["namespace"],
        "default"
    );
    let r = get("/api/v1/nodes/edge-1", &admin(), Some(kubectl));
    assert_eq!(r.body["rows"][0]["cells"][0], "edge-1");
    assert_eq!(
        get("/api/v1/pods", &admin(), Some("application/json")).body["kind"],
        "PodList"
    );
}

#[test]
fn discovery_lists_the_served_kinds() {
    // kubectl asks for aggregated discovery first; the plain form makes it fall back.
    let r = get(
        "/api",
        &admin(),
        Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        ),
    );
    assert_eq!(
        (r.status, &r.body["kind"], &r.body["versions"]),
        (200, &json!("APIVersions"), &json!(["v1"]))
    );
    let r = get("/api/v1", &admin(), None);
    let pods = r.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "pods")
        .unwrap();
    assert_eq!(
        (&pods["namespaced"], &pods["kind"], &pods["shortNames"]),
        (&json!(true), &json!("Pod"), &json!(["po"]))
    );
    assert_eq!(pods["categories"], json!(["all"]), "kubectl get all");
    assert_eq!(pods["verbs"], json!(resources::WRITE_VERBS));
    let groups = get("/apis", &admin(), None);
    let names: Vec<_> = groups.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("coordination.k8s.io"), json!("devices.kubeedge.io")]
    );
    let r = get("/apis/devices.kubeedge.io/v1beta1", &admin(), None);
    assert_eq!(r.body["groupVersion"], "devices.kubeedge.io/v1beta1");
    assert_eq!(r.body["resources"].as_array().unwrap().len(), 2);
    assert_eq!(get("/apis/apps/v1", &admin(), None).status, 404);
}
