//! The routing table: what a request's host and path reach, worked out from
//! the Ingresses this controller serves and the Services and Endpoints they
//! name. Pure: built from the caches on every change, read by every request.
//!
//! Matching, as Kubernetes describes it:
//! * host: an exact rule host first, then a `*.suffix` wildcard (one label
//!   only), then rules without a host; a host whose rules have no matching
//!   path falls through to the next of those, then to `defaultBackend`.
//! * path: the longest matching path wins; at equal length Exact before
//!   Prefix. Prefix matches by `/`-separated elements (`/foo` matches `/foo`
//!   and `/foo/bar`, not `/foobar`; a trailing `/` is ignored);
//!   ImplementationSpecific is treated as Prefix.
//! * between Ingresses, the older one (then namespace/name) wins a tie, and
//!   the older Ingress's `defaultBackend` is the one used.

use rkube_api::core::v1::{Endpoints, Service};
use rkube_api::networking::v1::{Ingress, IngressBackend};
use rkube_api::Resource;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One Service port behind an Ingress, with its ready endpoints.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs and error pages.
    pub name: String,
    /// Ready pod addresses, sorted; empty: answered with 503.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Self {
        Backend {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next ready endpoint, round-robin; None when there is none.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[i % self.endpoints.len()])
    }
}

/// What a problem with an Ingress is about, for its Warning event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    /// The event's reason (`ServiceNotFound`, `PortNotFound`, `SecretNotFound`, ...).
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug)]
struct PathRule {
    path: String,
    exact: bool,
    backend: Arc<Backend>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        if self.exact {
            return path == self.path;
        }
        let prefix = self.path.trim_end_matches('/');
        prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Length of the matched path, trailing `/` of a Prefix not counted.
    fn len(&self) -> usize {
        if self.exact {
            self.path.len()
        } else {
            self.path.trim_end_matches('/').len()
        }
    }
}

#[derive(Debug, Default)]
struct HostRules(Vec<PathRule>);

impl HostRules {
    fn find(&self, path: &str) -> Option<&Arc<Backend>> {
        // sorted by precedence: the first match is the best one
        self.0.iter().find(|r| r.matches(path)).map(|r| &r.backend)
    }

    fn sort(&mut self) {
        // stable: among equals, the older Ingress (added first) stays first
        self.0
            .sort_by(|a, b| b.len().cmp(&a.len()).then(b.exact.cmp(&a.exact)));
    }
}

/// What a request reaches.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, HostRules>,
    /// By the suffix after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<String, HostRules>,
    any: HostRules,
    default_backend: Option<Arc<Backend>>,
}

