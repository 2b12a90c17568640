//! rkube-ingress: the built-in Ingress controller, one per node that should
//! take outside HTTP(S) traffic (as k3s ships one). It watches Ingresses,
//! IngressClasses, Services, Endpoints and kubernetes.io/tls Secrets through
//! the apiserver, serves the Ingresses of its class on the node's :80 and
//! :443 (HTTPS with certificates chosen by SNI), proxies each request
//! straight to a ready pod of the backend Service (no hop through the
//! Service address), and writes the address it serves on into the
//! Ingresses' `status.loadBalancer`.
//!
//! It writes nothing else but Events (an Ingress naming a missing Service,
//! port or Secret gets a Warning; its other rules and every other Ingress keep
//! working) and, when missing, its own default IngressClass. Syncs are
//! level-driven: every change rebuilds the whole routing table and the set of
//! certificates from the caches and swaps them in, so requests always see
//! one consistent version.

pub mod config;
pub mod h1;
pub mod proxy;
pub mod routes;
pub mod tls;

pub use config::{Config, Options};
use futures::{FutureExt, StreamExt};
use rkube_api::core::v1::{Endpoints, Node, Secret, Service};
use rkube_api::networking::v1::{
    Ingress, IngressClass, IngressClassSpec, IngressLoadBalancerIngress, IngressLoadBalancerStatus,
    IngressStatus,
};
use rkube_api::validation::{CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION};
use rkube_api::Resource;
use rkube_client::events::{EventType, Recorder};
use rkube_client::runtime::{Store, WatcherConfig};
use rkube_client::{Api, Client, Informer};
use routes::{Problem, Resolver};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often the loop runs without a change: retries status writes and the
/// default class, re-reads the node's address.
const RESYNC: Duration = Duration::from_secs(30);
/// How long a burst of changes may settle before a sync.
const MIN_SYNC_PERIOD: Duration = Duration::from_millis(50);

/// Runs until `shutdown` resolves: what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // bind first: a port in use is a configuration error, reported before anything starts
    let http = bind("--http-addr", config.http_addr).await?;
    let https = bind("--https-addr", config.https_addr).await?;
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let client = Client::for_daemon(&config.apiserver, config.kubeconfig.as_deref())?;
    let ingresses = Informer::new(Api::<Ingress>::all(client.clone()), WatcherConfig::default());
    let classes = Informer::new(Api::<IngressClass>::all(client.clone()), WatcherConfig::default());
    let services = Informer::new(Api::<Service>::all(client.clone()), WatcherConfig::default());
    let endpoints = Informer::new(Api::<Endpoints>::all(client.clone()), WatcherConfig::default());
    let secrets = Informer::new(
        Api::<Secret>::all(client.clone()),
        WatcherConfig {
            field_selector: "type=kubernetes.io/tls".into(),
            ..Default::default()
        },
    );
    let mut changes = futures::stream::select_all([
        ingresses.subscribe().map(|_| ()).boxed(),
        classes.subscribe().map(|_| ()).boxed(),
        services.subscribe().map(|_| ()).boxed(),
        endpoints.subscribe().map(|_| ()).boxed(),
        secrets.subscribe().map(|_| ()).boxed(),
    ]);
    ingresses.start()?;
    classes.start()?;
    services.start()?;
    endpoints.start()?;
    secrets.start()?;
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        _ = async {
            ingresses.wait_until_synced().await;
            classes.wait_until_synced().await;
            services.wait_until_synced().await;
            endpoints.wait_until_synced().await;
            secrets.wait_until_synced().await;
        } => {}
    }

    let proxy = Arc::new(proxy::Proxy::new());
    let resolver = Arc::new(tls::SniResolver::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(listener) = http {
        tokio::spawn(proxy::serve(listener, None, proxy.clone(), stopped.clone()));
    }
    if let Some(listener) = https {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone())?);
        tokio::spawn(proxy::serve(
            listener,
            Some(acceptor),
            proxy.clone(),
            stopped.clone(),
        ));
    }
    let mut controller = IngressController {
        config: config.clone(),
        client: client.clone(),
        recorder: Recorder::new(client, "rkube-ingress", &config.node_name),
        ingresses: ingresses.store(),
        classes: classes.store(),
        services: services.store(),
        endpoints: endpoints.store(),
        secrets: secrets.store(),
        reported: HashSet::new(),
        node_address: None,
    };
    tracing::info!(
        node = %config.node_name,
        http = ?config.http_addr,
        https = ?config.https_addr,
        class = %config.ingress_class,
        "caches synced; serving Ingresses"
    );
    let mut ready = false;
    loop {
        controller.sync(&proxy, &resolver).await;
        if !ready {
            ready = true;
            rkube_daemon::ready();
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changes.next() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(MIN_SYNC_PERIOD).await;
        while let Some(Some(())) = changes.next().now_or_never() {}
    }
    rkube_daemon::notify_systemd("STOPPING=1");
    let _ = stop.send(true);
    Ok(())
}

