//! The Service variables Kubernetes gives every container: for the `kubernetes` Service in
//! `default` always (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, ..., what
//! in-cluster clients read to find the API), and, unless the pod says
//! `enableServiceLinks: false`, for every Service of the pod's namespace with a cluster IP
//! (`WEB_SERVICE_HOST`, `WEB_PORT_80_TCP_ADDR`, ... as Docker links named them). They come
//! before the container's own `envFrom` and `env`, which may override them.

use crate::container_config::ConfigError;
use rkube_api::core::v1::{Pod, Service};
use rkube_client::{Api, Client, ListParams};

/// The Services whose variables `pod`'s containers get, read from the apiserver.
pub async fn services_for(client: &Client, pod: &Pod) -> Result<Vec<Service>, ConfigError> {
    let ns = pod
        .metadata
        .as_ref()
        .map(|m| m.namespace.as_str())
        .unwrap_or_default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut services = Vec::new();
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            ConfigError(format!(
                "listing the Services of namespace {ns} for their variables: {e}"
            ))
        })?;
        services = list.items;
    }
    if !links || ns != "default" {
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let master = api.get_opt("kubernetes").await.map_err(|e| {
            ConfigError(format!(
                "reading Service default/kubernetes for its variables: {e}"
            ))
        })?;
        services.extend(master);
    }
    Ok(services)
}

/// `my-svc` → `MY_SVC`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// The variables of `services`, in name order.
pub fn variables(services: &[Service]) -> Vec<(String, String)> {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default());
    let mut out = Vec::new();
    for svc in sorted {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_str();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = env_name(svc.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default());
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        if let Some(first) = spec.ports.first() {
            out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in spec.ports.iter().filter(|p| !p.name.is_empty()) {
            out.push((
                format!("{name}_SERVICE_PORT_{}", env_name(&p.name)),
                p.port.to_string(),
            ));
        }
        for (i, p) in spec.ports.iter().enumerate() {
            let proto = if p.protocol.is_empty() {
                "tcp".to_string()
            } else {
                p.protocol.to_lowercase()
            };
            let url = format!("{proto}://{ip}:{}", p.port);
            if i == 0 {
                out.push((format!("{name}_PORT"), url.clone()));
            }
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((prefix.clone(), url));
            out.push((format!("{prefix}_PROTO"), proto.clone()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_as_kubernetes_names_them() {
        let services: Vec<Service> = serde_yaml::from_str(
            r#"
- metadata: {name: kubernetes, namespace: default}
  spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, protocol: TCP}]}
- metadata: {name: web-api, namespace: shop}
  spec: {clusterIP: 10.96.0.20, ports: [{port: 80}, {name: metrics, port: 9090, protocol: UDP}]}
- metadata: {name: db, namespace: shop}
  spec: {clusterIP: None, ports: [{port: 5432}]}
"#,
        )
        .unwrap();
        let vars = variables(&services);
        let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(get("WEB_API_SERVICE_PORT"), Some("80"));
        assert_eq!(get("WEB_API_SERVICE_PORT_METRICS"), Some("9090"));
        assert_eq!(get("WEB_API_PORT_9090_UDP"), Some("udp://10.96.0.20:9090"));
        assert_eq!(get("WEB_API_PORT_9090_UDP_PROTO"), Some("udp"));
        assert!(
            get("DB_SERVICE_HOST").is_none(),
            "headless Services have no variables"
        );
    }
}
