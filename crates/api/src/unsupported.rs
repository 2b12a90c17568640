//! Kubernetes 1.32 fields rkube deliberately does not support, and why. A manifest using
//! one is refused with that reason rather than "unknown field", so users know the field
//! is real and what to do instead. The README's pod spec table lists the same.

/// Volume sources rkube does not mount.
const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "image",
    "iscsi",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// (path suffix, with `[]` for any list index; why rkube refuses it).
const FIELDS: &[(&str, &str)] = &[
    ("spec.ephemeralContainers", "ephemeral containers are added by `kubectl debug`, which rkube does not support"),
    ("spec.setHostnameAsFQDN", "setHostnameAsFQDN is not supported: the kernel hostname stays the short name; the fully qualified one (with hostname and subdomain) is in the pod's /etc/hosts"),
    ("spec.readinessGates", "readiness gates are not supported: a pod is Ready when its containers are"),
    ("spec.runtimeClassName", "rkube runs every pod with runc; RuntimeClasses are not supported"),
    ("spec.overhead", "pod overhead comes from RuntimeClasses, which rkube does not support"),
    ("spec.hostUsers", "user namespaces are not supported: containers use the node's user ids"),
    ("spec.resourceClaims", "dynamic resource allocation is not supported"),
    ("spec.resources", "pod-level resources are alpha in Kubernetes 1.32 and not supported: set resources on each container"),
    ("initContainers[].restartPolicy", "sidecar containers (init containers with restartPolicy: Always) are not supported yet: run the sidecar as a regular container"),
    ("containers[].restartPolicy", "a container restartPolicy is only for sidecar init containers, which rkube does not support yet"),
    ("containers[].resizePolicy", "in-place resize is alpha in Kubernetes 1.32 and not supported: changing resources replaces the pod"),
    ("containers[].volumeDevices", "raw block volumes are not supported: mount a filesystem with volumeMounts"),
    ("volumeMounts[].mountPropagation", "mount propagation is not supported: volumes are mounted private (None)"),
    ("volumeMounts[].subPathExpr", "subPathExpr is not supported: use subPath"),
    ("volumeMounts[].recursiveReadOnly", "recursive read-only mounts are not supported: readOnly applies to the mount itself"),
    ("securityContext.supplementalGroupsPolicy", "supplementalGroupsPolicy is alpha in Kubernetes 1.32 and not supported: groups merge as in Merge"),
    ("securityContext.seLinuxChangePolicy", "seLinuxChangePolicy is alpha in Kubernetes 1.32 and not supported"),
];

/// Why the field at `path` (as serde_path_to_error prints it: `spec.containers[0].x`) is
/// refused, when it is a Kubernetes field rkube deliberately leaves out.
pub fn reason(path: &str) -> Option<String> {
    let normal = without_indexes(path);
    if let Some(source) = normal
        .rsplit_once("volumes[].")
        .map(|(_, s)| s)
        .filter(|s| VOLUME_SOURCES.contains(s))
    {
        return Some(format!(
            "volume type {source} is not supported: rkube mounts emptyDir, hostPath, configMap, secret, persistentVolumeClaim, projected and downwardAPI volumes"
        ));
    }
    FIELDS
        .iter()
        .find(|(suffix, _)| {
            // `containers[].x` covers init containers too, after their own entries
            let init = suffix
                .strip_prefix("containers[]")
                .map(|rest| format!(".initContainers[]{rest}"));
            normal == *suffix
                || normal.ends_with(&format!(".{suffix}"))
                || init.is_some_and(|i| normal.ends_with(&i))
        })
        .map(|(_, why)| why.to_string())
}

/// `spec.containers[0].x` as `spec.containers[].x`.
fn without_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_fields_left_out_say_why() {
        let r = reason("spec.template.spec.containers[1].volumeDevices").unwrap();
        assert!(r.contains("raw block"), "{r}");
        let r = reason("spec.volumes[2].nfs").unwrap();
        assert!(r.starts_with("volume type nfs is not supported"), "{r}");
        let r = reason("spec.initContainers[0].restartPolicy").unwrap();
        assert!(r.contains("sidecar containers"), "{r}");
        let r = reason("spec.containers[0].restartPolicy").unwrap();
        assert!(r.contains("only for sidecar init containers"), "{r}");
        let r = reason("spec.initContainers[0].resizePolicy").unwrap();
        assert!(r.contains("in-place resize"), "{r}");
        let r = reason("spec.jobTemplate.spec.template.spec.setHostnameAsFQDN").unwrap();
        assert!(r.contains("/etc/hosts"), "{r}");
        assert!(reason("spec.template.spec.dnsConfig").is_none(), "supported");
        assert!(reason("spec.containers[0].imagePullPolice").is_none());
        assert!(reason("spec.volumes[0].nfsx").is_none());
    }
}
