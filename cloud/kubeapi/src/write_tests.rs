//! The write verbs against a real store (a temporary redb file), as the runner wires them.

use std::cell::RefCell;

use cloudstore::{CloudStore, ObjectKey, Put, StoreError};

use super::*;

struct Store(RefCell<CloudStore>);

impl Objects for Store {
    fn list(&self, r: Resource, namespace: Option<&str>) -> (Vec<Value>, String) {
        let s = self.0.borrow();
        let items = s
            .list(r.kind().unwrap(), namespace)
            .map(|(_, e)| e.object.clone())
            .collect();
        (items, s.last_rv().to_string())
    }

    fn put(
        &self,
        r: Resource,
        obj: &Value,
        expect: Put,
        dry_run: bool,
    ) -> Result<Value, StoreError> {
        self.0
            .borrow_mut()
            .put(r.kind().unwrap(), obj, expect, 1_700_000_000, dry_run)
            .map(|(_, o)| o)
    }

    fn put_status(
        &self,
        r: Resource,
        namespace: Option<&str>,
        name: &str,
        status: &Value,
        expect_rv: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, StoreError> {
        let key = ObjectKey::new(r.kind().unwrap(), namespace.unwrap_or(""), name);
        self.0
            .borrow_mut()
            .put_status(&key, status, expect_rv, dry_run)
    }

    fn delete(
        &self,
        r: Resource,
        namespace: Option<&str>,
        name: &str,
        _grace: Option<u64>,
    ) -> Result<Deleted, StoreError> {
        let key = ObjectKey::new(r.kind().unwrap(), namespace.unwrap_or(""), name);
        self.0.borrow_mut().delete(&key).map(Deleted::Gone)
    }
}

fn store(name: &str) -> Store {
    let p = std::env::temp_dir().join(format!("kubeapi-write-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    Store(RefCell::new(CloudStore::open(&p).unwrap()))
}

fn admin() -> User {
    User::Cert {
        name: "admin".into(),
        groups: vec![MASTERS_GROUP.into()],
    }
}

fn send(s: &Store, user: &User, method: &str, target: &str, ctype: &str, body: &Value) -> Response {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let req = Request {
        method,
        target,
        accept: None,
        content_type: Some(ctype),
        body: &body,
    };
    let server = Server {
        address: "127.0.0.1:6443".into(),
        build: "test".into(),
    };
    match handle(&req, user, s, &server, 0) {
        Outcome::Response(r) => r,
        Outcome::Watch(_) => panic!("not a watch"),
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const CM: &str = "/api/v1/namespaces/default/configmaps/app";
const JSON: &str = "application/json";

fn cm() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "labels": {"a": "1"}}, "data": {"k": "v"}})
}

#[test]
fn create_update_conflict_and_already_exists_as_the_apiserver_answers() {
    let s = store("crud");
    let r = send(&s, &admin(), "POST", CMS, JSON, &cm());
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["metadata"]["namespace"], "default");
    assert_eq!(
        (&r.body["kind"], &r.body["apiVersion"]),
        (&json!("ConfigMap"), &json!("v1"))
    );
    let rv = r.body["metadata"]["resourceVersion"].clone();
    let again = send(&s, &admin(), "POST", CMS, JSON, &cm());
    assert_eq!(
        (again.status, &again.body["reason"]),
        (409, &json!("AlreadyExists"))
    );
    assert_eq!(again.body["message"], "configmaps \"app\" already exists");

    let mut changed = r.body.clone();
    changed["data"]["k"] = json!("w");
    let u = send(&s, &admin(), "PUT", CM, JSON, &changed);
    assert_eq!(u.status, 200, "{}", u.body);
    assert_ne!(u.body["metadata"]["resourceVersion"], rv);
    // The same body again is based on the version before the update: stale.
    changed["data"]["k"] = json!("x");
    let stale = send(&s, &admin(), "PUT", CM, JSON, &changed);
    assert_eq!(
        (stale.status, &stale.body["reason"]),
        (409, &json!("Conflict"))
    );
    assert_eq!(
        stale.body["message"],
        format!(
            "Operation cannot be fulfilled on configmaps \"app\": {}",
            write::CONFLICT_MESSAGE
        )
    );
    assert_eq!(
        s.get(Resource::ConfigMaps, Some("default"), "app").unwrap()["data"]["k"],
        "w"
    );

