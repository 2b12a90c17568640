//! Image references as users write them in pod specs (`busybox`, `nginx:1.27`,
//! `127.0.0.1:5000/rkube/busybox@sha256:...`), normalised the way Docker and containerd do,
//! so that `busybox` and `docker.io/library/busybox:latest` name the same image record.

use std::fmt;

/// Registry name Docker gives to references without a registry host.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually lives.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `latest` when the user gave neither tag nor digest.
    pub tag: Option<String>,
    /// Content digest (`sha256:<64 hex>`) when the user pinned one.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

impl Reference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let fail = |reason: &str| ReferenceError {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("it is empty"));
        }
        if input.len() > 4096 {
            return Err(fail("it is longer than 4096 characters"));
        }
        if input.chars().any(|c| c.is_whitespace()) {
            return Err(fail("it contains whitespace"));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(|r| fail(&r))?;
                (name, Some(digest.to_string()))
            }
            None => (input, None),
        };

        // A tag is a ':' after the last '/', so that `host:5000/repo` is not read as a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(|r| fail(&r))?;
        }

        // The first component is a registry host when it looks like one, as in Docker.
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if registry.is_empty() {
            return Err(fail("the registry host is empty"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|r| fail(&r))?;

        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn locator(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The fully qualified name containerd stores the image record under, e.g.
    /// `docker.io/library/busybox:latest` or `127.0.0.1:5000/rkube/busybox@sha256:...`.
    pub fn name(&self) -> String {
        let mut name = self.locator();
        if let Some(tag) = &self.tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            name.push('@');
            name.push_str(digest);
        }
        name
    }

    /// What to ask the registry's manifests endpoint for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// Host (and port) the registry API is served on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine's loopback, which Docker always reaches over
    /// plain http.
    pub fn is_loopback(&self) -> bool {
        let host = host_without_port(&self.registry);
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        // [::1]:5000
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} must look like sha256:<64 hex digits>"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported, only sha256"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("digest {digest:?} must have 64 lowercase hex digits"));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository name is empty".to_string());
    }
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(format!(
                "repository component {component:?} must be lowercase letters and digits, separated by '.', '_' or '-'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_docker_hub_names_are_normalised() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("bitnami/redis:7").unwrap();
        assert_eq!(r.name(), "docker.io/bitnami/redis:7");
    }

    #[test]
    fn registry_with_port_is_not_a_tag() {
        let r = Reference::parse("127.0.0.1:5000/rkube/busybox").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "rkube/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert!(r.is_loopback());
        let r = Reference::parse("localhost:5000/rkube/busybox:v1").unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback());
        assert!(!Reference::parse("quay.io/x/y").unwrap().is_loopback());
    }

    #[test]
    fn digest_references_pin_the_manifest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/rkube/busybox@{digest}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(r.name(), format!("localhost:5000/rkube/busybox@{digest}"));
        let r = Reference::parse(&format!("busybox:1@{digest}")).unwrap();
        assert_eq!(r.name(), format!("docker.io/library/busybox:1@{digest}"));
    }

    #[test]
    fn bad_references_say_why() {
        for (input, needle) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox@sha256:abc", "64"),
            ("busybox@md5:abc", "only sha256"),
            ("a b", "whitespace"),
            ("host:5000/", "empty"),
        ] {
            let err = Reference::parse(input).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{input:?}: {err} should mention {needle:?}"
            );
        }
    }
}
