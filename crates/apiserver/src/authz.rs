//! Authorization: may this user do this verb on this resource here?
//! `AlwaysAllow` (the default for now) says yes to everyone; `RBAC`
//! evaluates the Role, ClusterRole, RoleBinding and ClusterRoleBinding
//! objects of the store exactly as Kubernetes' RBAC authorizer does, with
//! the `system:masters` group always allowed. The RBAC objects are read
//! from the store into a snapshot that every write to an RBAC kind
//! invalidates, so a grant or a revocation takes effect on the next request.

// Re-exported so that `authz::Attributes`, the path the service and audit use, keeps working.
pub(crate) use crate::attributes::rule_allows;
pub use crate::attributes::Attributes;
use crate::authn::{UserInfo, MASTERS_GROUP};
use crate::error::ApiError;
use crate::handlers;
use rkube_api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use rkube_api::Resource;
use rkube_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    AlwaysAllow,
    Rbac,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AlwaysAllow" => Ok(Mode::AlwaysAllow),
            "RBAC" => Ok(Mode::Rbac),
            other => Err(format!(
                "unknown authorization mode {other:?}; use AlwaysAllow or RBAC"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The attributes of IssueNodeCertificate, Kubernetes' permission to have
/// a node client certificate signed (`certificatesigningrequests/nodeclient`).
pub fn node_client_attributes(node_name: &str) -> Attributes {
    Attributes::new(
        "create",
        CERTIFICATES_GROUP,
        "certificatesigningrequests",
        "",
        &format!("system:node:{node_name}"),
    )
    .with_subresource("nodeclient")
}

/// The attributes of IssueKubeletServingCertificate, for the audit log:
/// a CertificateSigningRequest for signer `kubernetes.io/kubelet-serving`,
/// named after the subject it gets (`user` when the caller is not a node).
pub fn kubelet_serving_attributes(user: &str) -> Attributes {
    Attributes::new(
        "create",
        CERTIFICATES_GROUP,
        "certificatesigningrequests",
        "",
        user,
    )
    .with_subresource("kubeletserving")
}

pub const CERTIFICATES_GROUP: &str = "certificates.k8s.io";

fn is_node_client_request(attrs: &Attributes) -> bool {
    attrs.verb == "create"
        && attrs.group == CERTIFICATES_GROUP
        && attrs.resource == "certificatesigningrequests"
        && attrs.subresource == "nodeclient"
}

/// Kubernetes' Forbidden message, with the authorizer's reason after a
/// colon when it has one.
fn forbidden_with_reason(attrs: &Attributes, user: &UserInfo, reason: &str) -> String {
    let message = attrs.forbidden_message(user);
    if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    }
}

/// The RBAC objects at one moment.
#[derive(Default)]
struct Snapshot {
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
}

pub struct Authorizer {
    mode: Mode,
    store: Arc<dyn Store>,
    cache: RwLock<Option<Arc<Snapshot>>>,
    /// Bumped by every RBAC write; a snapshot read under an older epoch
    /// is not kept, so a write racing a reload is never lost.
    epoch: AtomicU64,
}

impl Authorizer {
    pub fn new(mode: Mode, store: Arc<dyn Store>) -> Self {
        Authorizer {
            mode,
            store,
            cache: RwLock::new(None),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Called after every write to an RBAC kind.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether `user` may do `attrs`.
    pub fn allowed(&self, user: &UserInfo, attrs: &Attributes) -> Result<bool, ApiError> {
        Ok(self.decide(user, attrs)?.is_ok())
    }

    /// `Ok(())`, or why not (empty when the Forbidden message says it all).
    fn decide(&self, user: &UserInfo, attrs: &Attributes) -> Result<Result<(), String>, ApiError> {
        // A bootstrap token is good for one thing whatever the mode: its
        // node's client certificate.
        if crate::authn::is_bootstrapper(user) && !is_node_client_request(attrs) {
            return Ok(Err(
                "a bootstrap token may only obtain a node client certificate (IssueNodeCertificate)".into(),
            ));
        }
        if self.mode == Mode::AlwaysAllow || user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(Ok(()));
        }
        // Kubernetes' `Node,RBAC`: the node authorizer decides for nodes.
        if let Some(node) = crate::node::node_name(user) {
            return crate::node::authorize(self.store.as_ref(), node, attrs);
        }
        let snap = self.snapshot()?;
        Ok(if rbac_allows(&snap, user, attrs) {
            Ok(())
        } else {
            Err(String::new())
        })
    }

    /// Ok, or PERMISSION_DENIED with Kubernetes' message.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
        match self.decide(user, attrs)? {
            Ok(()) => Ok(()),
            Err(reason) => Err(ApiError::forbidden(forbidden_with_reason(attrs, user, &reason))),
        }
    }

    /// NodeRestriction admission for a write by a node (nothing for other
    /// users, or without RBAC): see [`crate::node::admit`].
    pub fn admit_node_write(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        object_name: &str,
    ) -> Result<(), ApiError> {
        if self.mode != Mode::Rbac || user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(());
        }
        let Some(node) = crate::node::node_name(user) else {
            return Ok(());
        };
        crate::node::admit(self.store.as_ref(), node, attrs, object_name)
            .map_err(|reason| ApiError::forbidden(forbidden_with_reason(attrs, user, &reason)))
    }

    /// NodeRestriction admission of a TokenRequest by a node (nothing for
    /// other users, or without RBAC): see
    /// [`crate::node::admit_token_request`].
    pub fn admit_node_token_request(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        bound: Option<&rkube_api::rpc::BoundObjectReference>,
    ) -> Result<(), ApiError> {
        if self.mode != Mode::Rbac || user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(());
        }
        let Some(node) = crate::node::node_name(user) else {
            return Ok(());
        };
        crate::node::admit_token_request(self.store.as_ref(), node, &attrs.namespace, bound)
            .map_err(|reason| ApiError::forbidden(forbidden_with_reason(attrs, user, &reason)))
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, ApiError> {
        if let Some(s) = self.cache.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(s.clone());
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut snap = Snapshot::default();
        for r in list::<Role>(self.store.as_ref())? {
            let m = r.metadata();
            snap.roles.insert((m.namespace.clone(), m.name.clone()), r.rules);
        }
        for r in list::<ClusterRole>(self.store.as_ref())? {
            snap.cluster_roles.insert(r.metadata().name.clone(), r.rules);
        }
        snap.role_bindings = list::<RoleBinding>(self.store.as_ref())?;
        snap.cluster_role_bindings = list::<ClusterRoleBinding>(self.store.as_ref())?;
        let snap = Arc::new(snap);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::SeqCst) == epoch {
            *cache = Some(snap.clone());
        }
        Ok(snap)
    }
}