    // Invalid: 422 naming the field; a name that is not the URL's: 400.
    let mut bad = cm();
    bad["metadata"]["name"] = json!("other");
    bad["data"]["k"] = json!(1);
    let r = send(&s, &admin(), "POST", CMS, JSON, &bad);
    assert_eq!((r.status, &r.body["reason"]), (422, &json!("Invalid")));
    assert_eq!(
        r.body["message"],
        "ConfigMap \"other\" is invalid: data.k: must be a string"
    );
    assert_eq!(send(&s, &admin(), "PUT", CM, JSON, &bad).status, 400);
    // generateName: a fresh name with the prefix.
    let mut gen = cm();
    gen["metadata"] = json!({"generateName": "job-"});
    let r = send(&s, &admin(), "POST", CMS, JSON, &gen);
    assert_eq!(r.status, 201, "{}", r.body);
    let name = r.body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
    // Over the object limit: 413 naming it.
    let big = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
        "spec": {"containers": [{"name": "c", "image": "i", "args": ["x".repeat(2 << 20)]}]}});
    let r = send(
        &s,
        &admin(),
        "POST",
        "/api/v1/namespaces/default/pods",
        JSON,
        &big,
    );
    assert_eq!(
        (r.status, &r.body["reason"]),
        (413, &json!("RequestEntityTooLarge"))
    );
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("1572864 bytes"),
        "{}",
        r.body
    );
}

#[test]
fn the_three_patch_types_and_dry_run() {
    let s = store("patch");
    assert_eq!(send(&s, &admin(), "POST", CMS, JSON, &cm()).status, 201);
    let merge = send(
        &s,
        &admin(),
        "PATCH",
        CM,
        "application/merge-patch+json",
        &json!({"data": {"k": null, "n": "1"}, "metadata": {"labels": {"b": "2"}}}),
    );
    assert_eq!(merge.status, 200, "{}", merge.body);
    assert_eq!(merge.body["data"], json!({"n": "1"}));
    assert_eq!(
        merge.body["metadata"]["labels"],
        json!({"a": "1", "b": "2"})
    );
    let jp = send(
        &s,
        &admin(),
        "PATCH",
        CM,
        "application/json-patch+json",
        &json!([{"op": "replace", "path": "/data/n", "value": "2"}, {"op": "remove", "path": "/metadata/labels/a"}]),
    );
    assert_eq!(jp.status, 200, "{}", jp.body);
    assert_eq!(
        (&jp.body["data"]["n"], &jp.body["metadata"]["labels"]),
        (&json!("2"), &json!({"b": "2"}))
    );
    let failed = send(
        &s,
        &admin(),
        "PATCH",
        CM,
        "application/json-patch+json",
        &json!([{"op": "test", "path": "/data/n", "value": "9"}]),
    );
    assert_eq!(failed.status, 422, "{}", failed.body);
    // Strategic merge: containers merge by name.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
    let pods = "/api/v1/namespaces/default/pods";
    assert_eq!(send(&s, &admin(), "POST", pods, JSON, &pod).status, 201);
    let smp = send(
        &s,
        &admin(),
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        "application/strategic-merge-patch+json",
        &json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}),
    );
    assert_eq!(smp.status, 200, "{}", smp.body);
    let images: Vec<&Value> = smp.body["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["image"])
        .collect();
    assert_eq!(images, [&json!("x"), &json!("z")]);
    // A patch naming a stale resourceVersion conflicts.
    let stale = send(
        &s,
        &admin(),
        "PATCH",
        CM,
        "application/merge-patch+json",
        &json!({"metadata": {"resourceVersion": "1"}, "data": {"n": "3"}}),
    );
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert_eq!(
        send(&s, &admin(), "PATCH", CM, "application/yaml", &json!({})).status,
        415
    );

    // dryRun=All: validated and answered, nothing stored or removed.
    let before = s.0.borrow().last_rv();
    let dry = send(
        &s,
        &admin(),
        "PATCH",
        &format!("{CM}?dryRun=All"),
        "application/merge-patch+json",
        &json!({"data": {"n": "dry"}}),
    );
    assert_eq!((dry.status, &dry.body["data"]["n"]), (200, &json!("dry")));
    let mut other = cm();
    other["metadata"]["name"] = json!("dry");
    assert_eq!(
        send(
            &s,
            &admin(),
            "POST",
            &format!("{CMS}?dryRun=All"),
            JSON,
            &other
        )
        .status,
        201
    );
    assert_eq!(
        send(
            &s,
            &admin(),
            "DELETE",
            &format!("{CM}?dryRun=All"),
            JSON,
            &Value::Null
        )
        .status,
        200
    );
    assert_eq!(s.0.borrow().last_rv(), before);
    assert!(s
        .get(Resource::ConfigMaps, Some("default"), "dry")
        .is_none());
    assert_eq!(
        s.get(Resource::ConfigMaps, Some("default"), "app").unwrap()["data"]["n"],
        "2"
    );
    assert_eq!(
        send(
            &s,
            &admin(),
            "POST",
            &format!("{CMS}?dryRun=Some"),
            JSON,
            &other
        )
        .status,
        400
    );
}

