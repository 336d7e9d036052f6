"""The official Kubernetes Python client against cloudcore's API (run by
e2e/tests/python_client.rs): lists pods with a label selector, patches a ConfigMap (strategic
merge), deletes the ConfigMaps labelled doomed=yes (deletecollection), then watches the pods from the list's resourceVersion with bookmarks, printing one JSON
line per thing seen. A watch that breaks (cloudcore restarting) is resumed from the last
resourceVersion seen; one that is refused 410 Gone lists again, as a reflector does.

Usage: kube_client.py KUBECONFIG NAMESPACE SELECTOR CONFIGMAP STOP_POD
Ends when STOP_POD is ADDED, or after MAX_RECONNECTS failed reconnections.
"""

import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

# Reconnections tried at most while the server is away, RECONNECT_PAUSE seconds apart.
MAX_RECONNECTS = 300
RECONNECT_PAUSE = 0.2


def say(**what):
    print(json.dumps(what), flush=True)


def main():
    kubeconfig, ns, selector, cm, stop_pod = sys.argv[1:6]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    def relist():
        pods = v1.list_namespaced_pod(ns, label_selector=selector)
        return [p.metadata.name for p in pods.items], pods.metadata.resource_version

    names, rv = relist()
    say(list=names, rv=rv)
    patched = v1.patch_namespaced_config_map(cm, ns, {"data": {"greeting": "hi"}})
    say(patched=patched.data)
    gone = v1.delete_collection_namespaced_config_map(ns, label_selector="doomed=yes")
    say(deleted_collection=gone.kind)

    failures = 0
    while True:
        try:
            w = watch.Watch()
            for e in w.stream(v1.list_namespaced_pod, ns, label_selector=selector,
                              resource_version=rv, allow_watch_bookmarks=True):
                failures = 0
                obj = e["raw_object"]
                rv = obj["metadata"]["resourceVersion"]
                say(type=e["type"], name=obj["metadata"].get("name"), rv=rv)
                if e["type"] == "ADDED" and obj["metadata"].get("name") == stop_pod:
                    return
        except ApiException as err:
            if err.status != 410:
                raise
            # Too old to resume: list again and watch from there.
            say(gone=rv, reason=str(err.reason))
            names, rv = relist()
            say(relist=names, rv=rv)
        except Exception as err:  # the server went away: resume from the last version seen
            failures += 1
            if failures == 1:
                say(broken=rv, error=type(err).__name__)
            if failures > MAX_RECONNECTS:
                raise
            time.sleep(RECONNECT_PAUSE)


if __name__ == "__main__":
    main()
