//! Registry credentials from Docker config files, the way Kubernetes' kubelet reads them:
//! pods' `imagePullSecrets` (Secrets of type `kubernetes.io/dockerconfigjson`, key
//! `.dockerconfigjson`, or `kubernetes.io/dockercfg`, key `.dockercfg`) and the node-wide
//! `<root-dir>/config.json`.
//!
//! A key of the file (`registry.example:5000`, `https://registry.example/v1/`,
//! `*.example.com/team`) matches an image when the hosts have the same number of
//! dot-separated parts, each part matches (`*` globs within a part), the ports are equal
//! and the key's path, if any, is a prefix of the image's repository. Docker Hub's keys
//! (`https://index.docker.io/v1/`, `index.docker.io`, `docker.io`) match `docker.io` images.
//! Every matching credential is a candidate, the most specific key first; the puller tries
//! them in turn, as Kubernetes does.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::{Reference, RegistryAuth};

/// `type` of a Secret holding a `config.json`-style document.
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const KEY_DOCKER_CONFIG_JSON: &str = ".dockerconfigjson";
/// `type` of a Secret holding a legacy `~/.dockercfg` document.
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const KEY_DOCKERCFG: &str = ".dockercfg";

/// One entry of a Docker config: which registries it is for, and the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key as written in the file.
    pub key: String,
    /// Where it came from (`secret shop/regcred`), for messages.
    pub source: String,
    pub auth: RegistryAuth,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// Parses a `config.json` document (`{"auths": {...}}`), or with `legacy` a `.dockercfg` one
/// (the entries at the top level). Entries without usable credentials are skipped.
pub fn parse(document: &[u8], legacy: bool, source: &str) -> Result<Vec<Credential>, String> {
    let entries: BTreeMap<String, Entry> = if legacy {
        serde_json::from_slice(document).map_err(|e| format!("{source}: not a .dockercfg document: {e}"))?
    } else {
        serde_json::from_slice::<ConfigJson>(document)
            .map_err(|e| format!("{source}: not a Docker config.json document: {e}"))?
            .auths
    };
    let mut out = Vec::new();
    for (key, entry) in entries {
        let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| format!("{source}: the auth of {key:?} is not base64: {e}"))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| format!("{source}: the auth of {key:?} is not UTF-8"))?;
                let Some((u, p)) = text.split_once(':') else {
                    return Err(format!(
                        "{source}: the auth of {key:?} must be base64 of \"username:password\""
                    ));
                };
                (u.to_string(), p.to_string())
            }
            (_, Some(u), Some(p)) => (u.clone(), p.clone()),
            _ => continue,
        };
        out.push(Credential {
            key,
            source: source.to_string(),
            auth: RegistryAuth { username, password },
        });
    }
    Ok(out)
}

/// `(host, port, path)` of a key or image location; Docker Hub's names become `docker.io`.
fn split_location(location: &str) -> (String, Option<String>, String) {
    let without_scheme = location.split_once("://").map_or(location, |(_, rest)| rest);
    let (host_port, path) = match without_scheme.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (without_scheme, ""),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p.to_string())),
        _ => (host_port, None),
    };
    let mut host = host.to_ascii_lowercase();
    if matches!(
        host.as_str(),
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    ) && port.is_none()
    {
        host = super::reference::DOCKER_HUB.to_string();
    }
    // Docker reads `host/v1/` and `host/v2/` as the host itself (`https://index.docker.io/v1/`
    // is the Hub's key), not as a repository prefix.
    let path = match path.split_once('/') {
        Some(("v1" | "v2", rest)) => rest,
        None if path == "v1" || path == "v2" => "",
        _ => path,
    };
    (host, port, path.to_string())
}

/// `pattern` with `*` matching any run of characters (one host part never holds a dot).
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(text) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=text.len()).any(|i| text.is_char_boundary(i) && glob(rest, &text[i..]))
        }
    }
}

