//! Node restriction: what a kubelet, authenticated as `system:node:NAME` in
//! group `system:nodes`, may do, as Kubernetes' Node authorizer and
//! NodeRestriction admission plugin decide it (`--authorization-mode
//! Node,RBAC` there; `RBAC` here turns both on). A node reads what every
//! node needs (pods, nodes, services, endpoints), writes only its own Node,
//! its own Lease and the status of pods bound to it, deletes only pods bound
//! to it, records Events, reads only the Secrets, ConfigMaps and
//! ServiceAccounts that pods bound to it use, and requests tokens only
//! bound to those pods. It decides alone for node identities: RBAC
//! bindings do not widen it, so a stolen kubelet credential reaches one
//! node's workloads and no more.
//!
//! The authorizer half ([`authorize`]) answers from the request's
//! attributes and the pods in the store (the graph Kubernetes keeps is a
//! scan of one namespace's pods here: nodes read few Secrets, and only on a
//! pod start or resync). The admission half ([`admit`]) needs the object a
//! write touches (the stored pod's node, the created object's name), so the
//! service calls it for real requests only; `rkubectl auth can-i` sees the
//! authorizer's answer, as in Kubernetes.

use crate::attributes::{rule_allows, Attributes};
use crate::authn::UserInfo;
use crate::error::ApiError;
use crate::keys::{storage_key, storage_prefix};
use rkube_api::core::v1::{EnvFromSource, EnvVarSource, Pod, PodSpec, Volume, VolumeProjection};
use rkube_api::rbac::v1::PolicyRule;
use rkube_api::Resource;
use rkube_store::Store;

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_GROUP: &str = "coordination.k8s.io";

/// The node `user` acts for: Kubernetes treats a user as a node when it is
/// in group system:nodes and named system:node:NAME.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix(NODE_USER_PREFIX).filter(|n| !n.is_empty())
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    PolicyRule {
        verbs: s(verbs),
        api_groups: s(groups),
        resources: s(resources),
        ..Default::default()
    }
}

/// What any node may do before the per-object checks: Kubernetes'
/// `NodeRules`, cut to the kinds rkube serves and what its kubelet calls.
/// Secrets, ConfigMaps and Leases are listed for `auth can-i` and the
/// system:node ClusterRole; [`authorize`] decides them per object.
pub fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &["get", "list", "watch"],
            &[""],
            &["pods", "services", "endpoints"],
        ),
        rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        // certificate rotation: a kubelet asks for its next certificates
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(&["update", "patch"], &[""], &["nodes", "nodes/status"]),
        rule(&["create", "update", "patch"], &[""], &["events"]),
        // create for mirror pods in Kubernetes; admission refuses it here
        // with the reason
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(
            &["get"],
            &[""],
            &["secrets", "configmaps", "persistentvolumeclaims"],
        ),
        // the volumes of its pods' claims; and whether a volume whose storage sits on
        // this node still exists (local volumes are reclaimed by their node)
        rule(&["get"], &[""], &["persistentvolumes"]),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &[LEASE_GROUP],
            &["leases"],
        ),
    ]
}

/// The node authorizer's answer: `Ok(())`, or the reason it refuses (empty
/// when the plain Forbidden message says it all).
pub fn authorize(store: &dyn Store, node: &str, attrs: &Attributes) -> Result<Result<(), String>, ApiError> {
    let core = attrs.group.is_empty();
    match (core, attrs.resource.as_str()) {
        (true, "secrets" | "configmaps" | "persistentvolumeclaims") => {
            if attrs.verb != "get" || attrs.name.is_empty() || !attrs.subresource.is_empty() {
                return Ok(Err("can only get individual resources of this type".into()));
            }
            if referenced_by_pod_on(store, node, attrs)? {
                Ok(Ok(()))
            } else {
                Ok(Err(format!(
                    "no relationship found between node '{node}' and this object"
                )))
            }
        }
        (true, "serviceaccounts") => {
            // the kubelet reads the accounts of its pods (automount) and
            // requests their tokens (TokenRequest)
            let allowed = match attrs.verb.as_str() {
                "get" => attrs.subresource.is_empty(),
                "create" => attrs.subresource == "token",
                _ => false,
            };
            if !allowed || attrs.name.is_empty() {
                return Ok(Err(
                    "can only get individual serviceaccounts or create their tokens".into(),
                ));
            }
            if referenced_by_pod_on(store, node, attrs)? {
                Ok(Ok(()))
            } else {
                Ok(Err(format!(
                    "no relationship found between node '{node}' and this object"
                )))
            }
        }
        _ if attrs.group == LEASE_GROUP && attrs.resource == "leases" => {
            if !matches!(
                attrs.verb.as_str(),
                "get" | "create" | "update" | "patch" | "delete"
            ) {
                return Ok(Err(
                    "can only get, create, update, patch, or delete a node lease".into()
                ));
            }
            if attrs.namespace != NODE_LEASE_NAMESPACE {
                return Ok(Err("can only access leases in this namespace".into()));
            }
            // a create names its object in the body: admission checks it
            if attrs.verb != "create" && attrs.name != node {
                return Ok(Err(
                    "can only access node lease with the same name as the requesting node".into(),
                ));
            }
            Ok(Ok(()))
        }
        _ => {
            if node_rules().iter().any(|r| rule_allows(r, attrs)) {
                Ok(Ok(()))
            } else {
                Ok(Err(String::new()))
            }
        }
    }
}

