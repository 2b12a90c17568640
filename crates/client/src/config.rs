//! The client config file, rkube's kubeconfig: where the apiserver is, the
//! default namespace, and credentials (bearer token, or client certificate
//! and key; with `https://` the cluster CA that signs the server).
//!
//! ```yaml
//! server: https://127.0.0.1:6443
//! namespace: default
//! certificateAuthority: ca.crt      # relative paths: from this file's directory
//! clientCertificate: admin.crt
//! clientKey: admin.key
//! # token: ...                      # or a bearer token instead of the certificate
//! ```

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Environment variable naming the config file, like `KUBECONFIG`.
pub const CONFIG_ENV: &str = "RKUBECONFIG";
/// Where the apiserver listens when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:6443";
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are refused: a misspelt `sever:` would otherwise silently
// point the client at the default address.
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// The apiserver's gRPC address, `https://host:port`; with several
    /// apiservers, their addresses separated by commas (in the file also a
    /// YAML list): requests go to one and move to the next when it cannot be
    /// reached (see [`crate::Client`]).
    #[serde(default = "default_server", deserialize_with = "one_or_many_servers")]
    pub server: String,
    /// The namespace used when a command names none.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Bearer token, sent as `authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// CA bundle that signs the apiserver's certificate; required for an
    /// `https://` server. A relative path is relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    /// Client certificate for mutual TLS (user = CN, groups = O).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    /// Key of `clientCertificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// PEM given inline by a kubeconfig (`*-data`), used instead of the
    /// files above.
    #[serde(skip)]
    pub certificate_authority_data: Option<Vec<u8>>,
    #[serde(skip)]
    pub client_certificate_data: Option<Vec<u8>>,
    #[serde(skip)]
    pub client_key_data: Option<Vec<u8>>,
}

/// `server: URL`, `server: URL,URL` or `server: [URL, URL]`, kept as one comma-separated
/// string so that every reader of `server` sees one value.
fn one_or_many_servers<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Servers {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Servers::deserialize(d)? {
        Servers::One(s) => s,
        Servers::Many(list) => list.join(","),
    })
}

/// The addresses of a `server` value: one, or several separated by commas.
pub fn server_list(server: &str) -> Vec<&str> {
    server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn default_server() -> String {
    DEFAULT_SERVER.to_string()
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server: default_server(),
            namespace: default_namespace(),
            token: None,
            certificate_authority: None,
            client_certificate: None,
            client_key: None,
            certificate_authority_data: None,
            client_certificate_data: None,
            client_key_data: None,
        }
    }
}