async fn bind(
    flag: &str,
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    use anyhow::Context;
    match addr {
        Some(a) => Ok(Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("{flag} {a}"))?,
        )),
        None => Ok(None),
    }
}

/// The control half: which Ingresses are ours, their routes and
/// certificates, their status and their problems.
struct IngressController {
    config: Config,
    client: Client,
    recorder: Recorder,
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    secrets: Store<Secret>,
    /// Problems already written as events, so a sync does not repeat them.
    reported: HashSet<Problem>,
    node_address: Option<String>,
}

impl IngressController {
    /// Installs the routes and certificates first (requests see them at
    /// once), then reports problems and writes status.
    async fn sync(&mut self, proxy: &proxy::Proxy, resolver: &tls::SniResolver) {
        self.ensure_class().await;
        let classes = self.classes.list();
        let all = self.ingresses.list();
        let ours: Vec<Arc<Ingress>> = all
            .iter()
            .filter(|i| served_by(i, &classes, &self.config.controller_name))
            .cloned()
            .collect();
        let service = |ns: &str, n: &str| self.services.get_namespaced(ns, n);
        let endpoints = |ns: &str, n: &str| self.endpoints.get_namespaced(ns, n);
        let (table, mut problems) = Resolver {
            service: &service,
            endpoints: &endpoints,
        }
        .table(&ours);
        let (certs, tls_problems) = tls::certificates(&ours, |ns, n| self.secrets.get_namespaced(ns, n));
        problems.extend(tls_problems);
        tracing::debug!(rules = table.len(), certificates = certs.len(), "routes synced");
        proxy.set_table(table);
        resolver.set(certs);
        self.report(&problems).await;
        self.write_status(&all, &ours).await;
    }

    /// Creates the controller's IngressClass, as the default class unless
    /// another one is, when no class of that name exists.
    async fn ensure_class(&self) {
        let name = &self.config.ingress_class;
        if self.classes.get(name).is_some() {
            return;
        }
        let another_default = self.classes.list().iter().any(|c| is_default(c));
        let mut class = IngressClass {
            spec: Some(IngressClassSpec {
                controller: self.config.controller_name.clone(),
                parameters: None,
            }),
            ..Default::default()
        };
        class.set_type_meta();
        class.metadata_mut().name = name.clone();
        if !another_default {
            class
                .metadata_mut()
                .annotations
                .insert(DEFAULT_CLASS_ANNOTATION.into(), "true".into());
        }
        match Api::<IngressClass>::all(self.client.clone()).create(&class).await {
            Ok(_) => tracing::info!(class = %name, default = !another_default, "created the IngressClass"),
            Err(e) if e.is_already_exists() => {}
            Err(e) => tracing::warn!(class = %name, "cannot create the IngressClass (retrying): {e}"),
        }
    }

    /// One Warning event per new problem; a problem fixed and back is reported again.
    async fn report(&mut self, problems: &[Problem]) {
        let now: HashSet<Problem> = problems.iter().cloned().collect();
        for p in problems {
            if self.reported.contains(p) {
                continue;
            }
            tracing::warn!(ingress = %p.ingress, reason = p.reason, "{}", p.message);
            let Some(ing) = self.ingresses.get(&p.ingress) else {
                continue;
            };
            if let Err(e) = self
                .recorder
                .publish(&*ing, EventType::Warning, p.reason, &p.message)
                .await
            {
                tracing::debug!("cannot record an event: {e}");
            }
        }
        self.reported = now;
    }

