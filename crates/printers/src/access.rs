//! `get serviceaccounts` (NAME SECRETS AGE), `get roles|clusterroles` (NAME
//! CREATED AT) and `get rolebindings|clusterrolebindings` (NAME ROLE AGE,
//! wide adds USERS GROUPS SERVICEACCOUNTS), as kubectl prints them.

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::ServiceAccount;
use rkube_api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject};

impl TableRow for ServiceAccount {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string(
            "Secrets",
            "The number of secrets this service account references.",
        ),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        vec![
            meta.name,
            self.secrets.len().to_string(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

const ROLE_COLUMNS: &[Column] = &[Column::NAME, Column::CREATED_AT];

/// NAME and CREATED AT: the creation time itself, not an age.
fn name_created_at(meta: Option<&rkube_api::meta::v1::ObjectMeta>) -> Vec<String> {
    let meta = meta.cloned().unwrap_or_default();
    vec![meta.name, meta.creation_timestamp]
}

impl TableRow for Role {
    const COLUMNS: &'static [Column] = ROLE_COLUMNS;
    fn cells(&self, _wide: bool, _now: DateTime<Utc>) -> Vec<String> {
        name_created_at(self.metadata.as_ref())
    }
}

impl TableRow for ClusterRole {
    const COLUMNS: &'static [Column] = ROLE_COLUMNS;
    fn cells(&self, _wide: bool, _now: DateTime<Utc>) -> Vec<String> {
        name_created_at(self.metadata.as_ref())
    }
}

const BINDING_COLUMNS: &[Column] = &[
    Column::NAME,
    Column::string("Role", "The role the binding grants."),
    Column::AGE,
    Column::string("Users", "Users in the binding").wide(),
    Column::string("Groups", "Groups in the binding").wide(),
    Column::string("ServiceAccounts", "ServiceAccounts in the binding").wide(),
];

/// ROLE (`ClusterRole/view`), AGE, and the subjects by kind, as
/// `namespace:name` for service accounts.
fn binding_cells(
    meta: Option<&rkube_api::meta::v1::ObjectMeta>,
    role: Option<&RoleRef>,
    subjects: &[Subject],
    now: DateTime<Utc>,
) -> Vec<String> {
    let meta = meta.cloned().unwrap_or_default();
    let role = role.cloned().unwrap_or_default();
    let of_kind = |kind: &str| {
        subjects
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| match kind {
                "ServiceAccount" => format!("{}/{}", s.namespace, s.name),
                _ => s.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        meta.name,
        format!("{}/{}", role.kind, role.name),
        age(&meta.creation_timestamp, now),
        of_kind("User"),
        of_kind("Group"),
        of_kind("ServiceAccount"),
    ]
}

impl TableRow for RoleBinding {
    const COLUMNS: &'static [Column] = BINDING_COLUMNS;
    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        binding_cells(
            self.metadata.as_ref(),
            self.role_ref.as_ref(),
            &self.subjects,
            now,
        )
    }
}

impl TableRow for ClusterRoleBinding {
    const COLUMNS: &'static [Column] = BINDING_COLUMNS;
    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        binding_cells(
            self.metadata.as_ref(),
            self.role_ref.as_ref(),
            &self.subjects,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_show_the_role_and_subjects_by_kind() {
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let b: RoleBinding = serde_yaml::from_str(
            "metadata: {name: read, creationTimestamp: '2024-05-01T11:00:00Z'}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects:\n- {kind: User, name: alice}\n- {kind: Group, name: devs}\n- {kind: ServiceAccount, name: bot, namespace: ci}\n- {kind: User, name: bob}\n",
        )
        .unwrap();
        assert_eq!(
            b.cells(true, now),
            ["read", "ClusterRole/view", "60m", "alice, bob", "devs", "ci/bot"]
        );
        let r: Role =
            serde_yaml::from_str("metadata: {name: r, creationTimestamp: '2024-05-01T11:00:00Z'}\n").unwrap();
        assert_eq!(r.cells(false, now), ["r", "2024-05-01T11:00:00Z"]);
    }
}
