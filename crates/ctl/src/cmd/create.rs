//! `rkubectl create -f FILE`: create every object of the files; an object
//! that already exists is an error (use apply to update). `rkubectl create
//! KIND NAME --flags` builds one object from flags, as kubectl's
//! generators do (see `generate`).

use crate::cmd::generate::{self, OutputFlags};
use crate::cmd::Context;
use crate::error::CtlError;
use crate::manifest::{self, Purpose};
use rkube_api::batch::v1::CronJob;
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreateArgs {
    /// Manifest file, directory of manifests, or `-` for standard input;
    /// repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Also read manifests in subdirectories of a directory.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[command(subcommand)]
    pub kind: Option<CreateKind>,
}

#[derive(Debug, clap::Subcommand)]
pub enum CreateKind {
    /// A Deployment running one container per --image (label app=NAME).
    #[command(visible_alias = "deploy")]
    Deployment {
        name: String,
        #[arg(long = "image", required = true)]
        images: Vec<String>,
        #[arg(short = 'r', long, default_value_t = 1)]
        replicas: i32,
        /// The containers' port.
        #[arg(long)]
        port: Option<i32>,
        #[command(flatten)]
        output: OutputFlags,
        /// The command (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// A Job running --image (or the job template of --from=cronjob/NAME).
    Job {
        name: String,
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        image: Option<String>,
        /// `cronjob/NAME`: run that CronJob's job now.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        output: OutputFlags,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// A CronJob running --image on --schedule.
    #[command(visible_alias = "cj")]
    Cronjob {
        name: String,
        #[arg(long)]
        image: String,
        /// Five-field cron schedule or a macro (`@hourly`).
        #[arg(long)]
        schedule: String,
        /// OnFailure or Never.
        #[arg(long, default_value = "OnFailure")]
        restart: String,
        #[command(flatten)]
        output: OutputFlags,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// A ConfigMap from literals, files, directories and env files.
    #[command(visible_alias = "cm")]
    Configmap {
        name: String,
        #[command(flatten)]
        data: DataFlags,
        #[command(flatten)]
        output: OutputFlags,
    },
    /// A Secret: `generic`, `tls` or `docker-registry`.
    Secret {
        #[command(subcommand)]
        kind: SecretKind,
    },
    /// A ServiceAccount.
    #[command(visible_alias = "sa")]
    Serviceaccount {
        name: String,
        #[command(flatten)]
        output: OutputFlags,
    },
    /// A token for a ServiceAccount (TokenRequest), printed to stdout.
    Token {
        /// The ServiceAccount.
        name: String,
        /// Lifetime (`1h`, `30m`; at least 10m; default 1h).
        #[arg(long)]
        duration: Option<String>,
        /// Who the token is for (default: the apiserver); repeatable.
        #[arg(long = "audience")]
        audiences: Vec<String>,
    },
    /// A Namespace.
    #[command(visible_alias = "ns")]
    Namespace {
        name: String,
        #[command(flatten)]
        output: OutputFlags,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretKind {
    /// From literals, files, directories and env files.
    Generic {
        name: String,
        /// The secret's type (default Opaque).
        #[arg(long = "type", default_value = "")]
        secret_type: String,
        #[command(flatten)]
        data: DataFlags,
        #[command(flatten)]
        output: OutputFlags,
    },
    /// A kubernetes.io/tls secret from a PEM certificate and key.
    Tls {
        name: String,
        #[arg(long)]
        cert: String,
        #[arg(long)]
        key: String,
        #[command(flatten)]
        output: OutputFlags,
    },
    /// A kubernetes.io/dockerconfigjson secret for pulling images.
    DockerRegistry {
        name: String,
        #[arg(long, default_value = "https://index.docker.io/v1/")]
        docker_server: String,
        #[arg(long)]
        docker_username: String,
        #[arg(long)]
        docker_password: String,
        #[arg(long, default_value = "")]
        docker_email: String,
        #[command(flatten)]
        output: OutputFlags,
    },
}

/// `--from-literal`, `--from-file`, `--from-env-file` (each repeatable).
#[derive(Debug, Clone, clap::Args)]
pub struct DataFlags {
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub literals: Vec<String>,
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub files: Vec<String>,
    #[arg(long = "from-env-file", value_name = "PATH")]
    pub env_files: Vec<String>,
}

impl DataFlags {
    fn read(&self) -> Result<Vec<(String, Vec<u8>)>, CtlError> {
        generate::data_from(&self.literals, &self.files, &self.env_files)
    }
}

pub async fn run(ctx: &Context, args: &CreateArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    if let Some(kind) = &args.kind {
        return create_kind(ctx, kind, out).await;
    }
    if args.files.is_empty() {
        return Err(CtlError::usage(
            "create needs -f FILE, or a kind to build from flags: rkubectl create deployment|job|cronjob|configmap|secret|serviceaccount|namespace NAME ...",
        ));
    }
    let sources = manifest::read_sources(&args.files, args.recursive)?;
    let objects = manifest::load(&sources, &ctx.namespace_choice(), Purpose::Create)?;
    let server = ctx.connect().await?;
    let mut failed = false;
    for fo in &objects {
        match server.create(&fo.obj).await {
            // generateName objects learn their name from the server
            Ok(created) => writeln!(out, "{} created", created.display_name())?,
            Err(e @ CtlError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!(
                    "{}",
                    e.with_context(format!("error when creating {:?}", fo.source))
                );
            }
        }
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}

async fn create_kind(ctx: &Context, kind: &CreateKind, out: &mut dyn Write) -> Result<(), CtlError> {
    let (obj, output) = match kind {
        CreateKind::Deployment {
            name,
            images,
            replicas,
            port,
            output,
            command,
        } => (
            generate::deployment(name, images, *replicas, *port, command)?,
            output,
        ),
        CreateKind::Job {
            name,
            image,
            from,
            output,
            command,
        } => {
            let obj = match (from, image) {
                (Some(from), _) => {
                    let cron_name = match from.split_once('/') {
                        Some(("cronjob" | "cronjobs" | "cj" | "cronjob.batch", n)) if !n.is_empty() => n,
                        _ => {
                            return Err(CtlError::usage(format!(
                                "--from={from:?}: only cronjob/NAME can be the source of a job"
                            )))
                        }
                    };
                    let client = ctx.client()?;
                    let cron: CronJob = rkube_client::Api::namespaced(client, &ctx.namespace)
                        .get(cron_name)
                        .await
                        .map_err(|e| crate::server::ctl_error(e, &ctx.server_url))?;
                    generate::job_from_cronjob(name, &cron)?
                }
                (None, Some(image)) => generate::job(name, image, command)?,
                (None, None) => {
                    return Err(CtlError::usage("create job needs --image or --from=cronjob/NAME"))
                }
            };
            (obj, output)
        }
        CreateKind::Cronjob {
            name,
            image,
            schedule,
            restart,
            output,
            command,
        } => (
            generate::cronjob(name, image, schedule, restart, command)?,
            output,
        ),
        CreateKind::Configmap { name, data, output } => (generate::configmap(name, data.read()?)?, output),
        CreateKind::Secret { kind } => match kind {
            SecretKind::Generic {
                name,
                secret_type,
                data,
                output,
            } => (generate::secret(name, secret_type, data.read()?)?, output),
            SecretKind::Tls {
                name,
                cert,
                key,
                output,
            } => {
                let read = |flag: &str, path: &str| {
                    std::fs::read(path).map_err(|e| CtlError::usage(format!("--{flag}={path}: {e}")))
                };
                let data = vec![
                    ("tls.crt".to_string(), read("cert", cert)?),
                    ("tls.key".to_string(), read("key", key)?),
                ];
                (generate::secret(name, "kubernetes.io/tls", data)?, output)
            }
            SecretKind::DockerRegistry {
                name,
                docker_server,
                docker_username,
                docker_password,
                docker_email,
                output,
            } => {
                let config =
                    generate::docker_config(docker_server, docker_username, docker_password, docker_email);
                let data = vec![(".dockerconfigjson".to_string(), config)];
                (
                    generate::secret(name, "kubernetes.io/dockerconfigjson", data)?,
                    output,
                )
            }
        },
        CreateKind::Serviceaccount { name, output } => (generate::service_account(name)?, output),
        CreateKind::Namespace { name, output } => (generate::namespace(name)?, output),
        CreateKind::Token {
            name,
            duration,
            audiences,
        } => return create_token(ctx, name, duration.as_deref(), audiences, out).await,
    };
    output.create(ctx, obj, out).await.map(|_| ())
}

/// `create token SA [--duration=1h] [--audience=A]`: a TokenRequest, the token printed.
async fn create_token(
    ctx: &Context,
    name: &str,
    duration: Option<&str>,
    audiences: &[String],
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let expiration_seconds = match duration {
        Some(d) => Some(
            crate::args::go_duration("--duration", d)?
                .as_secs()
                .min(i32::MAX as u64) as i32,
        ),
        None => None,
    };
    let req = rkube_api::rpc::CreateTokenRequest {
        namespace: ctx.namespace.clone(),
        name: name.to_string(),
        audiences: audiences.to_vec(),
        expiration_seconds,
        bound_object_ref: None,
    };
    let server = ctx.connect().await?;
    let token = server
        .client()
        .create_token(req)
        .await
        .map_err(|e| server.err(e))?;
    writeln!(out, "{}", token.token)?;
    Ok(())
}