#[test]
fn delete_answers_a_status_or_the_pod_and_others_may_not_write() {
    let s = store("delete");
    assert_eq!(send(&s, &admin(), "POST", CMS, JSON, &cm()).status, 201);
    let d = send(
        &s,
        &admin(),
        "DELETE",
        CM,
        JSON,
        &json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
    );
    assert_eq!(
        (d.status, &d.body["status"], &d.body["details"]["name"]),
        (200, &json!("Success"), &json!("app"))
    );
    assert_eq!(
        send(&s, &admin(), "DELETE", CM, JSON, &Value::Null).status,
        404
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x"}]}});
    assert_eq!(
        send(
            &s,
            &admin(),
            "POST",
            "/api/v1/namespaces/default/pods",
            JSON,
            &pod
        )
        .status,
        201
    );
    let d = send(
        &s,
        &admin(),
        "DELETE",
        "/api/v1/namespaces/default/pods/p",
        JSON,
        &Value::Null,
    );
    assert_eq!((d.status, &d.body["kind"]), (200, &json!("Pod")));

    let node = User::Cert {
        name: "system:node:edge0".into(),
        groups: vec!["system:nodes".into()],
    };
    let r = send(&s, &node, "POST", CMS, JSON, &cm());
    assert_eq!(r.status, 403);
    assert_eq!(r.body["message"], "configmaps is forbidden: User \"system:node:edge0\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\"");
    assert!(s
        .get(Resource::ConfigMaps, Some("default"), "app")
        .is_none());
    // Read-only kinds: 405, and discovery lists only the verbs served.
    assert_eq!(
        send(
            &s,
            &admin(),
            "DELETE",
            "/api/v1/nodes/edge0",
            JSON,
            &Value::Null
        )
        .status,
        405
    );
    let list = resources::resource_list("", "v1").unwrap();
    let verbs = |name: &str| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["verbs"]
            .clone()
    };
    assert_eq!(
        verbs("configmaps"),
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    );
    assert_eq!(verbs("nodes"), json!(["get", "list", "watch"]));
}