impl ClientConfig {
    /// A config for `server` with every other field defaulted.
    pub fn for_server(server: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            ..Default::default()
        }
    }

    /// What a daemon connects with: the client config file of its
    /// `--kubeconfig FILE` flag (server, CA, client certificate or token)
    /// if given, with `--apiserver URL` overriding the file's server; with
    /// neither file nor credentials, plain `--apiserver` as before.
    pub fn for_daemon(apiserver: Option<&str>, kubeconfig: Option<&Path>) -> Result<Self> {
        let mut config = match kubeconfig {
            Some(path) => Self::load(path)?,
            None => ClientConfig::default(),
        };
        crate::pki::log_expiry_daily(config.clone());
        if let Some(url) = apiserver.filter(|u| !u.is_empty()) {
            config.server = url.to_string();
            validate_server(&config.server).map_err(|msg| Error::Config {
                path: PathBuf::from("--apiserver"),
                msg,
            })?;
        }
        Ok(config)
    }

    /// Warnings for the client certificate and the cluster CA of this
    /// config that expire within 30 days (or have expired).
    pub fn certificate_warnings(&self) -> Vec<String> {
        let now = time::OffsetDateTime::now_utc();
        let mut warnings = Vec::new();
        for (what, data, path) in [
            (
                "the client certificate",
                &self.client_certificate_data,
                &self.client_certificate,
            ),
            (
                "the cluster CA certificate",
                &self.certificate_authority_data,
                &self.certificate_authority,
            ),
        ] {
            match (data, path) {
                (Some(pem), _) => warnings.extend(crate::pki::expiry_warnings(what, pem, now)),
                (None, Some(path)) => warnings.extend(crate::pki::file_expiry_warnings(what, path, now)),
                (None, None) => {}
            }
        }
        warnings
    }

    /// `$RKUBECONFIG`, else the first file of `$KUBECONFIG`, else
    /// `~/.rkube/config`.
    pub fn default_path() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        if let Some(p) = std::env::var(crate::kubeconfig::KUBECONFIG_ENV)
            .ok()
            .and_then(|v| v.split(':').find(|p| !p.is_empty()).map(PathBuf::from))
        {
            return Ok(p);
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".rkube").join("config")),
            None => Err(Error::Config {
                path: PathBuf::from("~/.rkube/config"),
                msg: format!("HOME is not set; set {CONFIG_ENV} to the client config file"),
            }),
        }
    }

    /// Loads the default config file. A missing `~/.rkube/config` means
    /// the defaults (a local apiserver); a missing file that
    /// `$RKUBECONFIG` names explicitly is an error.
    pub fn load_default() -> Result<Self> {
        let path = Self::default_path()?;
        let explicit = std::env::var_os(CONFIG_ENV).is_some_and(|p| !p.is_empty());
        if !explicit && !path.exists() {
            return Ok(ClientConfig::default());
        }
        Self::load(&path)
    }

    /// Reads and validates a config file: rkube's format, or a standard
    /// kubeconfig (its current-context).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_context(path, None)
    }

    /// As [`ClientConfig::load`], with `context` chosen in a kubeconfig
    /// instead of its current-context.
    pub fn load_context(path: &Path, context: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: format!("cannot read the client config: {e}"),
        })?;
        if crate::kubeconfig::is_kubeconfig(&text) {
            return crate::kubeconfig::Kubeconfig::parse(&text, path)?.client_config(context, path);
        }
        if let Some(context) = context.filter(|c| !c.is_empty()) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!("context {context:?} asked for, but this is an rkube client config, not a kubeconfig with contexts"),
            });
        }
        let mut config = Self::parse(&text, path)?;
        // As in a kubeconfig, relative file names are relative to the file.
        if let Some(dir) = path.parent() {
            for p in [
                &mut config.certificate_authority,
                &mut config.client_certificate,
                &mut config.client_key,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        // An empty file is a valid, all-defaults config.
        let config: ClientConfig = if text.trim().is_empty() {
            ClientConfig::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner().to_string();
                if field == "." {
                    err(inner)
                } else {
                    err(format!("{field}: {inner}"))
                }
            })?
        };
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks the fields that can be checked without connecting; the
    /// message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        validate_server(&self.server).map_err(|m| format!("server: {m}"))?;
        if self.namespace.is_empty() {
            return Err("namespace: must not be empty (omit it for \"default\")".into());
        }
        if let Some(token) = &self.token {
            if token.is_empty() || !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err("token: must be non-empty printable ASCII without spaces".into());
            }
        }
        Ok(())
    }

    /// Writes the config (creating its directory), readable by the owner
    /// only since it may hold a token. The write is atomic: a crash leaves
    /// the old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        self.validate().map_err(err)?;
        let text = serde_yaml::to_string(self).map_err(|e| err(format!("cannot encode: {e}")))?;
        write_config_file(path, text.as_bytes())
    }
}

