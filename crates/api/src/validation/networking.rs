//! networking.k8s.io: Ingresses and IngressClasses, in Kubernetes' words
//! (pkg/apis/networking/validation).

use super::meta::{
    is_dns1123_label, is_dns1123_subdomain, is_port_name, validate_meta, validate_port, NameRule,
    DNS1123_SUBDOMAIN_MSG,
};
use super::{Errors, FieldError, Validate};
use crate::networking::v1::{HttpIngressPath, Ingress, IngressBackend, IngressClass, IngressSpec};

/// The annotation that makes an IngressClass the default one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated annotation that named an Ingress's class before `ingressClassName`.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];
const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123')";

/// `*.example.com`: one wildcard label, then a DNS subdomain.
pub fn is_wildcard_dns1123_subdomain(s: &str) -> bool {
    s.strip_prefix("*.").is_some_and(is_dns1123_subdomain)
}

fn validate_host(host: &str, f: String, e: &mut Errors) {
    if host.contains('*') {
        if !is_wildcard_dns1123_subdomain(host) {
            e.invalid(f, host, WILDCARD_MSG);
        }
    } else if !is_dns1123_subdomain(host) {
        e.invalid(f, host, DNS1123_SUBDOMAIN_MSG);
    }
}

fn validate_backend(b: &IngressBackend, f: &str, e: &mut Errors) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => e.invalid(f, "", "cannot set both resource and service backends"),
        (None, Some(r)) => {
            if r.kind.is_empty() {
                e.required(format!("{f}.resource.kind"), "kind is required");
            }
            if r.name.is_empty() {
                e.required(format!("{f}.resource.name"), "name is required");
            }
        }
        (Some(s), None) => {
            let name_ok = is_dns1123_label(&s.name) && s.name.as_bytes()[0].is_ascii_lowercase();
            if s.name.is_empty() {
                e.required(format!("{f}.service.name"), "");
            } else if !name_ok {
                e.invalid(format!("{f}.service.name"), &s.name, DNS1035_MSG);
            }
            let port = s.port.clone().unwrap_or_default();
            match (port.name.is_empty(), port.number == 0) {
                (false, false) => e.invalid(f, "", "cannot set both port name & port number"),
                (false, true) if !is_port_name(&port.name) => e.invalid(
                    format!("{f}.service.port.name"),
                    &port.name,
                    "must contain only lowercase letters, digits and '-', at most 15 characters",
                ),
                (false, true) => {}
                (true, false) => validate_port(port.number, format!("{f}.service.port.number"), e),
                (true, true) => e.required(f, "port name or number is required"),
            }
        }
        (None, None) => e.invalid(f, "", "resource or service backend is required"),
    }
}

fn validate_path(p: &HttpIngressPath, f: &str, e: &mut Errors) {
    let Some(path_type) = p.path_type.as_deref() else {
        e.required(format!("{f}.pathType"), "pathType must be specified");
        return;
    };
    match path_type {
        "Exact" | "Prefix" => {
            if !p.path.starts_with('/') {
                e.invalid(format!("{f}.path"), &p.path, "must be an absolute path");
            }
            for seq in INVALID_PATH_SEQUENCES.iter().filter(|s| p.path.contains(**s)) {
                e.invalid(format!("{f}.path"), &p.path, format!("must not contain '{seq}'"));
            }
            for suffix in INVALID_PATH_SUFFIXES.iter().filter(|s| p.path.ends_with(**s)) {
                e.invalid(
                    format!("{f}.path"),
                    &p.path,
                    format!("cannot end with '{suffix}'"),
                );
            }
        }
        "ImplementationSpecific" => {
            if !p.path.is_empty() && !p.path.starts_with('/') {
                e.invalid(format!("{f}.path"), &p.path, "must be an absolute path");
            }
        }
        other => e.not_supported(format!("{f}.pathType"), other, PATH_TYPES),
    }
    match &p.backend {
        Some(b) => validate_backend(b, &format!("{f}.backend"), e),
        None => e.invalid(
            format!("{f}.backend"),
            "",
            "resource or service backend is required",
        ),
    }
}