fn list<K: Resource>(store: &dyn Store) -> Result<Vec<K>, ApiError> {
    let prefix = handlers::storage_prefix(K::info(), "");
    let page = store
        .list(&prefix, None, 0, None)
        .map_err(|e| ApiError::from_store(e, K::info(), ""))?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| match K::decode(kv.value.as_ref()) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(key = %kv.key, "stored RBAC object cannot be decoded, it grants nothing: {e}");
                None
            }
        })
        .collect())
}

fn subject_matches(s: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn rbac_allows(snap: &Snapshot, user: &UserInfo, attrs: &Attributes) -> bool {
    let cluster_role = |r: &RoleRef| snap.cluster_roles.get(&r.name).map(Vec::as_slice).unwrap_or(&[]);
    for b in &snap.cluster_role_bindings {
        let Some(r) = &b.role_ref else { continue };
        if b.subjects.iter().any(|s| subject_matches(s, user, ""))
            && cluster_role(r).iter().any(|rule| rule_allows(rule, attrs))
        {
            return true;
        }
    }
    if attrs.namespace.is_empty() {
        return false;
    }
    for b in snap
        .role_bindings
        .iter()
        .filter(|b| b.metadata().namespace == attrs.namespace)
    {
        let Some(r) = &b.role_ref else { continue };
        if !b
            .subjects
            .iter()
            .any(|s| subject_matches(s, user, &attrs.namespace))
        {
            continue;
        }
        let rules = if r.kind == "Role" {
            snap.roles
                .get(&(attrs.namespace.clone(), r.name.clone()))
                .map(Vec::as_slice)
                .unwrap_or(&[])
        } else {
            cluster_role(r)
        };
        if rules.iter().any(|rule| rule_allows(rule, attrs)) {
            return true;
        }
    }
    false
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

const READ: &[&str] = &["get", "list", "watch"];
const ALL_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The ClusterRoles created at startup when RBAC is on, and who they are
/// bound to (a ClusterRoleBinding of the same name; none for the roles
/// meant for people to bind per namespace: admin, edit, view).
pub fn default_cluster_roles() -> Vec<(ClusterRole, Option<Subject>)> {
    let user = |n: &str| Subject {
        kind: "User".into(),
        api_group: RBAC_GROUP.into(),
        name: n.into(),
        namespace: String::new(),
    };
    let group = |n: &str| Subject {
        kind: "Group".into(),
        ..user(n)
    };
    let workloads: &[&str] = &[
        "pods",
        "pods/log",
        "pods/exec",
        "pods/attach",
        "services",
        "endpoints",
        "configmaps",
        "secrets",
        "events",
        "serviceaccounts",
        "persistentvolumeclaims",
    ];
    let apps: &[&str] = &["deployments", "replicasets", "daemonsets", "statefulsets"];
    let batch: &[&str] = &["jobs", "cronjobs"];
    let view_core: &[&str] = &[
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "events",
        "namespaces",
        "namespaces/status",
        "serviceaccounts",
        "persistentvolumeclaims",
        "resourcequotas",
        "resourcequotas/status",
        "limitranges",
    ];
    let view = vec![
        rule(READ, &[""], view_core),
        rule(
            READ,
            &["apps"],
            &[
                "deployments",
                "deployments/status",
                "replicasets",
                "replicasets/status",
                "daemonsets",
                "daemonsets/status",
                "statefulsets",
                "statefulsets/status",
                "controllerrevisions",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["autoscaling"],
            &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
        ),
        rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
        rule(READ, &["networking.k8s.io"], &["ingresses", "ingresses/status"]),
        rule(&["get"], &[""], &["pods/proxy"]),
        // as Kubernetes' view: classes to pick from (volumes stay with administrators)
        rule(READ, &["storage.k8s.io"], &["storageclasses"]),
        // as Kubernetes' aggregated view role: `kubectl top pods`
        rule(READ, &["metrics.k8s.io"], &["pods", "nodes"]),
    ];
    let mut edit = view.clone();
    edit.extend([
        rule(ALL_WRITE, &[""], workloads),
        rule(ALL_WRITE, &["apps"], apps),
        rule(ALL_WRITE, &["batch"], batch),
        rule(ALL_WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(ALL_WRITE, &["networking.k8s.io"], &["networkpolicies"]),
        rule(ALL_WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(ALL_WRITE, &["networking.k8s.io"], &["ingresses"]),
        // as Kubernetes' edit: evicting (rkubectl drain) is a delete that budgets allow
        rule(&["create"], &[""], &["pods/eviction"]),
    ]);
    let mut admin = edit.clone();
    admin.push(rule(ALL_WRITE, &[RBAC_GROUP], &["roles", "rolebindings"]));
    let cluster_admin = rule(&["*"], &["*"], &["*"]);
    let everything_read = rule(READ, &["*"], &["*"]);
    let events = rule(&["create", "update", "patch"], &[""], &["events"]);
    let leases = rule(
        &["get", "list", "watch", "create", "update", "patch", "delete"],
        &["coordination.k8s.io"],
        &["leases"],
    );
    let scheduler = vec![
        rule(READ, &[""], &["pods", "nodes", "namespaces", "services"]),
        // Preemption prefers victims whose eviction breaks no budget.
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        // Volume binding: claims' volumes' node affinity, and the node chosen for a
        // WaitForFirstConsumer claim (volume.kubernetes.io/selected-node).
        rule(READ, &[""], &["persistentvolumeclaims", "persistentvolumes"]),
        rule(READ, &["storage.k8s.io"], &["storageclasses"]),
        rule(&["update", "patch"], &[""], &["persistentvolumeclaims"]),
        rule(&["create"], &[""], &["pods/binding"]),
        // Preemption evicts lower-priority pods.
        rule(&["delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        events.clone(),
        leases.clone(),
    ];
    // The garbage collector and the namespace controller act on every
    // kind (ownerReferences, finalizers, deleting a namespace's contents),
    // as Kubernetes' generic-garbage-collector and namespace-controller do.
    let controller_manager = vec![
        everything_read.clone(),
        rule(&["update", "patch", "delete", "deletecollection"], &["*"], &["*"]),
        rule(
            &["create"],
            &[""],
            &[
                "pods",
                "endpoints",
                "namespaces",
                "nodes",
                "services",
                "configmaps",
                "secrets",
                "serviceaccounts",
                "persistentvolumeclaims",
            ],
        ),
        rule(&["update", "patch"], &["*"], &["*/status"]),
        // csrapproving decides node certificate requests
        rule(
            &["update", "patch"],
            &[CERTIFICATES_GROUP],
            &["certificatesigningrequests/approval"],
        ),
        rule(
            &["create"],
            &["apps"],
            &[
                "deployments",
                "replicasets",
                "daemonsets",
                "statefulsets",
                "controllerrevisions",
            ],
        ),
        rule(&["create"], &["batch"], &["jobs", "cronjobs"]),
        rule(&["create"], &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        rule(&["get"], &[""], &["pods/proxy", "nodes/proxy"]),
        events.clone(),
    ];
    // What the node authorizer allows any node before its per-object
    // checks. As in Kubernetes since 1.8 the role is bound to nobody: nodes
    // are authorized by the node authorizer alone (crate::node).
    let node = crate::node::node_rules();
    let node_client = vec![rule(
        &["create"],
        &[CERTIFICATES_GROUP],
        &["certificatesigningrequests/nodeclient"],
    )];
    // pods: the cluster DNS the proxy serves answers pod names and addresses
    let proxy = vec![
        rule(READ, &[""], &["services", "endpoints", "nodes"]),
        // NetworkPolicy enforcement: policies, the pods they select, namespaces' labels
        rule(READ, &[""], &["pods", "namespaces"]),
        rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
        events.clone(),
    ];
    // rkube-ingress: routes from Ingresses to endpoints, certificates from
    // Secrets, its default IngressClass, and the addresses it writes back.
    let ingress = vec![
        rule(READ, &[""], &["services", "endpoints", "secrets", "nodes"]),
        rule(READ, &["networking.k8s.io"], &["ingresses", "ingressclasses"]),
        rule(&["create"], &["networking.k8s.io"], &["ingressclasses"]),
        rule(
            &["update", "patch"],
            &["networking.k8s.io"],
            &["ingresses/status"],
        ),
        events.clone(),
    ];
    let cloud = vec![
        rule(READ, &[""], &["pods", "nodes", "services", "endpoints"]),
        rule(
            &["update", "patch", "delete"],
            &[""],
            &["nodes", "nodes/status", "pods", "services", "services/status"],
        ),
        rule(&["delete"], &[""], &["pods"]),
        // The provisioner (the provider's volumes): makes and deletes the volumes of claims.
        rule(READ, &[""], &["persistentvolumeclaims"]),
        rule(READ, &["storage.k8s.io"], &["storageclasses"]),
        rule(
            &["get", "list", "watch", "create", "update", "patch", "delete"],
            &[""],
            &["persistentvolumes"],
        ),
        events,
        leases,
    ];
    let cr = |name: &str, rules: Vec<PolicyRule>| {
        let mut r = ClusterRole {
            rules,
            ..Default::default()
        };
        r.set_type_meta();
        r.metadata_mut().name = name.into();
        r.metadata_mut()
            .labels
            .insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
        r
    };
    vec![
        (
            cr("cluster-admin", vec![cluster_admin]),
            Some(group(MASTERS_GROUP)),
        ),
        (cr("admin", admin), None),
        (cr("edit", edit), None),
        (cr("view", view), None),
        (
            cr("system:kube-scheduler", scheduler),
            Some(user("system:kube-scheduler")),
        ),
        (
            cr("system:kube-controller-manager", controller_manager),
            Some(user("system:kube-controller-manager")),
        ),
        (cr("system:node", node), None),
        (
            cr(
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                node_client,
            ),
            Some(group(crate::authn::BOOTSTRAPPERS_GROUP)),
        ),
        (cr("system:kube-proxy", proxy), Some(user("system:kube-proxy"))),
        (
            cr("system:rkube-ingress", ingress),
            Some(user("system:rkube-ingress")),
        ),
        (
            cr("system:cloud-controller-manager", cloud),
            Some(user("system:cloud-controller-manager")),
        ),
    ]
}

/// The annotation by which an administrator keeps a default role or binding
/// as edited: `"false"` stops the reconciliation below for that object.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Creates the default ClusterRoles and their bindings, and reconciles the ones
/// already stored as Kubernetes does at every apiserver start: rules and
/// subjects this version needs are added (an upgraded cluster's scheduler
/// gains the new rules it lists with), nothing an administrator added is
/// removed, and an object annotated `rbac.authorization.kubernetes.io/autoupdate:
/// "false"` is left alone.
pub async fn bootstrap_default_roles(store: &dyn Store) -> anyhow::Result<()> {
    use anyhow::Context;
    for (role, subject) in default_cluster_roles() {
        let name = role.metadata().name.clone();
        reconcile(store, role, |stored: &mut ClusterRole, wanted| {
            add_missing(&mut stored.rules, wanted.rules)
        })
        .await
        .with_context(|| format!("reconciling the default ClusterRole {name}"))?;
        if let Some(subject) = subject {
            let mut b = ClusterRoleBinding {
                subjects: vec![subject],
                role_ref: Some(RoleRef {
                    api_group: RBAC_GROUP.into(),
                    kind: "ClusterRole".into(),
                    name: name.clone(),
                }),
                ..Default::default()
            };
            b.set_type_meta();
            b.metadata_mut().name = name.clone();
            b.metadata_mut()
                .labels
                .insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
            // A binding's roleRef cannot change; only missing subjects are added.
            reconcile(store, b, |stored: &mut ClusterRoleBinding, wanted| {
                add_missing(&mut stored.subjects, wanted.subjects)
            })
            .await
            .with_context(|| format!("reconciling the default ClusterRoleBinding {name}"))?;
        }
    }
    Ok(())
}

/// Appends the entries of `wanted` that `have` lacks; true if any was.
fn add_missing<T: PartialEq>(have: &mut Vec<T>, wanted: Vec<T>) -> bool {
    let mut changed = false;
    for w in wanted {
        if !have.contains(&w) {
            have.push(w);
            changed = true;
        }
    }
    changed
}

/// Creates `wanted` if it is not stored; otherwise lets `merge` bring the
/// stored object up to date and writes it back if that changed anything
/// (compare-and-swap, retried if another apiserver wrote in between).
async fn reconcile<K: Resource>(
    store: &dyn Store,
    wanted: K,
    merge: impl Fn(&mut K, K) -> bool,
) -> anyhow::Result<()> {
    let key = handlers::storage_key(K::info(), "", &wanted.metadata().name);
    for _ in 0..5 {
        let Some(kv) = store.try_get(&key)? else {
            let mut obj = wanted.clone();
            let meta = obj.metadata_mut();
            meta.uid = uuid::Uuid::new_v4().to_string();
            meta.creation_timestamp = handlers::now();
            meta.generation = 1;
            match store
                .create(&key, prost::Message::encode_to_vec(&obj).into())
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut stored = handlers::decode_stored::<K>(&kv).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let keep = stored
            .metadata()
            .annotations
            .get(AUTOUPDATE_ANNOTATION)
            .is_some_and(|v| v == "false");
        if keep || !merge(&mut stored, wanted.clone()) {
            return Ok(());
        }
        stored.metadata_mut().generation += 1;
        let bytes = handlers::encode_for_store(&stored).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        match store.put(&key, bytes, Some(kv.mod_revision)).await {
            Ok(_) => {
                tracing::info!(key, "default RBAC object updated with this version's rules");
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("{key} kept changing while it was being reconciled; restart the apiserver to try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn forbidden_message_reads_like_kubernetes() {
        let a = Attributes::new("create", "", "pods", "default", "");
        assert_eq!(
            a.forbidden_message(&user("alice", &[])),
            r#"pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "default""#
        );
        let a = Attributes::new("get", "apps", "deployments", "", "web").with_subresource("status");
        assert_eq!(
            a.forbidden_message(&user("bob", &[])),
            r#"deployments.apps "web" is forbidden: User "bob" cannot get resource "deployments/status" in API group "apps" at the cluster scope"#
        );
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let mut r = rule(&["get"], &[""], &["pods/log"]);
        assert!(rule_allows(
            &r,
            &Attributes::new("get", "", "pods", "ns", "p").with_subresource("log")
        ));
        assert!(!rule_allows(&r, &Attributes::new("get", "", "pods", "ns", "p")));
        assert!(!rule_allows(
            &r,
            &Attributes::new("get", "apps", "pods", "ns", "p").with_subresource("log")
        ));
        r.resource_names = vec!["only".into()];
        assert!(!rule_allows(
            &r,
            &Attributes::new("get", "", "pods", "ns", "p").with_subresource("log")
        ));
        assert!(rule_allows(
            &r,
            &Attributes::new("get", "", "pods", "ns", "only").with_subresource("log")
        ));
        let star = rule(&["update"], &["*"], &["*/status"]);
        assert!(rule_allows(
            &star,
            &Attributes::new("update", "apps", "deployments", "ns", "d").with_subresource("status")
        ));
        assert!(!rule_allows(
            &star,
            &Attributes::new("update", "apps", "deployments", "ns", "d")
        ));
    }

    /// The default roles and their bindings, as the apiserver creates them.
    fn defaults() -> Snapshot {
        let mut snap = Snapshot::default();
        for (role, subject) in default_cluster_roles() {
            let name = role.metadata().name.clone();
            if let Some(subject) = subject {
                snap.cluster_role_bindings.push(ClusterRoleBinding {
                    subjects: vec![subject],
                    role_ref: Some(RoleRef {
                        api_group: RBAC_GROUP.into(),
                        kind: "ClusterRole".into(),
                        name: name.clone(),
                    }),
                    ..Default::default()
                });
            }
            snap.cluster_roles.insert(name, role.rules);
        }
        snap
    }

    #[test]
    fn default_roles_let_each_component_do_its_job_and_no_more() {
        let snap = defaults();
        let can = |u: &UserInfo, a: Attributes| rbac_allows(&snap, u, &a);
        let scheduler = user("system:kube-scheduler", &[]);
        assert!(can(
            &scheduler,
            Attributes::new("create", "", "pods", "ns", "p").with_subresource("binding")
        ));
        assert!(can(&scheduler, Attributes::new("watch", "", "nodes", "", "")));
        assert!(can(&scheduler, Attributes::new("delete", "", "pods", "ns", "p")));
        assert!(!can(&scheduler, Attributes::new("delete", "", "nodes", "", "n")));
        let cm = user("system:kube-controller-manager", &[]);
        assert!(can(
            &cm,
            Attributes::new("create", "apps", "replicasets", "ns", "")
        ));
        assert!(can(
            &cm,
            Attributes::new("delete", RBAC_GROUP, "roles", "ns", "r")
        ));
        assert!(can(
            &cm,
            Attributes::new("get", "", "pods", "", "").with_subresource("proxy")
        ));
        // nodes get nothing from RBAC: the node authorizer decides for them
        let node = user("system:node:a", &["system:nodes"]);
        assert!(!can(
            &node,
            Attributes::new("update", "", "pods", "ns", "p").with_subresource("status")
        ));
        assert!(!can(&node, Attributes::new("get", "", "secrets", "ns", "s")));
        // bootstrappers may have a node client certificate signed, and
        // nothing else
        let bootstrapper = user(
            "system:bootstrap:abcdef",
            &[crate::authn::BOOTSTRAPPERS_GROUP, AUTHENTICATED],
        );
        assert!(can(&bootstrapper, node_client_attributes("a")));
        assert!(!can(&bootstrapper, Attributes::new("list", "", "pods", "", "")));
        let proxy = user("system:kube-proxy", &[]);
        assert!(can(&proxy, Attributes::new("watch", "", "endpoints", "", "")));
        assert!(can(&proxy, Attributes::new("watch", "", "pods", "", "")));
        assert!(!can(&proxy, Attributes::new("create", "", "pods", "ns", "")));
        let ccm = user("system:cloud-controller-manager", &[]);
        assert!(can(
            &ccm,
            Attributes::new("update", "", "services", "ns", "s").with_subresource("status")
        ));
        assert!(can(&ccm, Attributes::new("delete", "", "nodes", "", "n")));
        // people's roles are bound by administrators, not by default
        assert!(!can(
            &user("alice", &[AUTHENTICATED]),
            Attributes::new("list", "", "pods", "default", "")
        ));
    }

    #[test]
    fn people_who_may_view_pods_may_see_their_metrics() {
        let snap = defaults();
        for role in ["view", "edit", "admin", "cluster-admin"] {
            let rules = &snap.cluster_roles[role];
            for attrs in [
                Attributes::new("list", "metrics.k8s.io", "pods", "ns", ""),
                Attributes::new("get", "metrics.k8s.io", "pods", "ns", "web"),
                Attributes::new("list", "metrics.k8s.io", "nodes", "", ""),
            ] {
                let allowed = rules.iter().any(|r| crate::attributes::rule_allows(r, &attrs));
                assert!(allowed, "{role}: {}", attrs.resource_path());
            }
        }
    }

    const AUTHENTICATED: &str = crate::authn::AUTHENTICATED_GROUP;

    #[test]
    fn role_bindings_apply_only_in_their_namespace() {
        let mut snap = Snapshot::default();
        snap.cluster_roles
            .insert("view".into(), vec![rule(READ, &[""], &["pods"])]);
        let mut rb = RoleBinding {
            subjects: vec![Subject {
                kind: "Group".into(),
                api_group: RBAC_GROUP.into(),
                name: "devs".into(),
                namespace: String::new(),
            }],
            role_ref: Some(RoleRef {
                api_group: RBAC_GROUP.into(),
                kind: "ClusterRole".into(),
                name: "view".into(),
            }),
            ..Default::default()
        };
        rb.metadata_mut().namespace = "team".into();
        snap.role_bindings.push(rb);
        let dev = user("dan", &["devs"]);
        assert!(rbac_allows(
            &snap,
            &dev,
            &Attributes::new("list", "", "pods", "team", "")
        ));
        assert!(!rbac_allows(
            &snap,
            &dev,
            &Attributes::new("list", "", "pods", "other", "")
        ));
        assert!(!rbac_allows(
            &snap,
            &dev,
            &Attributes::new("list", "", "pods", "", "")
        ));
        assert!(!rbac_allows(
            &snap,
            &dev,
            &Attributes::new("create", "", "pods", "team", "")
        ));
        assert!(!rbac_allows(
            &snap,
            &user("eve", &[]),
            &Attributes::new("list", "", "pods", "team", "")
        ));
    }

    fn stored<K: Resource>(store: &dyn Store, name: &str) -> (K, u64) {
        let kv = store.get(&handlers::storage_key(K::info(), "", name)).unwrap();
        (handlers::decode_stored::<K>(&kv).unwrap(), kv.mod_revision)
    }

    async fn overwrite<K: Resource>(store: &dyn Store, obj: &K) {
        let key = handlers::storage_key(K::info(), "", &obj.metadata().name);
        store
            .put(&key, handlers::encode_for_store(obj).unwrap(), None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_upgrade_reconciles_stored_default_roles_and_keeps_what_admins_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = rkube_store::SledStore::open(rkube_store::StoreConfig::new(dir.path())).unwrap();
        bootstrap_default_roles(&store).await.unwrap();
        let budgets = Attributes::new("list", "policy", "poddisruptionbudgets", "", "");
        let (mut scheduler, _) = stored::<ClusterRole>(&store, "system:kube-scheduler");
        assert!(scheduler.rules.iter().any(|r| rule_allows(r, &budgets)));

        // An older version's roles: the scheduler's lacks the budgets rule
        // (and an administrator added one), its binding lost its subject, and
        // `view` was emptied and pinned by its owner.
        scheduler.rules.retain(|r| !rule_allows(r, &budgets));
        let extra = rule(&["get"], &["example.com"], &["widgets"]);
        scheduler.rules.push(extra.clone());
        overwrite(&store, &scheduler).await;
        let (mut binding, _) = stored::<ClusterRoleBinding>(&store, "system:kube-scheduler");
        binding.subjects.clear();
        overwrite(&store, &binding).await;
        let (mut view, _) = stored::<ClusterRole>(&store, "view");
        view.rules.clear();
        view.metadata_mut()
            .annotations
            .insert(AUTOUPDATE_ANNOTATION.into(), "false".into());
        overwrite(&store, &view).await;

        bootstrap_default_roles(&store).await.unwrap();
        let (scheduler, rev) = stored::<ClusterRole>(&store, "system:kube-scheduler");
        assert!(scheduler.rules.iter().any(|r| rule_allows(r, &budgets)));
        assert!(
            scheduler.rules.contains(&extra),
            "an administrator's rule was removed"
        );
        let (binding, _) = stored::<ClusterRoleBinding>(&store, "system:kube-scheduler");
        assert_eq!(binding.subjects.len(), 1);
        assert_eq!(binding.subjects[0].name, "system:kube-scheduler");
        let (view, _) = stored::<ClusterRole>(&store, "view");
        assert!(view.rules.is_empty(), "autoupdate=false was not honoured");

        // Up to date: a further start writes nothing.
        bootstrap_default_roles(&store).await.unwrap();
        assert_eq!(stored::<ClusterRole>(&store, "system:kube-scheduler").1, rev);
    }
}
