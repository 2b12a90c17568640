//! `rkubectl autoscale deployment/NAME --min=1 --max=5 --cpu-percent=50`:
//! creates an autoscaling/v2 HorizontalPodAutoscaler for a Deployment or
//! ReplicaSet, named after it, as kubectl does.

use crate::args::lookup_kind;
use crate::cmd::Context;
use crate::error::CtlError;
use rkube_api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use rkube_api::{DynObject, Resource};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct AutoscaleArgs {
    /// `deployment/NAME`, `deployment NAME`, `rs/NAME`.
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// The fewest replicas the autoscaler may set.
    #[arg(long, default_value_t = 1)]
    pub min: i32,
    /// The most replicas the autoscaler may set.
    #[arg(long)]
    pub max: i32,
    /// Target average CPU use, in percent of the pods' requests; without it
    /// the server's default (80 %) applies.
    #[arg(long)]
    pub cpu_percent: Option<i32>,
    /// The autoscaler's name; the target's name by default.
    #[arg(long)]
    pub name: Option<String>,
}

pub async fn run(ctx: &Context, args: &AutoscaleArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let (kind, name) = match args.target.as_slice() {
        [one] => one
            .split_once('/')
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .ok_or_else(|| {
                CtlError::usage(format!(
                    "{one:?}: give the target as KIND/NAME or KIND NAME (e.g. deployment/web)"
                ))
            })?,
        [k, n] => (k.clone(), n.clone()),
        _ => {
            return Err(CtlError::usage(
                "give the target as KIND/NAME or KIND NAME (e.g. deployment/web)",
            ));
        }
    };
    let info = lookup_kind(&kind)?;
    if info.group != "apps" || !matches!(info.kind, "Deployment" | "ReplicaSet") {
        return Err(CtlError::usage(format!(
            "cannot autoscale a {}: only deployments and replicasets can be autoscaled",
            info.kind
        )));
    }
    if args.max < 1 {
        return Err(CtlError::usage("--max is required and must be at least 1"));
    }
    if args.min < 1 || args.min > args.max {
        return Err(CtlError::usage(format!(
            "--min={} must be at least 1 and at most --max={}",
            args.min, args.max
        )));
    }
    if args.cpu_percent.is_some_and(|p| p < 1) {
        return Err(CtlError::usage("--cpu-percent must be at least 1"));
    }
    let server = ctx.connect().await?;
    // The target must exist, as kubectl checks before creating.
    server.get(info, &ctx.namespace, &name).await?;
    let mut hpa = HorizontalPodAutoscaler {
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: Some(CrossVersionObjectReference {
                kind: info.kind.to_string(),
                name: name.clone(),
                api_version: info.api_version(),
            }),
            min_replicas: Some(args.min),
            max_replicas: args.max,
            metrics: args
                .cpu_percent
                .map(|p| MetricSpec {
                    r#type: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: Some(MetricTarget {
                            r#type: "Utilization".into(),
                            average_utilization: Some(p),
                            ..Default::default()
                        }),
                    }),
                    container_resource: None,
                })
                .into_iter()
                .collect(),
            behavior: None,
        }),
        ..Default::default()
    };
    hpa.set_type_meta();
    let meta = hpa.metadata_mut();
    meta.name = args.name.clone().unwrap_or(name);
    meta.namespace = ctx.namespace.clone();
    let created = server.create(&DynObject::from_typed(&hpa)).await?;
    writeln!(
        out,
        "horizontalpodautoscaler.autoscaling/{} autoscaled",
        created.name
    )?;
    Ok(())
}