/// Whether credential key `key` applies to `image`.
pub fn matches(key: &str, image: &Reference) -> bool {
    let (key_host, key_port, key_path) = split_location(key);
    let (image_host, image_port, _) = split_location(&image.registry);
    let key_parts: Vec<&str> = key_host.split('.').collect();
    let image_parts: Vec<&str> = image_host.split('.').collect();
    if key_parts.len() != image_parts.len()
        || !key_parts.iter().zip(&image_parts).all(|(k, i)| glob(k, i))
        || key_port != image_port
    {
        return false;
    }
    key_path.is_empty()
        || image.repository == key_path
        || image
            .repository
            .strip_prefix(&key_path)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The credentials to try for `image`, most specific key first (longer keys sort later,
/// and Kubernetes tries keys in reverse lexical order); among equal keys, in the given
/// order.
pub fn candidates(credentials: &[Credential], image: &Reference) -> Vec<Credential> {
    let mut found: Vec<Credential> = credentials
        .iter()
        .filter(|c| matches(&c.key, image))
        .cloned()
        .collect();
    found.sort_by(|a, b| b.key.cmp(&a.key));
    let mut unique: Vec<Credential> = Vec::with_capacity(found.len());
    for c in found {
        if !unique.iter().any(|u| u.auth == c.auth) {
            unique.push(c);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn both_document_formats_parse_and_auth_wins_over_fields() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let json = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},"other.example":{{"username":"bob","password":"pw"}},"empty.example":{{}}}}}}"#
        );
        let creds = parse(json.as_bytes(), false, "secret ns/a").unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[0].key, "127.0.0.1:5000");
        assert_eq!(creds[0].auth.username, "alice");
        assert_eq!(creds[0].auth.password, "pa:ss");
        assert_eq!(creds[1].auth.username, "bob");

        let legacy = format!(r#"{{"https://127.0.0.1:5000":{{"auth":"{auth}","email":"a@b"}}}}"#);
        let creds = parse(legacy.as_bytes(), true, "secret ns/b").unwrap();
        assert_eq!(creds[0].auth.password, "pa:ss");

        let err = parse(
            br#"{"auths":{"x":{"auth":"bm9jb2xvbg=="}}}"#,
            false,
            "secret ns/c",
        )
        .unwrap_err();
        assert!(
            err.contains("secret ns/c") && err.contains("username:password"),
            "{err}"
        );
        assert!(parse(b"not json", false, "secret ns/d")
            .unwrap_err()
            .contains("secret ns/d"));
    }

    #[test]
    fn keys_match_hosts_ports_globs_and_path_prefixes() {
        let local = image("127.0.0.1:5000/rkube/busybox:latest");
        assert!(matches("127.0.0.1:5000", &local));
        assert!(matches("http://127.0.0.1:5000/v2/", &local));
        assert!(matches("127.0.0.1:5000/v1/rkube", &local));
        assert!(matches("https://127.0.0.1:5000", &local));
        assert!(matches("127.0.0.1:5000/rkube", &local));
        assert!(matches("127.0.0.1:5000/rkube/busybox", &local));
        assert!(!matches("127.0.0.1:5000/rkub", &local));
        assert!(!matches("127.0.0.1:5001", &local));
        assert!(!matches("127.0.0.1", &local));

        let hub = image("busybox");
        for key in ["https://index.docker.io/v1/", "index.docker.io", "docker.io"] {
            assert!(matches(key, &hub), "{key}");
        }
        assert!(!matches("quay.io", &hub));

        let sub = image("eu.registry.example.com/team/app");
        assert!(matches("*.registry.example.com", &sub));
        assert!(matches("eu.*.example.com", &sub));
        assert!(!matches("*.example.com", &sub), "a glob covers one host part");
        assert!(matches("EU.registry.example.com/team", &sub));
    }

    #[test]
    fn candidates_put_the_most_specific_key_first_without_duplicates() {
        let cred = |key: &str, user: &str| Credential {
            key: key.into(),
            source: "s".into(),
            auth: RegistryAuth {
                username: user.into(),
                password: "p".into(),
            },
        };
        let all = vec![
            cred("reg.example", "any"),
            cred("reg.example/team", "team"),
            cred("other.example", "other"),
            cred("reg.example", "any"),
        ];
        let found = candidates(&all, &image("reg.example/team/app"));
        let users: Vec<&str> = found.iter().map(|c| c.auth.username.as_str()).collect();
        assert_eq!(users, ["team", "any"]);
        assert!(candidates(&all, &image("unknown.example/app")).is_empty());
    }
}
