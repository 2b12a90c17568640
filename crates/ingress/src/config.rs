//! rkube-ingress's options (flags, or the same fields in a YAML file given with
//! `--config`, camelCase keys; flags win) and the configuration it runs with.

use clap::Parser;
use rkube_daemon::{ClientOptions, DaemonOptions, Options as _};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The controller name of rkube's IngressClass (`spec.controller`).
pub const CONTROLLER: &str = "rkube.io/ingress";
/// The IngressClass rkube-ingress creates when missing.
pub const CLASS: &str = "rkube";

#[derive(Parser, Deserialize, Debug, Clone, Default)]
#[command(
    name = "rkube-ingress",
    version,
    about = "rkube's Ingress controller: serves HTTP and HTTPS on this node and routes requests by \
             host and path to the ready pods of Services, as Ingresses of its class say",
    after_help = "In the config file: `httpAddr: 0.0.0.0:8080`, `publishService: kube-system/ingress`."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub client: ClientOptions,
    /// This node's name (defaults to the host name): its InternalIP is the
    /// address written to Ingresses' status unless --publish-address or
    /// --publish-service say otherwise.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where plain HTTP is served (default 0.0.0.0:80); `off` serves none.
    #[arg(long, value_name = "ADDR|off")]
    pub http_addr: Option<String>,
    /// Where HTTPS is served (default 0.0.0.0:443), with certificates from the
    /// Ingresses' TLS Secrets chosen by SNI; `off` serves none.
    #[arg(long, value_name = "ADDR|off")]
    pub https_addr: Option<String>,
    /// The IngressClass this controller serves (default `rkube`); created,
    /// as the default class, when missing.
    #[arg(long, value_name = "NAME")]
    pub ingress_class: Option<String>,
    /// The controller name classes must name to be served (default `rkube.io/ingress`).
    #[arg(long, value_name = "NAME")]
    pub controller_name: Option<String>,
    /// The address written to `status.loadBalancer.ingress` of the Ingresses served.
    #[arg(long, value_name = "IP")]
    pub publish_address: Option<IpAddr>,
    /// A Service `NAMESPACE/NAME` (type LoadBalancer, in front of this
    /// controller) whose load-balancer addresses are written to Ingresses'
    /// status instead of the node's.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub publish_service: Option<String>,
}

rkube_daemon::impl_options!(Options, rkube_daemon::health::INGRESS_PORT, daemon);

#[derive(Debug, Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    /// None: no plain HTTP listener.
    pub http_addr: Option<SocketAddr>,
    /// None: no HTTPS listener.
    pub https_addr: Option<SocketAddr>,
    pub ingress_class: String,
    pub controller_name: String,
    pub publish_address: Option<IpAddr>,
    /// `(namespace, name)` of the Service whose load-balancer addresses are published.
    pub publish_service: Option<(String, String)>,
    /// The health and metrics endpoint; `None` (the default for tests and
    /// embedding) serves none. The daemon's flags default to loopback.
    pub health_addr: Option<SocketAddr>,
}

impl Config {
    /// Defaults: :80 and :443 on every address, class `rkube`, controller `rkube.io/ingress`.
    pub fn new(apiserver: impl Into<String>, node_name: impl Into<String>) -> Self {
        Config {
            apiserver: apiserver.into(),
            kubeconfig: None,
            node_name: node_name.into(),
            http_addr: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            https_addr: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            ingress_class: CLASS.into(),
            controller_name: CONTROLLER.into(),
            publish_address: None,
            publish_service: None,
            health_addr: None,
        }
    }

    /// The options resolved over the defaults, and checked; errors name the flag.
    pub fn from_options(o: Options) -> anyhow::Result<Config> {
        let (apiserver, kubeconfig) = o.client.connection();
        let health_addr = o.health_addr();
        let node_name = o.node_name.unwrap_or_else(rkube_daemon::host_name);
        let mut c = Config::new(apiserver, node_name);
        c.kubeconfig = kubeconfig;
        c.health_addr = health_addr;
        let addr =
            |flag: &str, v: Option<String>, d: Option<SocketAddr>| -> anyhow::Result<Option<SocketAddr>> {
                match v.as_deref() {
                    None => Ok(d),
                    Some("off") => Ok(None),
                    Some(s) => s.parse().map(Some).map_err(|_| {
                        anyhow::anyhow!("--{flag} {s:?} is not an address like 0.0.0.0:80 or off")
                    }),
                }
            };
        c.http_addr = addr("http-addr", o.http_addr, c.http_addr)?;
        c.https_addr = addr("https-addr", o.https_addr, c.https_addr)?;
        if let Some(class) = o.ingress_class {
            if !rkube_api::validation::is_dns1123_subdomain(&class) {
                anyhow::bail!("--ingress-class {class:?} is not a valid IngressClass name");
            }
            c.ingress_class = class;
        }
        if let Some(name) = o.controller_name {
            if !name.contains('/') {
                anyhow::bail!(
                    "--controller-name {name:?} must be a domain-prefixed path like rkube.io/ingress"
                );
            }
            c.controller_name = name;
        }
        c.publish_address = o.publish_address;
        if let Some(svc) = o.publish_service {
            let Some((ns, name)) = svc
                .split_once('/')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            else {
                anyhow::bail!("--publish-service {svc:?} must be NAMESPACE/NAME");
            };
            c.publish_service = Some((ns.into(), name.into()));
        }
        if c.node_name.is_empty() {
            anyhow::bail!("--node-name is required (the host name could not be read)");
        }
        if c.http_addr.is_none() && c.https_addr.is_none() {
            anyhow::bail!("--http-addr and --https-addr are both off: there is nothing to serve");
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> anyhow::Result<Config> {
        let argv = ["rkube-ingress"].iter().chain(flags);
        Config::from_options(rkube_daemon::options::parse_from(argv)?)
    }

    #[test]
    fn flags_over_file_and_clear_errors() {
        let cfg = config(&["--node-name", "n1"]).unwrap();
        assert_eq!(cfg.http_addr, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(cfg.https_addr, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(cfg.ingress_class, "rkube");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ingress.yaml");
        std::fs::write(
            &file,
            "httpAddr: 127.0.0.1:8080\nhttpsAddr: \"off\"\npublishService: kube-system/lb\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let cfg = config(&["--config", path, "--node-name", "n1"]).unwrap();
        assert_eq!(cfg.http_addr, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(cfg.https_addr, None);
        assert_eq!(cfg.publish_service, Some(("kube-system".into(), "lb".into())));
        let cfg = config(&["--config", path, "--node-name", "n1", "--http-addr", ":81"]);
        assert!(cfg.unwrap_err().to_string().contains("--http-addr \":81\""));
        let err = config(&["--node-name", "n1", "--http-addr", "off", "--https-addr", "off"]).unwrap_err();
        assert!(err.to_string().contains("nothing to serve"), "{err}");
        let err = config(&["--node-name", "n1", "--publish-service", "lb"]).unwrap_err();
        assert!(err.to_string().contains("NAMESPACE/NAME"), "{err}");
    }
}