    /// Where the served Ingresses are reachable: `--publish-address`, the
    /// `--publish-service`'s load-balancer addresses, or the node's address.
    async fn addresses(&mut self) -> Vec<IngressLoadBalancerIngress> {
        if let Some(ip) = self.config.publish_address {
            return vec![IngressLoadBalancerIngress {
                ip: ip.to_string(),
                ..Default::default()
            }];
        }
        if let Some((ns, name)) = &self.config.publish_service {
            let lb = self
                .services
                .get_namespaced(ns, name)
                .and_then(|s| s.status.clone())
                .and_then(|s| s.load_balancer)
                .map(|lb| lb.ingress)
                .unwrap_or_default();
            return lb
                .into_iter()
                .map(|i| IngressLoadBalancerIngress {
                    ip: i.ip,
                    hostname: i.hostname,
                    ports: vec![],
                })
                .collect();
        }
        if self.node_address.is_none() {
            match Api::<Node>::all(self.client.clone())
                .get(&self.config.node_name)
                .await
            {
                Ok(node) => self.node_address = node_address(&node),
                Err(e) => {
                    tracing::warn!(node = %self.config.node_name, "cannot read the node's address (retrying): {e}")
                }
            }
        }
        self.node_address
            .iter()
            .map(|ip| IngressLoadBalancerIngress {
                ip: ip.clone(),
                ..Default::default()
            })
            .collect()
    }

    /// Our Ingresses get our addresses; one that left our class loses them.
    async fn write_status(&mut self, all: &[Arc<Ingress>], ours: &[Arc<Ingress>]) {
        let addresses = self.addresses().await;
        let ours_keys: HashSet<String> = ours.iter().map(|i| i.key()).collect();
        for ing in all {
            let current = ing
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .map(|lb| lb.ingress.clone())
                .unwrap_or_default();
            let wanted = if ours_keys.contains(&ing.key()) {
                if addresses.is_empty() {
                    continue; // not known yet: leave it
                }
                addresses.clone()
            } else if !current.is_empty() && current == addresses {
                Vec::new()
            } else {
                continue;
            };
            if current == wanted {
                continue;
            }
            let api = Api::<Ingress>::namespaced(self.client.clone(), ing.namespace());
            let result = api
                .replace_status_with(ing.name(), |mut i| {
                    i.status = Some(IngressStatus {
                        load_balancer: Some(IngressLoadBalancerStatus {
                            ingress: wanted.clone(),
                        }),
                    });
                    i
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(ingress = %ing.key(), "cannot write status (retrying at the next sync): {e}");
            }
        }
    }
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata()
        .annotations
        .get(DEFAULT_CLASS_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Whether this controller serves `ing`: its class (by `ingressClassName`,
/// the old `kubernetes.io/ingress.class` annotation, or, with neither, the
/// default class) names `controller`.
pub fn served_by(ing: &Ingress, classes: &[Arc<IngressClass>], controller: &str) -> bool {
    let named = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| ing.metadata().annotations.get(CLASS_ANNOTATION).cloned());
    let class = match &named {
        Some(name) => classes.iter().find(|c| c.name() == name),
        None => classes.iter().find(|c| is_default(c)),
    };
    class.is_some_and(|c| c.spec.as_ref().is_some_and(|s| s.controller == controller))
}

/// The node's InternalIP, else its ExternalIP.
fn node_address(node: &Node) -> Option<String> {
    let addresses = node
        .status
        .as_ref()
        .map(|s| s.addresses.as_slice())
        .unwrap_or_default();
    ["InternalIP", "ExternalIP"]
        .iter()
        .find_map(|t| addresses.iter().find(|a| a.r#type == *t))
        .map(|a| a.address.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
        let mut c = IngressClass {
            spec: Some(IngressClassSpec {
                controller: controller.into(),
                parameters: None,
            }),
            ..Default::default()
        };
        c.metadata_mut().name = name.into();
        if default {
            c.metadata_mut()
                .annotations
                .insert(DEFAULT_CLASS_ANNOTATION.into(), "true".into());
        }
        Arc::new(c)
    }

    #[test]
    fn only_ingresses_of_our_class_are_served() {
        let ing = |yaml: &str| serde_yaml::from_str::<Ingress>(yaml).unwrap();
        let classes = [
            class("rkube", config::CONTROLLER, true),
            class("nginx", "k8s.io/ingress-nginx", false),
        ];
        let ours = |i: &Ingress| served_by(i, &classes, config::CONTROLLER);
        assert!(ours(&ing("spec: {ingressClassName: rkube}")));
        assert!(!ours(&ing("spec: {ingressClassName: nginx}")));
        assert!(!ours(&ing("spec: {ingressClassName: missing}")));
        assert!(ours(&ing("spec: {}")));
        assert!(!ours(&ing(
            "metadata: {annotations: {kubernetes.io/ingress.class: nginx}}\nspec: {}"
        )));
        let no_default = [class("rkube", config::CONTROLLER, false)];
        assert!(!served_by(&ing("spec: {}"), &no_default, config::CONTROLLER));
    }
}
