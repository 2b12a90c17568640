//! Standard kubeconfig files (`apiVersion: v1`, `kind: Config`: clusters,
//! users, contexts, current-context), so one file serves rkube's programs
//! and kubectl. A kubeconfig is read into the same [`ClientConfig`] as
//! rkube's own format: the chosen context's cluster (server, CA), user
//! (client certificate and key, or token) and namespace. File references
//! are relative to the kubeconfig, as kubectl resolves them; `*-data`
//! fields hold base64 PEM. What rkube does not implement (exec and auth
//! provider plugins, proxies, basic auth) is an error naming the field.

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// kubectl's variable: a `:`-separated list of files (rkube reads the first).
pub const KUBECONFIG_ENV: &str = "KUBECONFIG";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    pub users: Vec<Named<User>>,
    #[serde(default)]
    pub contexts: Vec<Named<Context>>,
    #[serde(default)]
    pub current_context: String,
    #[serde(default, skip_serializing_if = "serde_yaml::Value::is_null")]
    pub preferences: serde_yaml::Value,
}

/// `{name, cluster|user|context: {...}}` entries (read under any of the
/// three keys, written under the one its list uses: see `to_yaml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Named<T> {
    pub name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context", rename = "value")]
    pub value: T,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_provider: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    /// No user: no credentials (an insecure local apiserver).
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// Whether `text` is a kubeconfig rather than rkube's own format.
pub fn is_kubeconfig(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text).is_ok_and(|v| {
        v.get("kind").and_then(|k| k.as_str()) == Some("Config")
            || v.get("clusters").is_some()
            || v.get("contexts").is_some()
    })
}

impl Kubeconfig {
    /// Parses kubeconfig text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| config_err(path, format!("not valid YAML: {e}")))?;
        serde_path_to_error::deserialize(doc).map_err(|e| {
            let field = e.path().to_string();
            config_err(path, format!("{field}: {}", e.into_inner()))
        })
    }

    /// The client config of `context` (default: current-context).
    pub fn client_config(&self, context: Option<&str>, path: &Path) -> Result<ClientConfig> {
        let err = |msg: String| config_err(path, msg);
        let wanted = context.filter(|c| !c.is_empty()).unwrap_or(&self.current_context);
        let names = |items: Vec<&str>| items.join(", ");
        let ctx = if wanted.is_empty() && self.contexts.len() == 1 {
            &self.contexts[0]
        } else {
            self.contexts.iter().find(|c| c.name == wanted).ok_or_else(|| {
                err(format!(
                    "context {wanted:?} is not in the file (contexts: {}); choose one with --context",
                    names(self.contexts.iter().map(|c| c.name.as_str()).collect())
                ))
            })?
        };
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.value.cluster)
            .ok_or_else(|| {
                err(format!(
                    "context {:?} names cluster {:?}, which is not in clusters",
                    ctx.name, ctx.value.cluster
                ))
            })?;
        let user = self.users.iter().find(|u| u.name == ctx.value.user);
        if user.is_none() && !ctx.value.user.is_empty() {
            return Err(err(format!(
                "context {:?} names user {:?}, which is not in users",
                ctx.name, ctx.value.user
            )));
        }
        let user = user.map(|u| u.value.clone()).unwrap_or_default();
        for (set, field) in [
            (user.exec.is_some(), "exec"),
            (user.auth_provider.is_some(), "auth-provider"),
            (user.username.is_some(), "username"),
        ] {
            if set {
                return Err(err(format!(
                    "users[{}].user.{field}: rkube supports client certificates and tokens only",
                    ctx.value.user
                )));
            }
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        let file = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| if p.is_relative() { dir.join(p) } else { p.clone() })
        };
        let data = |field: &str, d: &Option<String>| -> Result<Option<Vec<u8>>> {
            d.as_ref()
                .map(|d| {
                    base64::engine::general_purpose::STANDARD
                        .decode(d.trim())
                        .map_err(|e| err(format!("{field}: not base64: {e}")))
                })
                .transpose()
        };
        let mut config = ClientConfig {
            server: cluster.value.server.clone(),
            namespace: if ctx.value.namespace.is_empty() {
                crate::config::DEFAULT_NAMESPACE.into()
            } else {
                ctx.value.namespace.clone()
            },
            token: user.token.clone(),
            certificate_authority: file(&cluster.value.certificate_authority),
            client_certificate: file(&user.client_certificate),
            client_key: file(&user.client_key),
            ..ClientConfig::default()
        };
        config.certificate_authority_data = data(
            "certificate-authority-data",
            &cluster.value.certificate_authority_data,
        )?;
        config.client_certificate_data = data("client-certificate-data", &user.client_certificate_data)?;
        config.client_key_data = data("client-key-data", &user.client_key_data)?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// A kubeconfig with one cluster, user and context, named `name`, from
    /// an rkube client config (file references kept as they are).
    pub fn single(name: &str, config: &ClientConfig) -> Kubeconfig {
        let b64 = |d: &Option<Vec<u8>>| {
            d.as_ref()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
        };
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![Named {
                name: name.into(),
                value: Cluster {
                    server: config.server.clone(),
                    certificate_authority: config.certificate_authority.clone(),
                    certificate_authority_data: b64(&config.certificate_authority_data),
                    ..Cluster::default()
                },
            }],
            users: vec![Named {
                name: name.into(),
                value: User {
                    client_certificate: config.client_certificate.clone(),
                    client_certificate_data: b64(&config.client_certificate_data),
                    client_key: config.client_key.clone(),
                    client_key_data: b64(&config.client_key_data),
                    token: config.token.clone(),
                    ..User::default()
                },
            }],
            contexts: vec![Named {
                name: name.into(),
                value: Context {
                    cluster: name.into(),
                    user: name.into(),
                    namespace: config.namespace.clone(),
                },
            }],
            current_context: name.into(),
            preferences: serde_yaml::Value::Null,
        }
    }

    /// The YAML text, with the entries' keys as kubectl writes them.
    pub fn to_yaml(&self) -> Result<String> {
        let mut doc =
            serde_yaml::to_value(self).map_err(|e| config_err(Path::new("kubeconfig"), e.to_string()))?;
        for (list, key) in [
            ("clusters", "cluster"),
            ("users", "user"),
            ("contexts", "context"),
        ] {
            if let Some(items) = doc.get_mut(list).and_then(|l| l.as_sequence_mut()) {
                for item in items {
                    if let Some(map) = item.as_mapping_mut() {
                        if let Some(v) = map.remove("value") {
                            map.insert(key.into(), v);
                        }
                    }
                }
            }
        }
        doc.as_mapping_mut()
            .map(|m| m.insert("preferences".into(), serde_yaml::Mapping::new().into()));
        serde_yaml::to_string(&doc).map_err(|e| config_err(Path::new("kubeconfig"), e.to_string()))
    }

    /// Writes the file, readable by its owner only (it holds credentials).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::config::write_config_file(path, self.to_yaml()?.as_bytes())
    }
}

