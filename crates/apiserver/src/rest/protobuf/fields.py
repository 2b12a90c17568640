"""Writes fields.txt, the table of Kubernetes' protobuf wire schema that
protobuf.rs reads: for every message reachable from the kinds rkube serves
(and the bodies the REST face reads itself), field number, JSON name and type,
for the fields rkube's protos have; fields only Kubernetes has are listed by
name with type `-`.

    python3 fields.py K8S_PROTOS RKUBE_PROTOS > fields.txt

K8S_PROTOS is a directory holding the generated.proto files of kubernetes/api
(core/v1, apps/v1, batch/v1, networking/v1, policy/v1, rbac/v1, scheduling/v1, storage/v1,
coordination/v1, autoscaling/v1, autoscaling/v2, authentication/v1,
authorization/v1) and kubernetes/apimachinery (pkg/apis/meta/v1,
pkg/api/resource, pkg/util/intstr, pkg/runtime), in any layout; RKUBE_PROTOS
is proto/rkube.
"""
import re, sys, glob
K8S, RK = sys.argv[1], sys.argv[2]

def parse(path, style):
    text = open(path).read()
    text = re.sub(r"//[^\n]*", "", text)
    pkg = re.search(r"^package\s+([\w.]+);", text, re.M).group(1)
    msgs = {}
    # top-level messages only (neither file nests messages that matter here)
    for m in re.finditer(r"^message\s+(\w+)\s*\{(.*?)^\}", text, re.M | re.S):
        name, body = m.group(1), m.group(2)
        fields = []
        for f in re.finditer(r"^\s*(optional|repeated)?\s*(map<\s*string\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*(\[[^\]]*\])?\s*;", body, re.M):
            label, typ, mapval, fname, num, opts = f.groups()
            json = fname
            if style == "rkube":
                jm = re.search(r'json_name\s*=\s*"(\w+)"', opts or "")
                json = jm.group(1) if jm else re.sub(r"_(\w)", lambda x: x.group(1).upper(), fname)
            if mapval:
                fields.append((int(num), json, "map", mapval))
            else:
                fields.append((int(num), json, label or "", typ))
        msgs[pkg + "." + name] = fields
    return pkg, msgs

k8s = {}
for p in glob.glob(K8S + "/**/generated.proto", recursive=True):
    k8s.update(parse(p, "k8s")[1])
rk = {}
for p in glob.glob(RK + "/**/*.proto", recursive=True):
    rk.update(parse(p, "rkube")[1])

def resolve(typ, ctx, table):
    if typ in ("string", "bool", "int32", "int64", "double", "bytes", "float"):
        return typ
    if typ.startswith("."):
        return typ[1:]
    pkg = ctx.rsplit(".", 1)[0]
    while pkg:
        if pkg + "." + typ in table:
            return pkg + "." + typ
        pkg = pkg.rsplit(".", 1)[0] if "." in pkg else ""
    if typ in table:
        return typ
    raise SystemExit(f"cannot resolve {typ} in {ctx}")

META = "k8s.io.apimachinery.pkg.apis.meta.v1."
SPECIAL = {
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    META + "Time": "Time",
    META + "MicroTime": "MicroTime",
    META + "Duration": "Duration",
    META + "FieldsV1": "RawJSON",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawJSON",
}

def short(full):
    # k8s.io.api.core.v1.Pod -> core.v1.Pod; meta -> meta.v1.X
    for pre in ("k8s.io.api.", "k8s.io.apimachinery.pkg.apis."):
        if full.startswith(pre):
            return full[len(pre):]
    raise SystemExit(full)

NOT_EMBEDDED = {"k8s.io.api.core.v1.Event.series"}

out = {}  # k8s msg -> {num: (json, kind, type)}
seen = set()