/// Whether a pod bound to `node` in the object's namespace uses it.
fn referenced_by_pod_on(store: &dyn Store, node: &str, attrs: &Attributes) -> Result<bool, ApiError> {
    let info = Pod::info();
    let page = store
        .list(&storage_prefix(info, &attrs.namespace), None, 0, None)
        .map_err(|e| ApiError::from_store(e, info, ""))?;
    for kv in &page.items {
        let Ok(pod) = <Pod as prost::Message>::decode(kv.value.as_ref()) else {
            continue;
        };
        let Some(spec) = pod.spec.as_ref().filter(|s| s.node_name == node) else {
            continue;
        };
        let names = match attrs.resource.as_str() {
            "secrets" => secret_names(spec),
            "configmaps" => config_map_names(spec),
            "serviceaccounts" => vec![spec.service_account_name.as_str()],
            "persistentvolumeclaims" => spec
                .volumes
                .iter()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.as_str())
                .collect(),
            _ => Vec::new(),
        };
        if names.iter().any(|n| *n == attrs.name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every Secret a pod spec uses: volumes, env, envFrom, imagePullSecrets.
pub fn secret_names(spec: &PodSpec) -> Vec<&str> {
    let pull_secrets = spec.image_pull_secrets.iter().map(|r| r.name.as_str()).collect();
    referenced_names(
        spec,
        pull_secrets,
        |v| v.secret.as_ref().map(|s| s.secret_name.as_str()),
        |p| p.secret.as_ref().map(|s| s.name.as_str()),
        |f| f.secret_key_ref.as_ref().map(|r| r.name.as_str()),
        |e| e.secret_ref.as_ref().map(|r| r.name.as_str()),
    )
}

/// Every ConfigMap a pod spec uses: volumes, env, envFrom.
pub fn config_map_names(spec: &PodSpec) -> Vec<&str> {
    referenced_names(
        spec,
        Vec::new(),
        |v| v.config_map.as_ref().map(|c| c.name.as_str()),
        |p| p.config_map.as_ref().map(|c| c.name.as_str()),
        |f| f.config_map_key_ref.as_ref().map(|r| r.name.as_str()),
        |e| e.config_map_ref.as_ref().map(|r| r.name.as_str()),
    )
}

/// `out` followed by the names of one kind a pod spec refers to, in its
/// volumes (projected ones' sources too) and then in each container's env
/// and envFrom; empty names dropped. The four functions pick that kind's
/// references from each place.
fn referenced_names<'a>(
    spec: &'a PodSpec,
    mut out: Vec<&'a str>,
    volume: fn(&Volume) -> Option<&str>,
    projection: fn(&VolumeProjection) -> Option<&str>,
    env: fn(&EnvVarSource) -> Option<&str>,
    env_from: fn(&EnvFromSource) -> Option<&str>,
) -> Vec<&'a str> {
    out.extend(spec.volumes.iter().filter_map(volume));
    let projections = spec.volumes.iter().filter_map(|v| v.projected.as_ref());
    out.extend(projections.flat_map(|p| &p.sources).filter_map(projection));
    for c in spec.init_containers.iter().chain(&spec.containers) {
        out.extend(c.env.iter().filter_map(|e| e.value_from.as_ref().and_then(env)));
        out.extend(c.env_from.iter().filter_map(env_from));
    }
    out.retain(|n| !n.is_empty());
    out
}

/// NodeRestriction admission of a node's TokenRequest, as Kubernetes': the
/// token must be bound to a pod that is bound to this node (and is the pod
/// it names by uid), so a node can only mint credentials for the
/// workloads it runs, and they die with the pod.
pub fn admit_token_request(
    store: &dyn Store,
    node: &str,
    namespace: &str,
    bound: Option<&rkube_api::rpc::BoundObjectReference>,
) -> Result<(), String> {
    let Some(r) = bound.filter(|r| r.kind == "Pod") else {
        return Err(format!("node {node:?} requested a token not bound to a pod"));
    };
    let key = storage_key(Pod::info(), namespace, &r.name);
    let Some(pod) = store
        .get(&key)
        .and_then(|kv| <Pod as prost::Message>::decode(kv.value.as_ref()).ok())
    else {
        // the handler answers NotFound
        return Ok(());
    };
    if pod.spec.as_ref().is_none_or(|s| s.node_name != node) {
        return Err(format!(
            "node {node:?} requested a token bound to a pod scheduled on a different node"
        ));
    }
    if !r.uid.is_empty() && pod.metadata.as_ref().is_none_or(|m| m.uid != r.uid) {
        return Err(format!(
            "node {node:?} requested a token bound to a pod with another uid"
        ));
    }
    Ok(())
}

