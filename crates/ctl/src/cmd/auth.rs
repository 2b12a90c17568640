//! `rkubectl auth can-i VERB RESOURCE[/NAME] [NAME]`: asks the apiserver
//! whether the caller (or, with `--as`, another user it may impersonate)
//! may do something, and prints `yes` or `no` like kubectl, exiting 1 on
//! `no` so scripts can test it.

use crate::cmd::Context;
use crate::error::CtlError;
use clap::{Args, Subcommand};
use rkube_api::rpc::AccessReviewRequest;
use rkube_api::ResourceInfo;
use std::io::Write;

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Check whether an action is allowed: `can-i create pods`,
    /// `can-i get pods/web`, `can-i get pods --subresource=log`.
    CanI(CanIArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CanIArgs {
    /// get, list, watch, create, update, patch, delete, deletecollection,
    /// impersonate, or `*`.
    pub verb: String,
    /// A resource as kubectl names it (`pods`, `deploy`, `roles.rbac.authorization.k8s.io`),
    /// optionally `/NAME`.
    pub resource: String,
    /// The object's name.
    pub name: Option<String>,
    /// A subresource: log, exec, status, binding, proxy.
    #[arg(long)]
    pub subresource: Option<String>,
    /// Ask about every namespace (cluster scope).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Ask about this user instead of yourself (needs `impersonate`).
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// Groups of the impersonated user; repeat for several.
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_groups: Vec<String>,
}

/// The access review `args` asks for in namespace `ns`.
pub fn review(args: &CanIArgs, ns: &str) -> AccessReviewRequest {
    let (resource, mut name) = match args.resource.split_once('/') {
        Some((r, n)) => (r.to_string(), n.to_string()),
        None => (args.resource.clone(), String::new()),
    };
    if let Some(n) = &args.name {
        name = n.clone();
    }
    // A kind rkube serves gives its group and scope; anything else (`*`, a
    // kind served later) is asked about literally.
    let (group, plural, namespaced) = match ResourceInfo::lookup(&resource) {
        Some(info) => (info.group.to_string(), info.plural.to_string(), info.namespaced),
        None => match resource.split_once('.') {
            Some((r, g)) => (g.to_string(), r.to_string(), true),
            None => (String::new(), resource.clone(), true),
        },
    };
    AccessReviewRequest {
        verb: args.verb.clone(),
        group,
        resource: plural,
        subresource: args.subresource.clone().unwrap_or_default(),
        namespace: if namespaced && !args.all_namespaces {
            ns.to_string()
        } else {
            String::new()
        },
        name,
        user: args.as_user.clone().unwrap_or_default(),
        groups: args.as_groups.clone(),
    }
}

pub async fn run(ctx: &Context, args: &AuthArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    match &args.command {
        AuthCommand::CanI(a) => {
            let server = ctx.connect().await?;
            let answer = server
                .client()
                .access_review(review(a, &ctx.namespace))
                .await
                .map_err(|e| server.err(e))?;
            if answer.allowed {
                writeln!(out, "yes")?;
                Ok(())
            } else {
                writeln!(out, "no")?;
                Err(CtlError::ExitCode(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(verb: &str, resource: &str) -> CanIArgs {
        CanIArgs {
            verb: verb.into(),
            resource: resource.into(),
            name: None,
            subresource: None,
            all_namespaces: false,
            as_user: None,
            as_groups: vec![],
        }
    }

    #[test]
    fn resources_resolve_like_kubectl() {
        let r = review(&args("create", "deploy"), "team");
        assert_eq!(
            (r.group.as_str(), r.resource.as_str(), r.namespace.as_str()),
            ("apps", "deployments", "team")
        );
        let r = review(&args("get", "pods/web"), "team");
        assert_eq!((r.resource.as_str(), r.name.as_str()), ("pods", "web"));
        let r = review(&args("list", "clusterroles"), "team");
        assert_eq!(
            (r.group.as_str(), r.namespace.as_str()),
            ("rbac.authorization.k8s.io", "")
        );
        let r = review(&args("get", "widgets.example.com"), "team");
        assert_eq!(
            (r.group.as_str(), r.resource.as_str()),
            ("example.com", "widgets")
        );
    }
}
