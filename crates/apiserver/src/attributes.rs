//! What a request asks to do, in Kubernetes' terms (verb, group, resource,
//! subresource, namespace, name), and whether one policy rule covers it.
//! Both the RBAC authorizer (`authz.rs`) and node restriction (`node.rs`)
//! decide on these, and `authz` asks `node` for node identities, so they
//! live here rather than in either.

use crate::authn::UserInfo;
use rkube_api::rbac::v1::PolicyRule;

/// What a request wants to do, in Kubernetes' terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection, impersonate
    pub verb: String,
    pub group: String,
    /// plural resource name
    pub resource: String,
    /// status, binding, log, exec, proxy; empty for the object itself
    pub subresource: String,
    /// empty: cluster scope (or all namespaces)
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    pub fn new(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn with_subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.into();
        self
    }

    /// `pods` or `pods/log`, as rules name it.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Kubernetes' Forbidden text: `pods "x" is forbidden: User "alice"
    /// cannot get resource "pods" in API group "" in the namespace "default"`.
    pub fn forbidden_message(&self, user: &UserInfo) -> String {
        let group_resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let object = if self.name.is_empty() {
            group_resource
        } else {
            format!("{group_resource} {:?}", self.name)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "{object} is forbidden: User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            user.name,
            self.verb,
            self.resource_path(),
            self.group
        )
    }
}

pub(crate) fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
    if !any(&rule.verbs, &attrs.verb) || !any(&rule.api_groups, &attrs.group) {
        return false;
    }
    let path = attrs.resource_path();
    let resource_ok = rule.resources.iter().any(|r| {
        r == "*" || *r == path || (!attrs.subresource.is_empty() && *r == format!("*/{}", attrs.subresource))
    });
    resource_ok && (rule.resource_names.is_empty() || rule.resource_names.contains(&attrs.name))
}