impl RouteTable {
    /// The backend of a request for `host` (Host header, any port removed)
    /// and `path`; None: no rule and no default backend (404).
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let host = crate::proxy::lower_case(host.trim_end_matches('.'));
        let exact = self.exact.get(host.as_ref());
        let wildcard = host
            .split_once('.')
            .and_then(|(_, suffix)| self.wildcard.get(suffix));
        exact
            .into_iter()
            .chain(wildcard)
            .chain([&self.any])
            .find_map(|rules| rules.find(path))
            .or(self.default_backend.as_ref())
    }

    /// How many host and path rules the table holds (for logs).
    pub fn len(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain([&self.any])
            .map(|r| r.0.len())
            .sum::<usize>()
            + usize::from(self.default_backend.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves Ingress backends to Service ports and their ready endpoints.
pub struct Resolver<'a> {
    pub service: &'a dyn Fn(&str, &str) -> Option<Arc<Service>>,
    pub endpoints: &'a dyn Fn(&str, &str) -> Option<Arc<Endpoints>>,
}

impl Resolver<'_> {
    /// The backend for `b` in `namespace`; a missing Service or port is a
    /// problem (reported) and a backend without endpoints (answered 503), so the
    /// rule still shadows less specific ones as the user wrote it.
    fn backend(
        &self,
        namespace: &str,
        b: &IngressBackend,
        ingress: &str,
        problems: &mut Vec<Problem>,
    ) -> Arc<Backend> {
        let Some(svc_ref) = &b.service else {
            let what = b
                .resource
                .as_ref()
                .map(|r| format!("{} {}", r.kind, r.name))
                .unwrap_or_default();
            problems.push(Problem {
                ingress: ingress.into(),
                reason: "UnsupportedBackend",
                message: format!(
                    "resource backend {what} is not supported by rkube-ingress; only Services are"
                ),
            });
            return Arc::new(Backend::new(what, vec![]));
        };
        let port = svc_ref.port.clone().unwrap_or_default();
        let port_text = if port.name.is_empty() {
            port.number.to_string()
        } else {
            port.name.clone()
        };
        let name = format!("{namespace}/{}:{port_text}", svc_ref.name);
        let mut problem = |reason, message| {
            problems.push(Problem {
                ingress: ingress.into(),
                reason,
                message,
            })
        };
        let Some(svc) = (self.service)(namespace, &svc_ref.name) else {
            problem(
                "ServiceNotFound",
                format!("service \"{namespace}/{}\" not found", svc_ref.name),
            );
            return Arc::new(Backend::new(name, vec![]));
        };
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.r#type == "ExternalName" {
            problem(
                "UnsupportedBackend",
                format!("service \"{namespace}/{}\" is an ExternalName Service, which rkube-ingress does not proxy to", svc_ref.name),
            );
            return Arc::new(Backend::new(name, vec![]));
        }
        let svc_port = spec.ports.iter().find(|p| {
            (!port.name.is_empty() && p.name == port.name) || (port.name.is_empty() && p.port == port.number)
        });
        let Some(svc_port) = svc_port else {
            problem(
                "PortNotFound",
                format!("service \"{namespace}/{}\" has no port {port_text}", svc_ref.name),
            );
            return Arc::new(Backend::new(name, vec![]));
        };
        let mut ready: Vec<SocketAddr> = (self.endpoints)(namespace, &svc_ref.name)
            .iter()
            .flat_map(|e| e.subsets.clone())
            .flat_map(|s| {
                let port = s
                    .ports
                    .iter()
                    .find(|p| p.name == svc_port.name && matches!(p.protocol.as_str(), "" | "TCP"))
                    .and_then(|p| u16::try_from(p.port).ok());
                s.addresses
                    .iter()
                    .filter_map(|a| Some(SocketAddr::new(a.ip.parse().ok()?, port?)))
                    .collect::<Vec<_>>()
            })
            .collect();
        ready.sort();
        ready.dedup();
        Arc::new(Backend::new(name, ready))
    }

    /// The table for `ingresses` (those this controller serves), and every
    /// problem found on the way. Ingresses are taken oldest first.
    pub fn table(&self, ingresses: &[Arc<Ingress>]) -> (RouteTable, Vec<Problem>) {
        let mut table = RouteTable::default();
        let mut problems = Vec::new();
        for ing in by_age(ingresses) {
            let key = ing.key();
            let ns = ing.namespace();
            let spec = ing.spec.clone().unwrap_or_default();
            if let Some(b) = &spec.default_backend {
                let backend = self.backend(ns, b, &key, &mut problems);
                table.default_backend.get_or_insert(backend);
            }
            for rule in &spec.rules {
                let host = rule.host.to_ascii_lowercase();
                let rules = if host.is_empty() {
                    &mut table.any
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    table.wildcard.entry(suffix.to_string()).or_default()
                } else {
                    table.exact.entry(host).or_default()
                };
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let Some(b) = &p.backend else { continue };
                    let path = if p.path.is_empty() {
                        "/".to_string()
                    } else {
                        p.path.clone()
                    };
                    rules.0.push(PathRule {
                        path,
                        exact: p.path_type.as_deref() == Some("Exact"),
                        backend: self.backend(ns, b, &key, &mut problems),
                    });
                }
            }
        }
        for rules in table
            .exact
            .values_mut()
            .chain(table.wildcard.values_mut())
            .chain([&mut table.any])
        {
            rules.sort();
        }
        (table, problems)
    }
}

