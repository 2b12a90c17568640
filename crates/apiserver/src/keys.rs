//! Where objects live in the store: `{group|core}/{plural}/{namespace}/{name}`.
//! Its own module because the handlers, admission, node restriction and the
//! authorizers all address the store and must not import one another for it.

use rkube_api::ResourceInfo;

/// The storage key of an object: `{group|core}/{plural}/{namespace}/{name}`,
/// or without the namespace for cluster-scoped kinds.
pub fn storage_key(info: &ResourceInfo, namespace: &str, name: &str) -> String {
    format!("{}{name}", storage_prefix(info, namespace))
}

/// The key prefix of a collection; an empty namespace means all of them.
pub fn storage_prefix(info: &ResourceInfo, namespace: &str) -> String {
    let group = if info.group.is_empty() { "core" } else { info.group };
    if info.namespaced && !namespace.is_empty() {
        format!("{group}/{}/{namespace}/", info.plural)
    } else {
        format!("{group}/{}/", info.plural)
    }
}
