//! rkubectl, the kubectl-like command-line client of rkube: it reads
//! manifests, talks to the apiserver over gRPC, and prints what it finds
//! the way kubectl does (tables, `-o yaml|json|name`, error lines), so
//! people and scripts used to kubectl feel at home.
//!
//! It owns nothing on the server side: every check it makes before
//! sending (decoding, defaulting, validation) is the apiserver's own code
//! from `rkube-api`, run early so a bad file writes nothing; the
//! apiserver stays the authority.
//!
//! Layout: `cmd/` has one module per verb, `printers/` one table per
//! kind, `server` the gRPC calls, `manifest` reading `-f`, `args` the
//! `KIND NAME` and `kind/name` arguments.

pub mod args;
pub mod cmd;
pub mod config;
pub mod error;
pub mod manifest;
pub mod objects;
pub mod printers;
pub mod server;

use clap::{Parser, Subcommand};
use cmd::Context;
pub use error::CtlError;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "rkubectl",
    version,
    about = "Control an rkube cluster, the way kubectl controls Kubernetes"
)]
pub struct Cli {
    /// The apiserver's address (default: the config file's `server`, else
    /// https://127.0.0.1:6443).
    #[arg(short = 's', long, global = true, env = "RKUBE_SERVER")]
    pub server: Option<String>,
    /// The client config file (default ~/.rkube/config).
    /// The file is rkube's client config or a standard kubeconfig;
    /// without the flag, `$KUBECONFIG` is read too.
    #[arg(long, global = true, env = "RKUBECONFIG", alias = "kubeconfig")]
    pub config: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace to work in (default: the config file's `namespace`,
    /// else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from manifests.
    Apply(cmd::apply::ApplyArgs),
    /// Create objects from manifests.
    Create(cmd::create::CreateArgs),
    /// Run one pod from an image.
    Run(cmd::run::RunArgs),
    /// Put a Service in front of a workload's or a pod's pods.
    Expose(cmd::expose::ExposeArgs),
    /// Wait until objects meet a condition or are deleted.
    Wait(cmd::wait::WaitArgs),
    /// Delete objects by name, selector or manifest.
    Delete(cmd::delete::DeleteArgs),
    /// List objects, or show them as YAML or JSON.
    Get(cmd::get::GetArgs),
    /// Show an object in detail, with its events.
    Describe(cmd::describe::DescribeArgs),
    /// List the kinds the server serves.
    ApiResources(cmd::api_resources::ApiResourcesArgs),
    /// Print the client and server versions.
    Version(cmd::version::VersionArgs),
    /// Print a container's log.
    Logs(cmd::logs::LogsArgs),
    /// Run a command in a container.
    Exec(cmd::exec::ExecArgs),
    /// Forward local ports to ports of a pod.
    PortForward(cmd::port_forward::PortForwardArgs),
    /// Show CPU and memory usage of pods or nodes.
    Top(cmd::top::TopArgs),
    /// Manage a Deployment's rollout: status, history, undo, restart,
    /// pause, resume.
    Rollout(cmd::rollout::RolloutArgs),
    /// Set the number of replicas of a Deployment or ReplicaSet.
    Scale(cmd::scale::ScaleArgs),
    /// Change fields of objects (`set image`).
    Set(cmd::set::SetArgs),
    /// Create a HorizontalPodAutoscaler for a Deployment or ReplicaSet.
    Autoscale(cmd::autoscale::AutoscaleArgs),
    /// Cordon a node and delete every pod on it, waiting until they are gone.
    Drain(cmd::drain::DrainArgs),
    /// Approve or deny CertificateSigningRequests (`certificate approve NAME`).
    Certificate(cmd::certificate::CertificateArgs),
    /// Mark nodes unschedulable: no new pods are placed there.
    Cordon(cmd::cordon::CordonArgs),
    /// Mark nodes schedulable again.
    Uncordon(cmd::cordon::CordonArgs),
    /// Add or remove taints on a node (`taint nodes NODE key=value:Effect[-]`).
    Taint(cmd::taint::TaintArgs),
    /// Set or remove labels (`label nodes NODE k=v`, `k-`).
    Label(cmd::label::LabelArgs),
    /// Set or remove annotations (`annotate deploy/web k=v`, `k-`).
    Annotate(cmd::label::LabelArgs),
    /// Change part of an object (`patch deploy/web -p '{"spec":{"replicas":3}}'`;
    /// `--type strategic|merge|json`).
    Patch(cmd::patch::PatchArgs),
    /// Print the URLs a NodePort or LoadBalancer Service is reached at from
    /// the host (`--url`: URLs only).
    Service(cmd::service::ServiceArgs),
    /// Create the cluster CA and the components' certificates and client
    /// config files (`certs generate --dir DIR`).
    Certs(cmd::certs::CertsArgs),
    /// Inspect authorization (`auth can-i VERB RESOURCE [--as USER]`).
    Auth(cmd::auth::AuthArgs),
    /// Bootstrap tokens for new nodes (`token create [--ttl 24h]`).
    Token(cmd::token::TokenArgs),
    /// Show or switch the kubeconfig's contexts (`config view|get-contexts|
    /// current-context|use-context NAME`).
    Config(cmd::kubeconfig::ConfigArgs),
}

impl Cli {
    /// Resolves flags, environment and config file into a context.
    pub fn context(&self) -> Result<Context, CtlError> {
        let file = config::load(self.config.as_deref(), self.context.as_deref())?;
        let server = self
            .server
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| file.server.clone());
        let namespace_explicit = self.namespace.is_some();
        let namespace = self
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or(Some(file.namespace.clone()).filter(|n| !n.is_empty()))
            .unwrap_or_else(|| "default".to_string());
        if !rkube_api::validation::is_dns1123_label(&namespace) {
            return Err(CtlError::usage(format!(
                "invalid namespace {namespace:?}: a namespace must be a lowercase RFC 1123 label (e.g. 'my-team')"
            )));
        }
        Ok(Context {
            server_url: config::normalize_server(&server),
            namespace,
            namespace_explicit,
            credentials: file,
        })
    }
}

