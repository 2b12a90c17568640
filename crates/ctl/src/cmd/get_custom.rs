//! `rkubectl get` for kinds a CustomResourceDefinition added: found through
//! the Discovery call (by plural, singular, short name or kind, optionally
//! `.group`), their objects read as JSON, tables with the CRD's
//! `additionalPrinterColumns` (read from the CRD itself), or the objects as
//! yaml, json or names.

use super::get::GetArgs;
use crate::cmd::Context;
use crate::error::CtlError;
use crate::printers::{self, OutputFormat, Table};
use prost_types::Any;
use rkube_api::crd::{CrdSpec, CRD_INFO};
use rkube_api::rpc::ApiResource;
use rkube_api::ResourceInfo;
use rkube_client::ListParams;
use serde_json::Value;
use std::io::Write;

/// The served kind `name` means, from the server's discovery.
fn find<'a>(resources: &'a [ApiResource], name: &str) -> Option<&'a ApiResource> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    resources.iter().find(|r| {
        let named = r.name == base
            || r.singular_name == base
            || r.short_names.contains(&base)
            || r.kind.eq_ignore_ascii_case(&base);
        named && group.as_deref().is_none_or(|g| g == r.group)
    })
}

/// A `ResourceInfo` for a kind learnt from discovery; rkubectl lives for one
/// command, so the few bytes it keeps are never given back.
fn info_of(r: &ApiResource) -> &'static ResourceInfo {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let shorts: Vec<&'static str> = r.short_names.iter().map(|s| leak(s)).collect();
    Box::leak(Box::new(ResourceInfo {
        group: leak(&r.group),
        version: leak(&r.version),
        kind: leak(&r.kind),
        plural: leak(&r.name),
        singular: leak(&r.singular_name),
        short_names: Box::leak(shorts.into_boxed_slice()),
        namespaced: r.namespaced,
        has_status: false,
        type_url: leak(&rkube_api::crd::type_url(&r.group, &r.version, &r.kind)),
    }))
}

fn json(any: &Any) -> Result<Value, CtlError> {
    serde_json::from_slice(&any.value)
        .map_err(|e| CtlError::usage(format!("the server sent an object that is not JSON: {e}")))
}

/// `rkubectl get` of a kind the static registry does not know: `Ok(false)`
/// when the server does not serve it either (the caller reports it).
pub async fn run(ctx: &Context, args: &GetArgs, out: &mut dyn Write) -> Result<bool, CtlError> {
    let (kind, names): (String, Vec<String>) = match args.targets.as_slice() {
        [one] if one.contains('/') => {
            let (k, n) = one.split_once('/').unwrap_or((one, ""));
            (k.to_string(), vec![n.to_string()])
        }
        [kind, names @ ..] => (kind.clone(), names.to_vec()),
        [] => return Ok(false),
    };
    let server = ctx.connect().await?;
    let client = server.client();
    let resources = client.discovery().await.map_err(|e| server.err(e))?;
    let Some(resource) = find(&resources, &kind) else {
        return Ok(false);
    };
    let info = info_of(resource);
    let namespace = if args.all_namespaces {
        String::new()
    } else {
        ctx.namespace.clone()
    };
    let mut objects = Vec::new();
    if names.is_empty() {
        let lp = ListParams {
            label_selector: args.selector.clone().unwrap_or_default(),
            field_selector: args.field_selector.clone().unwrap_or_default(),
            ..Default::default()
        };
        let list = client
            .list_any(info, &namespace, &lp)
            .await
            .map_err(|e| server.err(e))?;
        for any in &list.items {
            objects.push(json(any)?);
        }
    } else {
        for name in &names {
            let any = client
                .get_any(info, &ctx.namespace, name)
                .await
                .map_err(|e| server.err(e))?;
            objects.push(json(&any)?);
        }
    }
    for obj in &mut objects {
        obj["apiVersion"] = Value::String(info.api_version());
        if !args.show_managed_fields {
            printers::hide_managed_fields(obj);
        }
    }
    let single = names.len() == 1;
    match args.output.clone().unwrap_or(OutputFormat::Table) {
        OutputFormat::Table | OutputFormat::Wide => {
            if objects.is_empty() {
                eprintln!("No resources found");
                return Ok(true);
            }
            // the printer columns of the version served, from the CRD
            let crd_name = format!("{}.{}", info.plural, info.group);
            let declared = match client.get_any(&CRD_INFO, "", &crd_name).await {
                Ok(crd) => CrdSpec::from_object(&json(&crd)?)
                    .ok()
                    .and_then(|s| s.versions.into_iter().find(|v| v.name == info.version))
                    .map(|v| v.additional_printer_columns)
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let wide = args.output == Some(OutputFormat::Wide);
            let columns: Vec<_> = rkube_printers::custom::columns(&declared)
                .into_iter()
                .filter(|c| wide || c.priority == 0)
                .collect();
            let now = chrono::Utc::now();
            let mut header: Vec<String> = columns.iter().map(|c| c.name.to_uppercase()).collect();
            if args.all_namespaces {
                header.insert(0, "NAMESPACE".into());
            }
            let rows = objects
                .iter()
                .map(|obj| {
                    let mut row: Vec<String> = columns
                        .iter()
                        .map(|c| rkube_printers::custom::cell_text(c, obj, now))
                        .collect();
                    if args.all_namespaces {
                        row.insert(0, obj["metadata"]["namespace"].as_str().unwrap_or("").to_string());
                    }
                    row
                })
                .collect();
            let text = Table { header, rows }.render();
            let text = if args.no_headers {
                text.split_once('\n')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default()
            } else {
                text
            };
            write!(out, "{text}")?;
        }
        OutputFormat::Name => {
            for obj in &objects {
                let name = obj["metadata"]["name"].as_str().unwrap_or("");
                writeln!(out, "{}/{name}", info.singular_group())?;
            }
        }
        format => {
            let doc = if single && objects.len() == 1 {
                objects.remove(0)
            } else {
                printers::list_document(objects)
            };
            match format {
                OutputFormat::Yaml => write!(out, "{}", rkube_api::codec::json_to_yaml(&doc))?,
                OutputFormat::JsonPath(t) => writeln!(out, "{}", t.render(&doc).map_err(CtlError::usage)?)?,
                _ => write!(out, "{}", printers::json_pretty(&doc))?,
            }
        }
    }
    Ok(true)
}