/// Writes a config file atomically (a crash leaves the old file or the
/// new one), readable by the owner only.
pub(crate) fn write_config_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |msg: String| Error::Config {
        path: path.to_path_buf(),
        msg,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_private(&tmp, bytes).map_err(|e| err(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot replace the file: {e}")))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Accepts `http://host:port` and `https://host:port`, or several of them separated by
/// commas (all with the same scheme: they share one TLS setting).
pub(crate) fn validate_server(servers: &str) -> std::result::Result<(), String> {
    let list = server_list(servers);
    if list.is_empty() {
        return Err(format!(
            "{servers:?} names no server; expected e.g. {DEFAULT_SERVER}"
        ));
    }
    for server in &list {
        validate_one_server(server)?;
    }
    let https = |s: &&str| s.starts_with("https://");
    if list.iter().any(https) && !list.iter().all(https) {
        return Err(format!(
            "{servers:?} mixes http:// and https:// servers; the apiservers of one cluster share one scheme and CA"
        ));
    }
    Ok(())
}

fn validate_one_server(server: &str) -> std::result::Result<(), String> {
    let rest = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))
        .ok_or_else(|| format!("{server:?} is not a URL; expected e.g. {DEFAULT_SERVER}"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{server:?} has no host; expected e.g. {DEFAULT_SERVER}"));
    }
    server
        .parse::<tonic::transport::Uri>()
        .map_err(|e| format!("{server:?} is not a valid URL: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config");
        let text = "server: http://10.0.0.1:6443\nnamespace: team-a\ntoken: abc.def\ncertificateAuthority: /etc/rkube/ca.crt\nclientCertificate: /c.crt\nclientKey: /c.key\n";
        let cfg = ClientConfig::parse(text, &path).unwrap();
        assert_eq!(cfg.server, "http://10.0.0.1:6443");
        assert_eq!(cfg.namespace, "team-a");
        assert_eq!(cfg.token.as_deref(), Some("abc.def"));
        assert_eq!(cfg.client_key.as_deref(), Some(Path::new("/c.key")));
        cfg.save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), cfg);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn daemons_take_a_file_and_an_overriding_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.conf");
        std::fs::write(
            &path,
            "server: https://10.0.0.1:6443\ncertificateAuthority: ca.crt\nclientCertificate: s.crt\nclientKey: s.key\n",
        )
        .unwrap();
        let cfg = ClientConfig::for_daemon(Some("https://127.0.0.1:6443"), Some(&path)).unwrap();
        assert_eq!(cfg.server, "https://127.0.0.1:6443");
        // relative to the file, as in a kubeconfig
        assert_eq!(cfg.certificate_authority, Some(dir.path().join("ca.crt")));
        let cfg = ClientConfig::for_daemon(None, Some(&path)).unwrap();
        assert_eq!(cfg.server, "https://10.0.0.1:6443");
        let cfg = ClientConfig::for_daemon(Some("http://127.0.0.1:1"), None).unwrap();
        assert_eq!(cfg, ClientConfig::for_server("http://127.0.0.1:1"));
        assert!(ClientConfig::for_daemon(Some("127.0.0.1:1"), None).is_err());
    }

    #[test]
    fn several_servers_are_a_comma_separated_string_or_a_list() {
        let cfg = ClientConfig::parse(
            "server: [\"https://a:6443\", \"https://b:6443\"]\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(cfg.server, "https://a:6443,https://b:6443");
        assert_eq!(server_list(&cfg.server), ["https://a:6443", "https://b:6443"]);
        let cfg = ClientConfig::parse("server: https://a:6443, https://b:6443\n", Path::new("c")).unwrap();
        assert_eq!(server_list(&cfg.server), ["https://a:6443", "https://b:6443"]);
        let err = ClientConfig::parse("server: https://a:6443,b:6443\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("\"b:6443\" is not a URL"), "{err}");
        let err = ClientConfig::parse("server: https://a:6443,http://b:6443\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("mixes http:// and https://"), "{err}");
        let cfg = ClientConfig::for_daemon(Some("http://a:1,http://b:2"), None).unwrap();
        assert_eq!(server_list(&cfg.server).len(), 2);
    }

    #[test]
    fn missing_fields_default() {
        let cfg = ClientConfig::parse("server: http://h:1\n", Path::new("c")).unwrap();
        assert_eq!(cfg.namespace, "default");
        assert_eq!(
            ClientConfig::parse("", Path::new("c")).unwrap(),
            ClientConfig::default()
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let err = ClientConfig::parse("sever: http://h:1\n", Path::new("/home/u/.rkube/config")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/home/u/.rkube/config: "), "{msg}");
        assert!(msg.contains("unknown field `sever`"), "{msg}");

        let err = ClientConfig::parse("server: 127.0.0.1:6443\n", Path::new("cfg")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cfg: server: \"127.0.0.1:6443\" is not a URL"),
            "{err}"
        );

        let err = ClientConfig::parse("server: http://h:1\nnamespace: [a]\n", Path::new("cfg")).unwrap_err();
        assert!(err.to_string().starts_with("cfg: namespace: "), "{err}");

        let err = ClientConfig::load(Path::new("/nonexistent/rkube/config")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/rkube/config: cannot read"),
            "{err}"
        );
    }
}