fn validate_spec(spec: &IngressSpec, e: &mut Errors) {
    if spec.rules.is_empty() && spec.default_backend.is_none() {
        e.invalid(
            "spec",
            "[]",
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    if let Some(b) = &spec.default_backend {
        validate_backend(b, "spec.defaultBackend", e);
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        if !rule.host.is_empty() {
            if rule.host.parse::<std::net::IpAddr>().is_ok() {
                e.invalid(
                    format!("{f}.host"),
                    &rule.host,
                    "must be a DNS name, not an IP address",
                );
            }
            validate_host(&rule.host, format!("{f}.host"), e);
        }
        if let Some(http) = &rule.http {
            if http.paths.is_empty() {
                e.required(format!("{f}.http.paths"), "");
            }
            for (j, p) in http.paths.iter().enumerate() {
                validate_path(p, &format!("{f}.http.paths[{j}]"), e);
            }
        }
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        for (j, host) in tls.hosts.iter().enumerate() {
            validate_host(host, format!("spec.tls[{i}].hosts[{j}]"), e);
        }
        if !tls.secret_name.is_empty() && !is_dns1123_subdomain(&tls.secret_name) {
            e.invalid(
                format!("spec.tls[{i}].secretName"),
                &tls.secret_name,
                DNS1123_SUBDOMAIN_MSG,
            );
        }
    }
    if let Some(class) = &spec.ingress_class_name {
        if !is_dns1123_subdomain(class) {
            e.invalid("spec.ingressClassName", class, DNS1123_SUBDOMAIN_MSG);
        }
    }
}

impl Validate for Ingress {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_spec(&self.spec.clone().unwrap_or_default(), &mut e);
        e.0
    }
}

/// `rkube.io/ingress`: a domain, a slash, a path.
fn is_domain_prefixed_path(s: &str) -> bool {
    match s.split_once('/') {
        Some((domain, path)) => {
            is_dns1123_subdomain(domain)
                && !path.is_empty()
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&b))
        }
        None => false,
    }
}

impl Validate for IngressClass {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let spec = self.spec.clone().unwrap_or_default();
        if spec.controller.len() > 250 {
            e.invalid("spec.controller", &spec.controller, "must have at most 250 bytes");
        } else if spec.controller.is_empty() {
            e.required("spec.controller", "");
        } else if !is_domain_prefixed_path(&spec.controller) {
            e.invalid(
                "spec.controller",
                &spec.controller,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            );
        }
        if let Some(p) = &spec.parameters {
            if p.kind.is_empty() {
                e.required("spec.parameters.kind", "kind is required");
            }
            if p.name.is_empty() {
                e.required("spec.parameters.name", "name is required");
            }
        }
        e.0
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let controller = |c: &IngressClass| c.spec.as_ref().map(|s| s.controller.clone()).unwrap_or_default();
        if controller(self) != controller(old) {
            e.invalid("spec.controller", controller(self), "field is immutable");
        }
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networking::v1::{
        HttpIngressRuleValue, IngressClassSpec, IngressRule, IngressServiceBackend, IngressTls,
        ServiceBackendPort,
    };

    fn backend(name: &str, number: i32, port_name: &str) -> Option<IngressBackend> {
        Some(IngressBackend {
            service: Some(IngressServiceBackend {
                name: name.into(),
                port: Some(ServiceBackendPort {
                    name: port_name.into(),
                    number,
                }),
            }),
            resource: None,
        })
    }

