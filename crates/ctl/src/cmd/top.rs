//! `rkubectl top pods|nodes`: CPU and memory usage, which the apiserver
//! gathers from the kubelets (cgroups), as `kubectl top` shows it.

use crate::cmd::Context;
use crate::error::CtlError;
use rkube_api::rpc::MetricsRequest;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// `pods` (`pod`, `po`) or `nodes` (`node`, `no`).
    pub what: String,
    /// Only pods matching this label selector.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Pods of every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Per-container usage.
    #[arg(long)]
    pub containers: bool,
}

fn cpu(millis: i64) -> String {
    format!("{millis}m")
}

fn memory(bytes: i64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

fn table(rows: Vec<Vec<String>>, out: &mut dyn Write) -> Result<(), CtlError> {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: &TopArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let nodes = match args.what.as_str() {
        "pods" | "pod" | "po" => false,
        "nodes" | "node" | "no" => true,
        other => return Err(CtlError::usage(format!("top shows pods or nodes, not {other:?}"))),
    };
    let server = ctx.connect().await?;
    let req = MetricsRequest {
        namespace: if args.all_namespaces || nodes {
            String::new()
        } else {
            ctx.namespace.clone()
        },
        label_selector: args.selector.clone().unwrap_or_default(),
        nodes,
    };
    let resp = server.client().metrics(req).await.map_err(|e| server.err(e))?;
    for e in &resp.errors {
        eprintln!("warning: {e}");
    }
    let mut rows = Vec::new();
    if nodes {
        rows.push(vec!["NAME".into(), "CPU(cores)".into(), "MEMORY(bytes)".into()]);
        let mut ns = resp.nodes.clone();
        ns.sort_by(|a, b| a.name.cmp(&b.name));
        for n in ns {
            rows.push(vec![n.name, cpu(n.cpu_millis), memory(n.memory_bytes)]);
        }
    } else {
        let mut header = Vec::new();
        if args.all_namespaces {
            header.push("NAMESPACE".to_string());
        }
        header.push("NAME".into());
        if args.containers {
            header.push("CONTAINER".into());
        }
        header.extend(["CPU(cores)".to_string(), "MEMORY(bytes)".to_string()]);
        rows.push(header);
        let mut pods = resp.pods.clone();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for p in pods {
            let prefix = |row: &mut Vec<String>| {
                if args.all_namespaces {
                    row.push(p.namespace.clone());
                }
                row.push(p.name.clone());
            };
            if args.containers {
                for c in &p.containers {
                    let mut row = Vec::new();
                    prefix(&mut row);
                    row.extend([c.name.clone(), cpu(c.cpu_millis), memory(c.memory_bytes)]);
                    rows.push(row);
                }
            } else {
                let mut row = Vec::new();
                prefix(&mut row);
                let cpu_sum: i64 = p.containers.iter().map(|c| c.cpu_millis).sum();
                let mem_sum: i64 = p.containers.iter().map(|c| c.memory_bytes).sum();
                row.extend([cpu(cpu_sum), memory(mem_sum)]);
                rows.push(row);
            }
        }
    }
    if rows.len() == 1 {
        return Err(CtlError::usage(if resp.errors.is_empty() {
            "metrics not available yet: no kubelet reported usage".to_string()
        } else {
            "metrics not available: no kubelet answered (see the warnings above)".to_string()
        }));
    }
    table(rows, out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn units_follow_kubectl() {
        assert_eq!(super::cpu(250), "250m");
        assert_eq!(super::memory(64 * 1024 * 1024), "64Mi");
    }
}
