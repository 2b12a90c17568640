//! Turning `KIND NAME...`, `KIND1,KIND2` and `kind/name...` arguments into
//! the kinds and names they mean, accepting every spelling kubectl does
//! (plural, singular, short name, Kind, `kind.group`).

use crate::error::CtlError;
use rkube_api::ResourceInfo;

/// One kind and the names asked for; no names means "all of them".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub names: Vec<String>,
}

/// Finds a kind by any name kubectl accepts.
pub fn lookup_kind(name: &str) -> Result<&'static ResourceInfo, CtlError> {
    ResourceInfo::lookup(name)
        .ok_or_else(|| CtlError::usage(format!("the server doesn't have a resource type {name:?}")))
}

/// A Go-style duration (`5s`, `2m`, `1h30m`, `1.5h`, `300ms`, `0`), as
/// kubectl's duration flags take; `flag` names the flag in errors.
pub fn go_duration(flag: &str, text: &str) -> Result<std::time::Duration, CtlError> {
    let bad = || {
        CtlError::usage(format!(
            "{flag} {text:?} is not a duration; use a number with a unit, like 30s, 5m or 2h"
        ))
    };
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_nanos(nanos as u64))
}

/// Parses the positional arguments of get, delete and describe.
pub fn parse_targets(args: &[String]) -> Result<Vec<Target>, CtlError> {
    let Some(first) = args.first() else {
        return Err(CtlError::usage(
            "you must specify the type of resource (e.g. `pods`, `deploy/web`); `rkubectl api-resources` lists them",
        ));
    };
    if first.contains('/') {
        // kind/name form: every argument names its own kind
        let mut targets: Vec<Target> = Vec::new();
        for arg in args {
            let Some((kind, name)) = arg.split_once('/') else {
                return Err(CtlError::usage(format!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'rkubectl get resource/<resource_name>' instead of 'rkubectl get resource resource/<resource_name>'); got {arg:?}"
                )));
            };
            if kind.is_empty() || name.is_empty() || name.contains('/') {
                return Err(CtlError::usage(format!(
                    "arguments in resource/name form must have a single resource and name; got {arg:?}"
                )));
            }
            let info = lookup_kind(kind)?;
            match targets.last_mut() {
                Some(t) if t.info == info => t.names.push(name.to_string()),
                _ => targets.push(Target {
                    info,
                    names: vec![name.to_string()],
                }),
            }
        }
        return Ok(targets);
    }
    let names: Vec<String> = args[1..].to_vec();
    if let Some(bad) = names.iter().find(|n| n.contains('/')) {
        return Err(CtlError::usage(format!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'rkubectl get resource/<resource_name>' instead of 'rkubectl get resource resource/<resource_name>'); got {bad:?}"
        )));
    }
    let mut targets: Vec<Target> = Vec::new();
    for kind in first.split(',').filter(|k| !k.is_empty()) {
        // a category (`all`) stands for its kinds
        let infos = match ResourceInfo::in_category(kind) {
            c if !c.is_empty() && ResourceInfo::lookup(kind).is_none() => c,
            _ => vec![lookup_kind(kind)?],
        };
        for info in infos {
            if !targets.iter().any(|t| t.info == info) {
                targets.push(Target {
                    info,
                    names: names.clone(),
                });
            }
        }
    }
    if targets.is_empty() {
        return Err(CtlError::usage(format!(
            "the server doesn't have a resource type {first:?}"
        )));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn kinds_and_names(t: &[Target]) -> Vec<(&str, Vec<&str>)> {
        t.iter()
            .map(|t| (t.info.kind, t.names.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn short_names_resolve() {
        for (short, kind) in [
            ("po", "Pod"),
            ("svc", "Service"),
            ("deploy", "Deployment"),
            ("rs", "ReplicaSet"),
            ("no", "Node"),
            ("ns", "Namespace"),
            ("ep", "Endpoints"),
            ("ev", "Event"),
            ("cm", "ConfigMap"),
            ("hpa", "HorizontalPodAutoscaler"),
            ("pod", "Pod"),
            ("deployments", "Deployment"),
            ("deployments.apps", "Deployment"),
            ("Lease", "Lease"),
        ] {
            let t = parse_targets(&args(&[short])).unwrap();
            assert_eq!(t[0].info.kind, kind, "{short}");
            assert!(t[0].names.is_empty());
        }
    }

    #[test]
    fn kind_then_names() {
        let t = parse_targets(&args(&["deploy", "web", "api"])).unwrap();
        assert_eq!(kinds_and_names(&t), vec![("Deployment", vec!["web", "api"])]);
    }

    #[test]
    fn kind_slash_name_groups_by_kind() {
        let t = parse_targets(&args(&["deploy/web", "deployment/api", "pod/x"])).unwrap();
        assert_eq!(
            kinds_and_names(&t),
            vec![("Deployment", vec!["web", "api"]), ("Pod", vec!["x"])]
        );
    }

    #[test]
    fn comma_separated_kinds() {
        let t = parse_targets(&args(&["pods,svc"])).unwrap();
        assert_eq!(kinds_and_names(&t), vec![("Pod", vec![]), ("Service", vec![])]);
    }

    #[test]
    fn unknown_kind_says_the_server_does_not_have_it() {
        let err = parse_targets(&args(&["widgets"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error: the server doesn't have a resource type \"widgets\""
        );
        let err = parse_targets(&args(&["widget/x"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error: the server doesn't have a resource type \"widget\""
        );
    }

    #[test]
    fn mixing_forms_is_refused() {
        assert!(parse_targets(&args(&["pod", "pod/x"])).is_err());
        assert!(parse_targets(&args(&["pod/x", "y"])).is_err());
        assert!(parse_targets(&args(&["pod/"])).is_err());
        assert!(parse_targets(&args(&[])).is_err());
    }
}