/// Runs one command line, writing results to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CtlError> {
    // the file itself, even when its current context is not usable
    if let Command::Config(a) = &cli.command {
        let result = cmd::kubeconfig::run(cli.config.as_deref(), a, out);
        out.flush()?;
        return result;
    }
    let ctx = cli.context()?;
    // on stderr, as kubectl prints its warnings: output stays parseable
    for w in ctx.credentials.certificate_warnings() {
        eprintln!("Warning: {w}");
    }
    let result = match &cli.command {
        Command::Apply(a) => cmd::apply::run(&ctx, a, out).await,
        Command::Create(a) => cmd::create::run(&ctx, a, out).await,
        Command::Run(a) => cmd::run::run(&ctx, a, out).await,
        Command::Expose(a) => cmd::expose::run(&ctx, a, out).await,
        Command::Wait(a) => cmd::wait::run(&ctx, a, out).await,
        Command::Delete(a) => cmd::delete::run(&ctx, a, out).await,
        Command::Get(a) => cmd::get::run(&ctx, a, out).await,
        Command::Describe(a) => cmd::describe::run(&ctx, a, out).await,
        Command::ApiResources(a) => cmd::api_resources::run(&ctx, a, out).await,
        Command::Version(a) => cmd::version::run(&ctx, a, out).await,
        Command::Logs(a) => cmd::logs::run(&ctx, a, out).await,
        Command::Exec(a) => cmd::exec::run(&ctx, a, out).await,
        Command::PortForward(a) => cmd::port_forward::run(&ctx, a, out).await,
        Command::Top(a) => cmd::top::run(&ctx, a, out).await,
        Command::Rollout(a) => cmd::rollout::run(&ctx, a, out).await,
        Command::Scale(a) => cmd::scale::run(&ctx, a, out).await,
        Command::Set(a) => cmd::set::run(&ctx, a, out).await,
        Command::Autoscale(a) => cmd::autoscale::run(&ctx, a, out).await,
        Command::Drain(a) => cmd::drain::run(&ctx, a, out).await,
        Command::Certificate(a) => cmd::certificate::certificate(&ctx, a, out).await,
        Command::Cordon(a) => cmd::cordon::cordon(&ctx, a, out).await,
        Command::Uncordon(a) => cmd::cordon::uncordon(&ctx, a, out).await,
        Command::Taint(a) => cmd::taint::run(&ctx, a, out).await,
        Command::Label(a) => cmd::label::run(&ctx, a, cmd::label::Field::Labels, out).await,
        Command::Annotate(a) => cmd::label::run(&ctx, a, cmd::label::Field::Annotations, out).await,
        Command::Patch(a) => cmd::patch::run(&ctx, a, out).await,
        Command::Service(a) => cmd::service::run(&ctx, a, out).await,
        Command::Certs(a) => cmd::certs::run(a, out).await,
        Command::Auth(a) => cmd::auth::run(&ctx, a, out).await,
        Command::Token(a) => cmd::token::run(&ctx, a, out).await,
        Command::Config(a) => cmd::kubeconfig::run(cli.config.as_deref(), a, out),
    };
    out.flush()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("rkubectl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&[
            "get",
            "pods",
            "-n",
            "kube-system",
            "--server",
            "127.0.0.1:7000",
            "--config",
            "/dev/null",
        ]);
        let ctx = cli.context().unwrap();
        assert_eq!(ctx.namespace, "kube-system");
        assert!(ctx.namespace_explicit);
        assert_eq!(ctx.server_url, "https://127.0.0.1:7000");
    }

    #[test]
    fn get_flags() {
        let cli = parse(&["get", "deploy/web", "-o", "wide", "-l", "app=web", "-A", "-w"]);
        let Command::Get(g) = cli.command else { panic!() };
        assert_eq!(g.targets, ["deploy/web"]);
        assert_eq!(g.output, Some(printers::OutputFormat::Wide));
        assert_eq!(g.selector.as_deref(), Some("app=web"));
        assert!(g.all_namespaces && g.watch);
        assert!(Cli::try_parse_from(["rkubectl", "get", "pods", "-o", "xml"]).is_err());
    }

    #[test]
    fn delete_flags() {
        let cli = parse(&["delete", "pod", "x", "--cascade=orphan", "--grace-period=0"]);
        let Command::Delete(d) = cli.command else { panic!() };
        let opts = d.options();
        assert_eq!(opts.propagation_policy, "Orphan");
        assert_eq!(opts.grace_period_seconds, Some(0));
        let Command::Delete(d) = parse(&["delete", "pod", "x"]).command else {
            panic!()
        };
        assert_eq!(d.options().grace_period_seconds, None);
        assert_eq!(d.options().propagation_policy, "Background");
    }

    #[test]
    fn bad_namespace_is_refused() {
        let cli = parse(&["get", "pods", "-n", "Not_Valid", "--config", "/dev/null"]);
        assert!(cli
            .context()
            .unwrap_err()
            .to_string()
            .contains("invalid namespace \"Not_Valid\""));
    }
}
