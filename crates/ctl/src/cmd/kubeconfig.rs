//! `rkubectl config view|get-contexts|current-context|use-context`: the
//! kubeconfig the command line would use (`--config`/`--kubeconfig`,
//! `$RKUBECONFIG`, `$KUBECONFIG`, `~/.rkube/config`), as kubectl shows and
//! edits it. Credentials are never printed.

use crate::error::CtlError;
use rkube_client::kubeconfig::{is_kubeconfig, Kubeconfig};
use rkube_client::ClientConfig;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the file, with keys, certificates and tokens left out.
    View,
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context (the file is rewritten).
    UseContext { name: String },
}

/// The file the command line reads: the explicit one, else the default.
pub fn path(explicit: Option<&Path>) -> Result<PathBuf, CtlError> {
    match explicit {
        Some(p) => Ok(p.to_path_buf()),
        None => ClientConfig::default_path().map_err(|e| CtlError::usage(format!("client config {e}"))),
    }
}

fn load(path: &Path) -> Result<Kubeconfig, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::usage(format!("cannot read {}: {e}", path.display())))?;
    if !is_kubeconfig(&text) {
        return Err(CtlError::usage(format!(
            "{} is an rkube client config, not a kubeconfig: it has no contexts \
             (`rkubectl certs generate` and `make up` write kubeconfigs)",
            path.display()
        )));
    }
    Kubeconfig::parse(&text, path).map_err(|e| CtlError::usage(format!("kubeconfig {e}")))
}

/// Credentials replaced as kubectl's `config view` does.
fn redacted(mut k: Kubeconfig) -> Kubeconfig {
    for c in &mut k.clusters {
        if c.value.certificate_authority_data.is_some() {
            c.value.certificate_authority_data = Some("DATA+OMITTED".into());
        }
    }
    for u in &mut k.users {
        let user = &mut u.value;
        for data in [&mut user.client_certificate_data, &mut user.client_key_data] {
            if data.is_some() {
                *data = Some("DATA+OMITTED".into());
            }
        }
        if user.token.is_some() {
            user.token = Some("REDACTED".into());
        }
    }
    k
}

pub fn run(explicit: Option<&Path>, args: &ConfigArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let path = path(explicit)?;
    let k = load(&path)?;
    match &args.command {
        ConfigCommand::View => {
            let text = redacted(k)
                .to_yaml()
                .map_err(|e| CtlError::usage(format!("kubeconfig {e}")))?;
            write!(out, "{text}")?;
        }
        ConfigCommand::CurrentContext => {
            if k.current_context.is_empty() {
                return Err(CtlError::usage(format!(
                    "{}: current-context is not set",
                    path.display()
                )));
            }
            writeln!(out, "{}", k.current_context)?;
        }
        ConfigCommand::GetContexts => {
            let mut rows = vec![["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"].map(String::from)];
            for c in &k.contexts {
                let current = if c.name == k.current_context { "*" } else { "" };
                rows.push([
                    current.to_string(),
                    c.name.clone(),
                    c.value.cluster.clone(),
                    c.value.user.clone(),
                    c.value.namespace.clone(),
                ]);
            }
            let widths: Vec<usize> = (0..5)
                .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
                .collect();
            for r in rows {
                let line: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(cell, w)| format!("{cell:<w$}", w = w + crate::printers::PADDING))
                    .collect();
                writeln!(out, "{}", line.concat().trim_end())?;
            }
        }
        ConfigCommand::UseContext { name } => {
            let mut k = k;
            if !k.contexts.iter().any(|c| &c.name == name) {
                let names: Vec<&str> = k.contexts.iter().map(|c| c.name.as_str()).collect();
                return Err(CtlError::usage(format!(
                    "no context {name:?} in {} (contexts: {})",
                    path.display(),
                    names.join(", ")
                )));
            }
            k.current_context = name.clone();
            k.save(&path)
                .map_err(|e| CtlError::usage(format!("kubeconfig {e}")))?;
            writeln!(out, "Switched to context {name:?}.")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: 'https://10.0.0.1:6443', certificate-authority-data: aGVsbG8=}
users:
- name: u
  user: {token: secret-token}
contexts:
- name: one
  context: {cluster: a, user: u}
- name: two
  context: {cluster: a, user: u, namespace: team}
current-context: one
";

    fn run_str(path: &Path, command: ConfigCommand) -> Result<String, CtlError> {
        let mut out = Vec::new();
        run(Some(path), &ConfigArgs { command }, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn view_contexts_and_switch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, FILE).unwrap();
        let view = run_str(&path, ConfigCommand::View).unwrap();
        assert!(
            !view.contains("secret-token") && !view.contains("aGVsbG8="),
            "{view}"
        );
        assert!(
            view.contains("REDACTED") && view.contains("DATA+OMITTED"),
            "{view}"
        );
        let contexts = run_str(&path, ConfigCommand::GetContexts).unwrap();
        let lines: Vec<&str> = contexts.lines().collect();
        assert!(lines[0].starts_with("CURRENT   NAME"), "{contexts}");
        assert!(lines[1].starts_with("*         one"), "{contexts}");
        assert!(lines[2].ends_with("team"), "{contexts}");
        assert_eq!(run_str(&path, ConfigCommand::CurrentContext).unwrap(), "one\n");
        run_str(&path, ConfigCommand::UseContext { name: "two".into() }).unwrap();
        assert_eq!(run_str(&path, ConfigCommand::CurrentContext).unwrap(), "two\n");
        // the rewritten file still holds the credentials and reads back
        let c = ClientConfig::load(&path).unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.token.as_deref()),
            ("team", Some("secret-token"))
        );
        let err = run_str(&path, ConfigCommand::UseContext { name: "three".into() }).unwrap_err();
        assert!(err.to_string().contains("contexts: one, two"), "{err}");
        std::fs::write(&path, "server: https://h:1\n").unwrap();
        let err = run_str(&path, ConfigCommand::GetContexts).unwrap_err();
        assert!(err.to_string().contains("not a kubeconfig"), "{err}");
    }
}
