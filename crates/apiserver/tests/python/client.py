"""The official Kubernetes Python client (PyPI `kubernetes`) against rkube: what a
script or operator written for Kubernetes does. Prints one JSON line per check; the
Rust test (tests/python_client.rs) asserts on them. Usage: client.py KUBECONFIG"""

import json
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def say(check, **values):
    print(json.dumps({"check": check, **values}), flush=True)


config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
ns = "default"

# version and discovery
info = client.VersionApi().get_code()
say("version", git_version=info.git_version, major=info.major, minor=info.minor)

# create and read back typed objects: the models refuse objects missing required fields
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings", labels={"app": "py"}),
                        data={"greeting": "hello"})
created = core.create_namespaced_config_map(ns, cm)
say("created", name=created.metadata.name, uid=bool(created.metadata.uid),
    resource_version=created.metadata.resource_version)

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
        ),
    ),
)
apps.create_namespaced_deployment(ns, dep)
got = apps.read_namespaced_deployment("web", ns)
say("deployment", replicas=got.spec.replicas, strategy=got.spec.strategy.type)

# lists with label selectors
listed = core.list_namespaced_config_map(ns, label_selector="app=py")
say("list", names=[i.metadata.name for i in listed.items], kind=listed.kind)

# patches: the client sends a strategic merge patch for a dict body
patched = core.patch_namespaced_config_map("settings", ns, {"data": {"extra": "1"}})
say("patch", data=patched.data)
scaled = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
say("scale", replicas=scaled.spec.replicas)

# a watch from the list's revision sees a change made meanwhile
start_rv = core.list_namespaced_config_map(ns).metadata.resource_version
def change():
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="later"), data={"k": "v"}))
threading.Timer(0.5, change).start()
w = watch.Watch()
for event in w.stream(core.list_namespaced_config_map, ns, resource_version=start_rv, timeout_seconds=20):
    if event["object"].metadata.name == "later":
        say("watch", type=event["type"], name=event["object"].metadata.name,
            data=event["object"].data)
        w.stop()

# errors are ApiExceptions with Kubernetes' status and reason
for what, call in [
    ("missing", lambda: core.read_namespaced_pod("nope", ns)),
    ("duplicate", lambda: core.create_namespaced_config_map(ns, cm)),
    ("invalid", lambda: core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))),
]:
    try:
        call()
        say(what, status=None)
    except ApiException as e:
        body = json.loads(e.body)
        say(what, status=e.status, reason=e.reason, body_reason=body.get("reason"),
            message=body.get("message"))

# deletes answer with the object or a Status the client can read
core.delete_namespaced_config_map("settings", ns)
try:
    core.read_namespaced_config_map("settings", ns)
    say("deleted", gone=False)
except ApiException as e:
    say("deleted", gone=e.status == 404)
