//! Identity and RBAC: ServiceAccounts, and Roles, ClusterRoles and their bindings, as
//! Kubernetes' RBAC authorizer reads them.

use super::meta::{validate_meta, NameRule};
use super::{Errors, FieldError, Validate};
use crate::rbac;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn validate_rules(rules: &[rbac::v1::PolicyRule], namespaced: bool, e: &mut Errors) {
    for (i, r) in rules.iter().enumerate() {
        let f = format!("rules[{i}]");
        if r.verbs.is_empty() {
            e.required(format!("{f}.verbs"), "verbs must contain at least one value");
        }
        if !r.non_resource_urls.is_empty() {
            if namespaced {
                e.invalid(
                    format!("{f}.nonResourceURLs"),
                    &r.non_resource_urls,
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if !r.api_groups.is_empty() || !r.resources.is_empty() {
                e.invalid(
                    format!("{f}.nonResourceURLs"),
                    &r.non_resource_urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if r.api_groups.is_empty() {
            e.required(
                format!("{f}.apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if r.resources.is_empty() {
            e.required(
                format!("{f}.resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
}

fn validate_binding(
    subjects: &[rbac::v1::Subject],
    role_ref: Option<&rbac::v1::RoleRef>,
    allowed_ref_kinds: &[&'static str],
    namespaced: bool,
    e: &mut Errors,
) {
    match role_ref {
        None => e.required("roleRef", "a binding must name the role it grants"),
        Some(r) => {
            if r.api_group != RBAC_GROUP {
                e.not_supported("roleRef.apiGroup", &r.api_group, &[RBAC_GROUP]);
            }
            e.one_of("roleRef.kind".into(), &r.kind, allowed_ref_kinds);
            if r.name.is_empty() {
                e.required("roleRef.name", "");
            }
        }
    }
    for (i, s) in subjects.iter().enumerate() {
        let f = format!("subjects[{i}]");
        if s.name.is_empty() {
            e.required(format!("{f}.name"), "");
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.api_group.is_empty() {
                    e.not_supported(format!("{f}.apiGroup"), &s.api_group, &[""]);
                }
                if !namespaced && s.namespace.is_empty() {
                    e.required(format!("{f}.namespace"), "");
                }
            }
            "User" | "Group" => {
                if s.api_group != RBAC_GROUP {
                    e.not_supported(format!("{f}.apiGroup"), &s.api_group, &[RBAC_GROUP]);
                }
            }
            other => e.not_supported(format!("{f}.kind"), other, &["ServiceAccount", "User", "Group"]),
        }
    }
}

fn role_ref_unchanged(new: Option<&rbac::v1::RoleRef>, old: Option<&rbac::v1::RoleRef>) -> Vec<FieldError> {
    let mut e = Errors::default();
    if new != old {
        e.invalid("roleRef", new, "cannot change roleRef");
    }
    e.0
}

impl Validate for rbac::v1::Role {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_rules(&self.rules, true, &mut e);
        e.0
    }
}

impl Validate for rbac::v1::ClusterRole {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_rules(&self.rules, false, &mut e);
        e.0
    }
}

impl Validate for rbac::v1::RoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_binding(
            &self.subjects,
            self.role_ref.as_ref(),
            &["Role", "ClusterRole"],
            true,
            &mut e,
        );
        e.0
    }
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        role_ref_unchanged(self.role_ref.as_ref(), old.role_ref.as_ref())
    }
}

impl Validate for rbac::v1::ClusterRoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_binding(
            &self.subjects,
            self.role_ref.as_ref(),
            &["ClusterRole"],
            false,
            &mut e,
        );
        e.0
    }
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        role_ref_unchanged(self.role_ref.as_ref(), old.role_ref.as_ref())
    }
}

/// A ServiceAccount is an identity: a name, and what its pods get.
impl Validate for crate::core::v1::ServiceAccount {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        e.0
    }
}

#[cfg(test)]
mod rbac_tests {
    use super::*;
    use crate::codec::decode_manifests;
    use crate::defaults::Defaulting;

    const MANIFEST: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-reader
rules:
- apiGroups: [""]
  resources: ["pods", "pods/log"]
  resourceNames: ["web"]
  verbs: ["get", "list"]
- nonResourceURLs: ["/metrics"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: read-pods
  namespace: default
subjects:
- kind: User
  name: jane
  apiGroup: rbac.authorization.k8s.io
- kind: Group
  name: devs
- kind: ServiceAccount
  name: builder
roleRef:
  kind: ClusterRole
  name: system:metrics-reader
  apiGroup: rbac.authorization.k8s.io
"#;

    #[test]
    fn kubernetes_rbac_manifests_decode_and_validate() {
        let objs = decode_manifests(MANIFEST, "rbac.yaml").unwrap();
        let role: rbac::v1::ClusterRole = objs[0].decode().unwrap();
        assert_eq!(role.rules[0].resource_names, ["web"]);
        assert_eq!(role.rules[1].non_resource_urls, ["/metrics"]);
        assert!(role.validate().is_empty(), "{:?}", role.validate());
        let mut rb: rbac::v1::RoleBinding = objs[1].decode().unwrap();
        rb.apply_defaults();
        assert_eq!(rb.subjects[1].api_group, "rbac.authorization.k8s.io");
        assert!(rb.validate().is_empty(), "{:?}", rb.validate());
    }

    #[test]
    fn bad_rbac_objects_name_the_field() {
        let mut role = rbac::v1::Role::default();
        role.metadata.get_or_insert_with(Default::default).name = "r".into();
        role.rules = vec![rbac::v1::PolicyRule {
            non_resource_urls: vec!["/healthz".into()],
            ..Default::default()
        }];
        let fields: Vec<String> = role.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["rules[0].verbs", "rules[0].nonResourceURLs"]);

        let mut crb = rbac::v1::ClusterRoleBinding::default();
        crb.metadata.get_or_insert_with(Default::default).name = "b".into();
        crb.role_ref = Some(rbac::v1::RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "x".into(),
        });
        crb.subjects = vec![rbac::v1::Subject {
            kind: "ServiceAccount".into(),
            name: "sa".into(),
            ..Default::default()
        }];
        let fields: Vec<String> = crb.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["roleRef.kind", "subjects[0].namespace"]);

        let mut changed = crb.clone();
        changed.role_ref.as_mut().unwrap().name = "y".into();
        assert_eq!(changed.validate_update(&crb)[0].field, "roleRef");
    }
}