def walk(kmsg, rmsg):
    key = (kmsg, rmsg)
    if key in seen:
        return
    seen.add(key)
    kfields = k8s[kmsg]
    rfields = {f[1]: f for f in rk[rmsg]} if rmsg else None
    entry = out.setdefault(kmsg, {})
    for num, json, label, typ in kfields:
        rf = None
        if rfields is not None:
            rf = rfields.get(json)
            t = resolve(typ, kmsg, k8s)
            if rf is None and label == "optional" and t in k8s and t not in SPECIAL:
                # an embedded Go struct (`json:",inline"`): its fields are the parent's in JSON
                # (Event.series shares `count` with Event, but is not embedded)
                inner = {f[1] for f in k8s[t]}
                if inner & set(rfields) and kmsg + "." + json not in NOT_EMBEDDED:
                    walk(t, rmsg)
                    entry.setdefault(num, (json, "..." + short(t)))
                    continue
            if rf is None:
                # Kubernetes has it, rkube does not: named, so fieldValidation can name it
                entry.setdefault(num, (json, "-"))
                continue
        t = resolve(typ, kmsg, k8s)
        rt = None
        if rf is not None and rf[3] not in ("string", "bool", "int32", "int64", "double", "bytes", "float", "uint32", "uint64"):
            rt = resolve(rf[3], rmsg, rk)
        if t in SPECIAL:
            tt = SPECIAL[t]
        elif t in k8s:
            tt = short(t)
            walk(t, rt)
        else:
            tt = t
        if label == "map":
            tt = "{" + tt + "}"
        elif label == "repeated":
            tt = "[]" + tt
        # the rkube roots are walked first: what rkube lacks stays `-`
        entry.setdefault(num, (json, tt))

ROOTS = [
    ("core.v1", "Namespace"), ("core.v1", "Node"), ("core.v1", "Pod"), ("core.v1", "Service"),
    ("core.v1", "Endpoints"), ("core.v1", "Event"), ("core.v1", "ConfigMap"), ("core.v1", "Secret"),
    ("core.v1", "ServiceAccount"), ("core.v1", "ResourceQuota"), ("core.v1", "PersistentVolumeClaim"), ("core.v1", "PersistentVolume"),
    ("core.v1", "LimitRange"), ("apps.v1", "Deployment"), ("apps.v1", "ReplicaSet"),
    ("apps.v1", "DaemonSet"), ("apps.v1", "StatefulSet"), ("apps.v1", "ControllerRevision"),
    ("batch.v1", "Job"), ("batch.v1", "CronJob"), ("policy.v1", "PodDisruptionBudget"),
    ("scheduling.v1", "PriorityClass"), ("networking.v1", "Ingress"), ("networking.v1", "IngressClass"),
    ("storage.v1", "StorageClass"), ("autoscaling.v2", "HorizontalPodAutoscaler"),
    ("coordination.v1", "Lease"), ("rbac.v1", "Role"), ("rbac.v1", "ClusterRole"),
    ("rbac.v1", "RoleBinding"), ("rbac.v1", "ClusterRoleBinding"),
    ("networking.v1", "NetworkPolicy"),
]
for gv, kind in ROOTS:
    walk("k8s.io.api." + gv + "." + kind, "rkube." + gv + "." + kind)
# bodies the REST face reads as JSON itself, whole
for full in ["k8s.io.api.policy.v1.Eviction", "k8s.io.api.autoscaling.v1.Scale",
             "k8s.io.api.authentication.v1.TokenRequest",
             "k8s.io.api.authorization.v1.SelfSubjectAccessReview", META + "DeleteOptions"]:
    walk(full, None)

lines = []
for kmsg in sorted(out, key=short):
    lines.append(short(kmsg))
    for num in sorted(out[kmsg]):
        json, tt = out[kmsg][num]
        lines.append(f"  {num} {json} {tt}")
print("# Kubernetes' protobuf wire schema, as rkube reads it: written by fields.py")
print("# (see there). MESSAGE, then `  NUMBER JSON-NAME TYPE`; TYPE is a scalar, a")
print("# message, Quantity, IntOrString, Time, MicroTime, RawJSON, []T (repeated),")
print("# {T} (map<string, T>), ...T (an embedded struct, inline in JSON) or - (a field")
print("# rkube does not have).")
print("\n".join(lines))
