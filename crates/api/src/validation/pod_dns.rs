//! A pod's DNS settings: `dnsPolicy` with `dnsConfig`, `hostname` and
//! `subdomain`, checked as Kubernetes checks them (the kubelet builds the
//! pod's resolv.conf and /etc/hosts from them).

use super::meta::{is_dns1123_label, is_dns1123_subdomain, DNS1123_LABEL_MSG};
use super::Errors;
use crate::core::v1 as corev1;

/// Kubernetes' limits (validation.go): resolvers read at most 3 nameservers.
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCHES: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;

pub(super) fn validate_pod_dns(spec: &corev1::PodSpec, f: &str, errs: &mut Errors) {
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if !value.is_empty() && !is_dns1123_label(value) {
            errs.invalid(format!("{f}.{field}"), value, DNS1123_LABEL_MSG);
        }
    }
    let Some(c) = &spec.dns_config else {
        if spec.dns_policy == "None" {
            errs.required(
                format!("{f}.dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            );
        }
        return;
    };
    let cf = format!("{f}.dnsConfig");
    if spec.dns_policy == "None" && c.nameservers.is_empty() {
        errs.required(
            format!("{cf}.nameservers"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        );
    }
    if c.nameservers.len() > MAX_NAMESERVERS {
        errs.invalid(
            format!("{cf}.nameservers"),
            &c.nameservers,
            format!("must not have more than {MAX_NAMESERVERS} nameservers"),
        );
    }
    for (i, ns) in c.nameservers.iter().enumerate() {
        if ns.parse::<std::net::IpAddr>().is_err() {
            errs.invalid(format!("{cf}.nameservers[{i}]"), ns, "must be a valid IP address");
        }
    }
    if c.searches.len() > MAX_SEARCHES {
        errs.invalid(
            format!("{cf}.searches"),
            &c.searches,
            format!("must not have more than {MAX_SEARCHES} search paths"),
        );
    }
    let chars: usize = c.searches.iter().map(|s| s.len()).sum::<usize>() + c.searches.len().saturating_sub(1);
    if chars > MAX_SEARCH_CHARS {
        errs.invalid(
            format!("{cf}.searches"),
            &c.searches,
            format!(
                "must not have more than {MAX_SEARCH_CHARS} characters (including spaces) in the search list"
            ),
        );
    }
    for (i, s) in c.searches.iter().enumerate() {
        // a final dot is allowed: an absolute domain
        let d = s.strip_suffix('.').unwrap_or(s);
        if !is_dns1123_subdomain(d) {
            errs.invalid(
                format!("{cf}.searches[{i}]"),
                s,
                "must be a lowercase RFC 1123 subdomain (e.g. 'example.com')",
            );
        }
    }
    for (i, o) in c.options.iter().enumerate() {
        if o.name.is_empty() {
            errs.required(format!("{cf}.options[{i}].name"), "must not be empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::Validate;

    fn errors(yaml: &str) -> Vec<String> {
        use crate::defaults::Defaulting as _;
        let mut p: crate::core::v1::Pod = serde_yaml::from_str(yaml).unwrap();
        p.apply_defaults();
        p.validate().iter().map(|e| e.to_string()).collect()
    }

    const WEB: &str = "metadata: {name: web}\nspec:\n  containers: [{name: web, image: nginx}]\n";

    #[test]
    fn dns_config_is_required_with_policy_none_and_bounded() {
        assert_eq!(
            errors(&format!("{WEB}  dnsPolicy: None\n")),
            ["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]
        );
        assert_eq!(
            errors(&format!(
                "{WEB}  dnsPolicy: None\n  dnsConfig: {{nameservers: [1.1.1.1], searches: [corp.example., a.b], options: [{{name: ndots, value: '2'}}, {{name: edns0}}]}}\n"
            )),
            Vec::<String>::new()
        );
        let errs = errors(&format!(
            "{WEB}  hostname: Web_0\n  dnsConfig: {{nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, dns.example], searches: [Bad_Domain], options: [{{value: x}}]}}\n"
        ));
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0].starts_with("spec.hostname: Invalid value: \"Web_0\""),
            "{errs:#?}"
        );
        assert!(
            errs[1].contains("must not have more than 3 nameservers"),
            "{errs:#?}"
        );
        assert!(
            errs[2].starts_with("spec.dnsConfig.nameservers[3]: Invalid value"),
            "{errs:#?}"
        );
        assert!(errs[3].starts_with("spec.dnsConfig.searches[0]"), "{errs:#?}");
        assert!(
            errs[4].starts_with("spec.dnsConfig.options[0].name: Required"),
            "{errs:#?}"
        );
    }
}