fn config_err(path: &Path, msg: String) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: rkube
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: ca.crt
- name: other
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: aGVsbG8=
users:
- name: admin
  user:
    client-certificate: /pki/admin.crt
    client-key: /pki/admin.key
- name: dev
  user:
    token: abc.def
contexts:
- name: rkube
  context: {cluster: rkube, user: admin}
- name: dev
  context: {cluster: other, user: dev, namespace: team}
current-context: rkube
";

    #[test]
    fn contexts_choose_cluster_user_and_namespace() {
        let path = Path::new("/home/u/.rkube/config");
        let k = Kubeconfig::parse(KUBECONFIG, path).unwrap();
        let c = k.client_config(None, path).unwrap();
        assert_eq!(c.server, "https://127.0.0.1:6443");
        assert_eq!(c.namespace, "default");
        assert_eq!(
            c.certificate_authority,
            Some(PathBuf::from("/home/u/.rkube/ca.crt")),
            "relative to the file"
        );
        assert_eq!(c.client_key, Some(PathBuf::from("/pki/admin.key")));
        let c = k.client_config(Some("dev"), path).unwrap();
        assert_eq!(
            (c.server.as_str(), c.namespace.as_str()),
            ("https://10.0.0.1:6443", "team")
        );
        assert_eq!(c.token.as_deref(), Some("abc.def"));
        assert_eq!(c.certificate_authority_data.as_deref(), Some(&b"hello"[..]));
        let err = k.client_config(Some("nope"), path).unwrap_err().to_string();
        assert!(
            err.contains("context \"nope\" is not in the file (contexts: rkube, dev)"),
            "{err}"
        );
    }

    #[test]
    fn written_kubeconfigs_read_back_and_look_like_kubectls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let config = ClientConfig {
            server: "https://127.0.0.1:6443".into(),
            certificate_authority: Some("ca.crt".into()),
            client_certificate: Some("admin.crt".into()),
            client_key: Some("admin.key".into()),
            ..ClientConfig::default()
        };
        Kubeconfig::single("rkube", &config).save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current-context: rkube"), "{text}");
        assert!(
            text.contains("  cluster:\n    server: https://127.0.0.1:6443"),
            "{text}"
        );
        assert!(is_kubeconfig(&text));
        let back = ClientConfig::load(&path).unwrap();
        assert_eq!(back.client_certificate, Some(dir.path().join("admin.crt")));
        assert_eq!(back.server, config.server);
        assert!(!is_kubeconfig("server: https://127.0.0.1:6443\n"));
    }

    #[test]
    fn a_context_without_user_has_no_credentials() {
        let text = "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:8080'}}]\ncontexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x\n";
        let c = Kubeconfig::parse(text, Path::new("k"))
            .unwrap()
            .client_config(None, Path::new("k"))
            .unwrap();
        assert_eq!(c.server, "http://127.0.0.1:8080");
        assert_eq!((c.token.clone(), c.client_certificate.clone()), (None, None));
    }

    #[test]
    fn unsupported_credentials_are_named() {
        let text = "clusters: [{name: c, cluster: {server: 'https://h:1'}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n";
        let err = Kubeconfig::parse(text, Path::new("k"))
            .unwrap()
            .client_config(None, Path::new("k"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("users[u].user.exec"), "{err}");
    }
}