    fn ingress(paths: Vec<HttpIngressPath>) -> Ingress {
        Ingress {
            metadata: Some(crate::meta::v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(IngressSpec {
                rules: vec![IngressRule {
                    host: "foo.example.com".into(),
                    http: Some(HttpIngressRuleValue { paths }),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn path(p: &str, t: Option<&str>) -> HttpIngressPath {
        HttpIngressPath {
            path: p.into(),
            path_type: t.map(String::from),
            backend: backend("web", 80, ""),
        }
    }

    fn messages(ing: &Ingress) -> Vec<String> {
        ing.validate().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn ingress_paths_in_kubernetes_words() {
        assert!(messages(&ingress(vec![path("/", Some("Prefix"))])).is_empty());
        assert!(messages(&ingress(vec![path("", Some("ImplementationSpecific"))])).is_empty());
        assert_eq!(
            messages(&ingress(vec![path("/", None)])),
            ["spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"]
        );
        assert_eq!(
            messages(&ingress(vec![path("foo", Some("Exact"))])),
            ["spec.rules[0].http.paths[0].path: Invalid value: \"foo\": must be an absolute path"]
        );
        assert_eq!(
            messages(&ingress(vec![path("/a//b", Some("Prefix"))])),
            ["spec.rules[0].http.paths[0].path: Invalid value: \"/a//b\": must not contain '//'"]
        );
        assert_eq!(
            messages(&ingress(vec![path("/", Some("Regex"))])),
            ["spec.rules[0].http.paths[0].pathType: Unsupported value: supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\": got \"Regex\""]
        );
        assert_eq!(
            messages(&ingress(vec![])),
            ["spec.rules[0].http.paths: Required value"]
        );
    }

    #[test]
    fn ingress_backends_hosts_and_tls() {
        let mut ing = ingress(vec![path("/", Some("Prefix"))]);
        let spec = ing.spec.as_mut().unwrap();
        spec.rules[0].host = "*.example.com".into();
        spec.default_backend = backend("web", 0, "http");
        spec.tls = vec![IngressTls {
            hosts: vec!["*.example.com".into()],
            secret_name: "web-tls".into(),
        }];
        assert!(messages(&ing).is_empty(), "{:?}", messages(&ing));

        let spec = ing.spec.as_mut().unwrap();
        spec.rules[0].host = "10.0.0.1".into();
        spec.default_backend = backend("web", 80, "http");
        spec.rules[0].http.as_mut().unwrap().paths[0].backend = backend("Web", 0, "");
        spec.tls[0].hosts[0] = "a.*.com".into();
        let got = messages(&ing);
        assert!(
            got.contains(
                &"spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address"
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"spec.defaultBackend: Invalid value: \"\": cannot set both port name & port number"
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"spec.rules[0].http.paths[0].backend: Required value: port name or number is required"
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.iter().any(|m| m.starts_with(
                "spec.rules[0].http.paths[0].backend.service.name: Invalid value: \"Web\": a DNS-1035 label"
            )),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|m| m.starts_with("spec.tls[0].hosts[0]: Invalid value: \"a.*.com\": a wildcard")),
            "{got:?}"
        );

        let mut empty = ingress(vec![]);
        empty.spec.as_mut().unwrap().rules.clear();
        assert_eq!(
            messages(&empty),
            ["spec: Invalid value: \"[]\": either `defaultBackend` or `rules` must be specified"]
        );
    }

    #[test]
    fn ingress_class_controller() {
        let class = IngressClass {
            metadata: Some(crate::meta::v1::ObjectMeta {
                name: "rkube".into(),
                ..Default::default()
            }),
            spec: Some(IngressClassSpec {
                controller: "rkube.io/ingress".into(),
                parameters: None,
            }),
            ..Default::default()
        };
        assert!(class.validate().is_empty());
        let mut other = class.clone();
        other.spec.as_mut().unwrap().controller = "nginx".into();
        assert_eq!(
            other.validate()[0].to_string(),
            "spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"
        );
        assert_eq!(
            other.validate_update(&class)[0].to_string(),
            "spec.controller: Invalid value: \"nginx\": field is immutable"
        );
    }
}