#[test]
fn openapi_v3_tells_kubectl_the_server_validates_the_stored_kinds() {
    let s = store("openapi");
    let root = send(&s, &admin(), "GET", "/openapi/v3", JSON, &Value::Null);
    assert_eq!(root.status, 200);
    let url = root.body["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
    let doc = send(&s, &admin(), "GET", &url, JSON, &Value::Null);
    let patch = &doc.body["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
    assert!(
        doc.body["paths"]["/api/v1/nodes/{name}"].is_null(),
        "nodes are not written"
    );
    let devices = send(
        &s,
        &admin(),
        "GET",
        "/openapi/v3/apis/devices.kubeedge.io/v1beta1",
        JSON,
        &Value::Null,
    );
    assert_eq!(devices.status, 200);
    assert_eq!(
        send(
            &s,
            &admin(),
            "GET",
            "/openapi/v3/apis/nope/v1",
            JSON,
            &Value::Null
        )
        .status,
        404
    );
    assert_eq!(
        send(
            &s,
            &User::Anonymous,
            "GET",
            "/openapi/v3",
            JSON,
            &Value::Null
        )
        .status,
        401
    );
}

impl Store {
    fn status_of(&self, name: &str) -> Value {
        self.get(Resource::Pods, Some("default"), name).unwrap()["status"].clone()
    }
}

#[test]
fn pod_status_is_written_through_its_subresource_only() {
    let s = store("status");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x"}]}});
    let created = send(
        &s,
        &admin(),
        "POST",
        "/api/v1/namespaces/default/pods",
        JSON,
        &pod,
    );
    assert_eq!(created.status, 201);
    let url = "/api/v1/namespaces/default/pods/p/status";
    let r = send(
        &s,
        &admin(),
        "PATCH",
        url,
        "application/merge-patch+json",
        &json!({"status": {"phase": "Running"}, "spec": {"nodeName": "ignored"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.status_of("p")["phase"], "Running");
    assert!(
        s.get(Resource::Pods, Some("default"), "p").unwrap()["spec"]["nodeName"].is_null(),
        "the status subresource changes only the status"
    );
    // PUT replaces the status, at the version given: the created copy's is stale now.
    let mut stale = created.body.clone();
    stale["status"] = json!({"phase": "Failed"});
    let r = send(&s, &admin(), "PUT", url, JSON, &stale);
    assert_eq!((r.status, &r.body["reason"]), (409, &json!("Conflict")));
    let mut fresh = typed(
        Resource::Pods,
        s.get(Resource::Pods, Some("default"), "p").unwrap(),
    );
    fresh["status"] = json!({"phase": "Succeeded"});
    assert_eq!(send(&s, &admin(), "PUT", url, JSON, &fresh).status, 200);
    assert_eq!(s.status_of("p"), json!({"phase": "Succeeded"}));
    // The main resource's update keeps the status.
    fresh["status"] = json!({"phase": "Pending"});
    fresh["metadata"]["resourceVersion"] = Value::Null;
    assert_eq!(
        send(
            &s,
            &admin(),
            "PUT",
            "/api/v1/namespaces/default/pods/p",
            JSON,
            &fresh
        )
        .status,
        200
    );
    assert_eq!(s.status_of("p")["phase"], "Succeeded");
    assert_eq!(
        send(&s, &admin(), "DELETE", url, JSON, &Value::Null).status,
        405
    );
    let node = User::Cert {
        name: "system:node:edge0".into(),
        groups: vec!["system:nodes".into()],
    };
    let r = send(
        &s,
        &node,
        "PATCH",
        url,
        "application/merge-patch+json",
        &json!({}),
    );
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("cannot patch resource \"pods/status\""),
        "{}",
        r.body
    );
}

#[test]
fn deletecollection_deletes_what_the_selectors_pick_and_answers_the_list() {
    let s = store("deletecollection");
    let named = |name: &str, label: &str| {
        let mut c = cm();
        c["metadata"]["name"] = json!(name);
        c["metadata"]["labels"] = json!({ "a": label });
        c
    };
    for (n, l) in [("one", "1"), ("two", "1"), ("keep", "2")] {
        assert_eq!(
            send(&s, &admin(), "POST", CMS, JSON, &named(n, l)).status,
            201
        );
    }
    let names = |r: &Response| {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let dry = send(
        &s,
        &admin(),
        "DELETE",
        &format!("{CMS}?labelSelector=a%3D1&dryRun=All"),
        JSON,
        &Value::Null,
    );
    assert_eq!(
        (dry.status, names(&dry)),
        (200, vec!["one".to_owned(), "two".to_owned()])
    );
    assert_eq!(
        names(&send(&s, &admin(), "GET", CMS, JSON, &Value::Null)).len(),
        3,
        "dry run"
    );
    let r = send(
        &s,
        &admin(),
        "DELETE",
        &format!("{CMS}?labelSelector=a%3D1"),
        JSON,
        &Value::Null,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["kind"], "ConfigMapList");
    assert_eq!(names(&r), ["one", "two"]);
    assert_eq!(
        names(&send(&s, &admin(), "GET", CMS, JSON, &Value::Null)),
        ["keep"]
    );
    // Bad input: refused, nothing deleted.
    let bad = send(
        &s,
        &admin(),
        "DELETE",
        &format!("{CMS}?labelSelector=a%3D%3D%3D"),
        JSON,
        &Value::Null,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let all = send(
        &s,
        &admin(),
        "DELETE",
        "/api/v1/configmaps",
        JSON,
        &Value::Null,
    );
    assert_eq!(all.status, 405);
    assert_eq!(
        names(&send(&s, &admin(), "GET", CMS, JSON, &Value::Null)),
        ["keep"]
    );
}