/// Oldest first, then by namespace/name: the order conflicts are settled in.
pub fn by_age(ingresses: &[Arc<Ingress>]) -> Vec<&Arc<Ingress>> {
    let mut v: Vec<&Arc<Ingress>> = ingresses.iter().collect();
    v.sort_by(|a, b| {
        a.metadata()
            .creation_timestamp
            .cmp(&b.metadata().creation_timestamp)
            .then_with(|| a.key().cmp(&b.key()))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceSpec};

    fn service(name: &str, port: i32, port_name: &str) -> Arc<Service> {
        let mut s = Service::default();
        s.metadata_mut().name = name.into();
        s.metadata_mut().namespace = "default".into();
        s.spec = Some(ServiceSpec {
            ports: vec![ServicePort {
                name: port_name.into(),
                port,
                ..Default::default()
            }],
            ..Default::default()
        });
        Arc::new(s)
    }

    fn endpoints(name: &str, ips: &[&str], port: i32, port_name: &str) -> Arc<Endpoints> {
        let mut e = Endpoints::default();
        e.metadata_mut().name = name.into();
        e.subsets = vec![EndpointSubset {
            addresses: ips
                .iter()
                .map(|ip| EndpointAddress {
                    ip: ip.to_string(),
                    ..Default::default()
                })
                .collect(),
            not_ready_addresses: vec![EndpointAddress {
                ip: "10.0.9.9".into(),
                ..Default::default()
            }],
            ports: vec![EndpointPort {
                name: port_name.into(),
                port,
                ..Default::default()
            }],
        }];
        Arc::new(e)
    }

    fn ingress(name: &str, created: &str, yaml: &str) -> Arc<Ingress> {
        let mut ing: Ingress = serde_yaml::from_str(yaml).unwrap();
        ing.metadata_mut().name = name.into();
        ing.metadata_mut().namespace = "default".into();
        ing.metadata_mut().creation_timestamp = created.into();
        Arc::new(ing)
    }

    fn table(ingresses: &[Arc<Ingress>]) -> (RouteTable, Vec<Problem>) {
        let services = [
            service("a", 80, "http"),
            service("b", 8080, ""),
            service("c", 80, "web"),
        ];
        let eps = [
            endpoints("a", &["10.0.0.1", "10.0.0.2"], 8000, "http"),
            endpoints("b", &["10.0.1.1"], 9000, ""),
            endpoints("c", &[], 80, "web"),
        ];
        let service = |ns: &str, n: &str| {
            services
                .iter()
                .find(|s| s.namespace() == ns && s.name() == n)
                .cloned()
        };
        let endpoints = |_: &str, n: &str| eps.iter().find(|e| e.name() == n).cloned();
        Resolver {
            service: &service,
            endpoints: &endpoints,
        }
        .table(ingresses)
    }

    fn to(t: &RouteTable, host: &str, path: &str) -> String {
        t.route(host, path)
            .map(|b| b.name.clone())
            .unwrap_or_else(|| "404".into())
    }

    const SVC_A: &str = "{service: {name: a, port: {number: 80}}}";
    const SVC_B: &str = "{service: {name: b, port: {number: 8080}}}";

    #[test]
    fn hosts_exact_then_wildcard_then_any_then_default() {
        let ing = ingress(
            "web",
            "2026-01-01T00:00:00Z",
            &format!(
                "spec:
  defaultBackend: {{service: {{name: c, port: {{name: web}}}}}}
  rules:
  - host: foo.example.com
    http: {{paths: [{{path: /api, pathType: Prefix, backend: {SVC_A}}}]}}
  - host: '*.example.com'
    http: {{paths: [{{path: /, pathType: Prefix, backend: {SVC_B}}}]}}
  - http: {{paths: [{{path: /any, pathType: Exact, backend: {SVC_A}}}]}}
"
            ),
        );
        let (t, problems) = table(&[ing]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(to(&t, "foo.example.com", "/api/v1"), "default/a:80");
        assert_eq!(to(&t, "FOO.example.com.", "/api"), "default/a:80");
        // the exact host has no rule for /: the wildcard's / takes it
        assert_eq!(to(&t, "foo.example.com", "/"), "default/b:8080");
        assert_eq!(to(&t, "bar.example.com", "/x"), "default/b:8080");
        // a wildcard covers one label only
        assert_eq!(to(&t, "a.b.example.com", "/x"), "default/c:web");
        assert_eq!(to(&t, "other.org", "/any"), "default/a:80");
        assert_eq!(to(&t, "other.org", "/any/more"), "default/c:web");
        let (t, _) = table(&[ingress(
            "x",
            "",
            &format!(
                "spec: {{rules: [{{http: {{paths: [{{path: /, pathType: Prefix, backend: {SVC_A}}}]}}}}]}}"
            ),
        )]);
        assert_eq!(to(&t, "anything", "/z"), "default/a:80");
        let (t, _) = table(&[ingress(
            "x",
            "",
            &format!("spec: {{rules: [{{host: h, http: {{paths: [{{path: /p, pathType: Prefix, backend: {SVC_A}}}]}}}}]}}"),
        )]);
        assert_eq!(to(&t, "h", "/q"), "404");
        assert_eq!(to(&t, "i", "/p"), "404");
    }

    #[test]
    fn paths_longest_first_exact_before_prefix_by_elements() {
        let ing = ingress(
            "web",
            "",
            &format!(
                "spec:
  rules:
  - http:
      paths:
      - {{path: /foo, pathType: Prefix, backend: {SVC_A}}}
      - {{path: /foo/bar/, pathType: ImplementationSpecific, backend: {SVC_B}}}
      - {{path: /foo, pathType: Exact, backend: {SVC_B}}}
"
            ),
        );
        let (t, _) = table(&[ing]);
        assert_eq!(to(&t, "h", "/foo"), "default/b:8080");
        assert_eq!(to(&t, "h", "/foo/"), "default/a:80");
        assert_eq!(to(&t, "h", "/foo/baz"), "default/a:80");
        assert_eq!(to(&t, "h", "/foo/bar"), "default/b:8080");
        assert_eq!(to(&t, "h", "/foo/bar/x"), "default/b:8080");
        assert_eq!(to(&t, "h", "/foo/barbaz"), "default/a:80");
        assert_eq!(to(&t, "h", "/foobar"), "404");
    }

    #[test]
    fn older_ingress_wins_ties_and_endpoints_round_robin() {
        let rule = |svc: &str| {
            format!(
                "spec: {{defaultBackend: {svc}, rules: [{{host: h, http: {{paths: [{{path: /, pathType: Prefix, backend: {svc}}}]}}}}]}}"
            )
        };
        let new = ingress("a-new", "2026-02-01T00:00:00Z", &rule(SVC_B));
        let old = ingress("z-old", "2026-01-01T00:00:00Z", &rule(SVC_A));
        let (t, _) = table(&[new, old]);
        let b = t.route("h", "/").unwrap();
        assert_eq!(b.name, "default/a:80");
        // ready addresses only, on the endpoint port of the Service port's name
        let picks: Vec<String> = (0..4).map(|_| b.pick().unwrap().to_string()).collect();
        assert_eq!(
            picks,
            ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.1:8000", "10.0.0.2:8000"]
        );
        assert_eq!(t.route("other", "/").unwrap().name, "default/a:80");
    }

    #[test]
    fn missing_services_and_ports_are_problems_of_their_ingress_only() {
        let bad = ingress(
            "bad",
            "2026-01-01T00:00:00Z",
            "spec: {rules: [{host: bad, http: {paths: [
               {path: /gone, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}},
               {path: /port, pathType: Prefix, backend: {service: {name: a, port: {name: nope}}}}]}}]}",
        );
        let good = ingress(
            "good",
            "2026-01-02T00:00:00Z",
            &format!("spec: {{rules: [{{host: good, http: {{paths: [{{path: /, pathType: Prefix, backend: {SVC_A}}}]}}}}]}}"),
        );
        let (t, problems) = table(&[bad, good]);
        assert_eq!(
            problems,
            [
                Problem {
                    ingress: "default/bad".into(),
                    reason: "ServiceNotFound",
                    message: "service \"default/gone\" not found".into()
                },
                Problem {
                    ingress: "default/bad".into(),
                    reason: "PortNotFound",
                    message: "service \"default/a\" has no port nope".into()
                },
            ]
        );
        // the broken rules answer 503 (no endpoints); the other Ingress is untouched
        assert!(t.route("bad", "/gone").unwrap().pick().is_none());
        assert!(t.route("bad", "/port/x").unwrap().pick().is_none());
        assert_eq!(
            t.route("good", "/").unwrap().pick().unwrap().to_string(),
            "10.0.0.1:8000"
        );
        // a Service with no ready endpoints is no problem of the Ingress, just 503
        let (t, problems) = table(&[ingress(
            "c",
            "",
            "spec: {defaultBackend: {service: {name: c, port: {name: web}}}}",
        )]);
        assert!(problems.is_empty());
        assert!(t.route("x", "/").unwrap().pick().is_none());
    }
}
