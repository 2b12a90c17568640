//! Which client config file to read: `--config` (or `--kubeconfig`), else
//! `RKUBECONFIG` (clap reads it into the same flag), else the first file of
//! `KUBECONFIG`, else `~/.rkube/config`. The file is rkube-client's
//! `ClientConfig` format or a standard kubeconfig (`--context` picks the
//! context), shared with every other program.

use crate::error::CtlError;
use rkube_client::ClientConfig;
use std::path::Path;

/// Reads the config. A file named explicitly must exist; the default one
/// is optional, so rkubectl works out of the box against a local
/// apiserver.
pub fn load(explicit: Option<&Path>, context: Option<&str>) -> Result<ClientConfig, CtlError> {
    let result = match explicit {
        Some(path) => ClientConfig::load_context(path, context),
        None => match ClientConfig::default_path() {
            Ok(path) if path.exists() => ClientConfig::load_context(&path, context),
            // no HOME or no file: a local apiserver, the default namespace
            _ => Ok(ClientConfig::default()),
        },
    };
    result.map_err(|e| CtlError::usage(format!("client config {e}")))
}

/// Accepts `host:port` as well as a URL, since that is what people type;
/// without a scheme it is https, as the apiserver serves by default. Several
/// apiservers are separated by commas, each read the same way.
pub fn normalize_server(server: &str) -> String {
    let one = |s: &str| {
        let s = s.trim().trim_end_matches('/');
        if s.contains("://") {
            s.to_string()
        } else {
            format!("https://{s}")
        }
    };
    server.split(',').map(one).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let err = load(Some(Path::new("/nonexistent/rkube.conf")), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rkube.conf"), "{err}");
    }

    #[test]
    fn misspelt_fields_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "sever: x\n").unwrap();
        let err = load(Some(&path), None).unwrap_err();
        assert!(err.to_string().contains("unknown field `sever`"), "{err}");
        std::fs::write(&path, "server: http://10.0.0.1:6443\nnamespace: prod\n").unwrap();
        let c = load(Some(&path), None).unwrap();
        assert_eq!(
            (c.server.as_str(), c.namespace.as_str()),
            ("http://10.0.0.1:6443", "prod")
        );
    }

    #[test]
    fn bare_host_port_becomes_a_url() {
        assert_eq!(normalize_server("127.0.0.1:6443"), "https://127.0.0.1:6443");
        assert_eq!(normalize_server("https://api:6443/"), "https://api:6443");
        assert_eq!(
            normalize_server("a:6443, https://b:6443/"),
            "https://a:6443,https://b:6443"
        );
    }
}