/// NodeRestriction admission for a write the authorizer let through:
/// `object_name` is the name in the request body (creates carry no name in
/// their attributes). `Ok(())` or the reason it is refused.
///
/// The pod's node is read here, before the handler writes; a pod cannot
/// move between nodes (spec.nodeName is set once, by Bind), so the answer
/// holds for the write unless the pod is deleted and recreated under the
/// same name in between, which an update's resourceVersion catches.
pub fn admit(store: &dyn Store, node: &str, attrs: &Attributes, object_name: &str) -> Result<(), String> {
    let core = attrs.group.is_empty();
    let writes = matches!(attrs.verb.as_str(), "create" | "update" | "patch" | "delete");
    if !writes {
        return Ok(());
    }
    match (core, attrs.resource.as_str()) {
        (true, "pods") => {
            if attrs.verb == "create" {
                return Err(format!(
                    "node {node:?} can only create mirror pods, and rkube has none: pods come from the API and the scheduler"
                ));
            }
            let key = storage_key(Pod::info(), &attrs.namespace, &attrs.name);
            let Some(kv) = store.get(&key) else {
                // the handler answers NotFound
                return Ok(());
            };
            let bound_here = <Pod as prost::Message>::decode(kv.value.as_ref())
                .ok()
                .and_then(|p| p.spec)
                .is_some_and(|s| s.node_name == node);
            if bound_here {
                Ok(())
            } else if attrs.verb == "delete" {
                Err(format!("node {node:?} can only delete pods bound to it"))
            } else {
                Err(format!("node {node:?} can only update pods bound to it"))
            }
        }
        (true, "nodes") => {
            let target = if attrs.verb == "create" {
                object_name
            } else {
                attrs.name.as_str()
            };
            if target == node {
                Ok(())
            } else {
                Err(format!("node {node:?} is not allowed to modify node {target:?}"))
            }
        }
        _ if attrs.group == LEASE_GROUP && attrs.resource == "leases" => {
            if attrs.verb == "create" && object_name != node {
                Err("can only access node lease with the same name as the requesting node".into())
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{
        Container, EnvFromSource, EnvVar, EnvVarSource, LocalObjectReference, SecretEnvSource,
        SecretKeySelector, SecretVolumeSource, Volume,
    };

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn only_group_members_named_system_node_are_nodes() {
        assert_eq!(node_name(&user("system:node:a", &[NODES_GROUP])), Some("a"));
        assert_eq!(node_name(&user("system:node:a", &[])), None);
        assert_eq!(node_name(&user("alice", &[NODES_GROUP])), None);
        assert_eq!(node_name(&user("system:node:", &[NODES_GROUP])), None);
    }

    #[test]
    fn every_secret_reference_of_a_pod_counts() {
        let spec = PodSpec {
            image_pull_secrets: vec![LocalObjectReference { name: "pull".into() }],
            volumes: vec![Volume {
                name: "v".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: "vol".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            init_containers: vec![Container {
                env_from: vec![EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "from".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            containers: vec![Container {
                env: vec![EnvVar {
                    name: "E".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "env".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut names = secret_names(&spec);
        names.sort();
        assert_eq!(names, ["env", "from", "pull", "vol"]);
        assert!(config_map_names(&spec).is_empty());
    }

    #[test]
    fn node_writes_are_limited_to_its_own_node_and_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = rkube_store::SledStore::open(rkube_store::StoreConfig::new(dir.path())).unwrap();
        let a = Attributes::new("update", "", "nodes", "", "b").with_subresource("status");
        assert_eq!(
            admit(&store, "a", &a, "b").unwrap_err(),
            r#"node "a" is not allowed to modify node "b""#
        );
        assert!(admit(&store, "a", &Attributes::new("update", "", "nodes", "", "a"), "a").is_ok());
        let lease = Attributes::new("update", LEASE_GROUP, "leases", NODE_LEASE_NAMESPACE, "b");
        assert!(authorize(&store, "a", &lease).unwrap().is_err());
        let lease = Attributes::new("update", LEASE_GROUP, "leases", NODE_LEASE_NAMESPACE, "a");
        assert!(authorize(&store, "a", &lease).unwrap().is_ok());
        let create = Attributes::new("create", LEASE_GROUP, "leases", NODE_LEASE_NAMESPACE, "");
        assert!(authorize(&store, "a", &create).unwrap().is_ok());
        assert!(admit(&store, "a", &create, "b").is_err());
        let elsewhere = Attributes::new("get", LEASE_GROUP, "leases", "default", "a");
        assert!(authorize(&store, "a", &elsewhere).unwrap().is_err());
        // nothing outside the node rules
        let deploy = Attributes::new("create", "apps", "deployments", "default", "");
        assert_eq!(authorize(&store, "a", &deploy).unwrap(), Err(String::new()));
        let list_secrets = Attributes::new("list", "", "secrets", "default", "");
        assert!(authorize(&store, "a", &list_secrets).unwrap().is_err());
    }
}
