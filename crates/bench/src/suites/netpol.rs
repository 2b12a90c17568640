//! rkube-proxy's NetworkPolicy enforcement at scale, inside a network namespace this suite
//! creates and removes: N policies (100 and 1,000) in one namespace, each selecting its
//! own pod on this node and allowing ingress from its own client pods (on another node)
//! and an ipBlock with an except, on a port number and a named port, and egress to any pod
//! of the namespace on UDP 53; 2N pods. Per size: the time to compute the plan from the
//! objects (the proxy's own model), to render the table, and to load it with `nft -f`
//! (the proxy's `apply`; median of 3, each replacing the table the last one left), and
//! what the kernel then holds: rules, sets and set elements, counted from `nft -a list
//! table`.
//!
//! Needs root (network namespaces) and nft.

use super::proxy::{nix_root, Netns};
use crate::Args;
use anyhow::Context;
use rkube_api::core::v1::Pod;
use rkube_api::defaults::Defaulting;
use rkube_api::networking::v1::NetworkPolicy;
use rkube_proxy::netpol::{model, render};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZES: [usize; 2] = [100, 1_000];
const RUNS: usize = 3;
const NODE: &str = "bench-node";

struct Result {
    policies: usize,
    pods: usize,
    compute: Duration,
    render: Duration,
    loads: Vec<Duration>,
    bytes: usize,
    rules: usize,
    sets: usize,
    elements: usize,
}

pub fn run(_args: &Args) -> anyhow::Result<String> {
    if !nix_root() {
        return Ok("## netpol\n\nNot run: network namespaces need root.\n".into());
    }
    let id = rand::random::<u32>() & 0xffffff;
    let ns = Netns::new(format!("rkube-bench-{id:06x}-netpol"))?;
    let nft = ns.nsenter("nft");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for n in SIZES {
        let (policies, pods) = objects(n)?;
        let started = Instant::now();
        let (plan, problems) = model::plan(NODE, &policies, &pods, &[]);
        let compute = started.elapsed();
        anyhow::ensure!(problems.is_empty(), "unexpected problems: {:?}", problems.first());
        let started = Instant::now();
        let script = render::render(&plan);
        let render = started.elapsed();
        let mut loads = Vec::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            rt.block_on(rkube_proxy::nft::apply(&nft, &script))
                .with_context(|| format!("loading {n} policies"))?;
            loads.push(started.elapsed());
        }
        eprintln!("netpol: {n} policies loaded in {loads:?}");
        let listed = list_table(&nft)?;
        let (rules, sets, elements) = count(&listed);
        results.push(Result {
            policies: n,
            pods: pods.len(),
            compute,
            render,
            loads,
            bytes: script.len(),
            rules,
            sets,
            elements,
        });
    }
    Ok(report(&results))
}

/// What the proxy's informers would hold: policies and pods.
type Objects = (Vec<Arc<NetworkPolicy>>, Vec<Arc<Pod>>);

/// `n` policies and `2n` pods, as described at the top.
fn objects(n: usize) -> anyhow::Result<Objects> {
    let ip = |i: usize, base: u8| Ipv4Addr::new(10, base + (i / 250) as u8, 0, (i % 250) as u8 + 2);
    let mut pods = Vec::with_capacity(2 * n);
    let mut policies = Vec::with_capacity(n);
    for i in 0..n {
        let (target, client) = (ip(i, 100), ip(i, 150));
        pods.push(Arc::new(serde_yaml::from_str::<Pod>(&format!(
            "metadata: {{name: app-{i}, namespace: bench, labels: {{app: app-{i}}}}}\nspec: {{nodeName: {NODE}, containers: [{{name: c, image: x, ports: [{{name: http, containerPort: 8080}}, {{name: metrics, containerPort: 9090}}]}}]}}\nstatus: {{phase: Running, podIP: {target}}}\n"
        ))?));
        pods.push(Arc::new(serde_yaml::from_str::<Pod>(&format!(
            "metadata: {{name: client-{i}, namespace: bench, labels: {{client: app-{i}}}}}\nspec: {{nodeName: other-node, containers: [{{name: c, image: x}}]}}\nstatus: {{phase: Running, podIP: {client}}}\n"
        ))?));
        let mut policy: NetworkPolicy = serde_yaml::from_str(&format!(
            "metadata: {{name: app-{i}, namespace: bench}}\nspec:\n  podSelector: {{matchLabels: {{app: app-{i}}}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{client: app-{i}}}}}}}, {{ipBlock: {{cidr: 192.168.0.0/16, except: [192.168.{}.0/24]}}}}]\n    ports: [{{port: 8080}}, {{port: metrics}}]\n  egress:\n  - to: [{{podSelector: {{}}}}]\n    ports: [{{port: 53, protocol: UDP}}]\n",
            i % 256
        ))?;
        policy.apply_defaults();
        policies.push(Arc::new(policy));
    }
    Ok((policies, pods))
}

fn list_table(nft: &[String]) -> anyhow::Result<String> {
    let out = std::process::Command::new(&nft[0])
        .args(&nft[1..])
        .args(["-a", "list", "table", "inet", render::TABLE])
        .output()
        .context("running nft list table")?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (rules, sets and maps, set elements) in `nft -a list table` output: a rule is a line
/// inside a chain that ends with its handle; elements are counted between `elements = {`
/// and the closing brace.
fn count(listed: &str) -> (usize, usize, usize) {
    let (mut rules, mut sets, mut elements) = (0, 0, 0);
    let mut in_elements = false;
    for line in listed.lines().map(str::trim) {
        if line.starts_with("set ") || line.starts_with("map ") {
            sets += 1;
        } else if let Some(rest) = line.strip_prefix("elements = {") {
            elements += rest
                .split(',')
                .filter(|e| !e.trim().trim_end_matches('}').trim().is_empty())
                .count();
            in_elements = !rest.trim_end().ends_with('}');
        } else if in_elements {
            elements += line
                .split(',')
                .filter(|e| !e.trim().trim_end_matches('}').trim().is_empty())
                .count();
            in_elements = !line.ends_with('}');
        } else if line.contains("# handle") && !line.starts_with("chain ") && !line.starts_with("table ") {
            rules += 1;
        }
    }
    (rules, sets, elements)
}

fn report(results: &[Result]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut s = String::new();
    let _ = writeln!(s, "## netpol: NetworkPolicy enforcement (nftables)\n");
    let _ = writeln!(
        s,
        "In a network namespace the suite creates, on this machine ({} cores). Each policy selects one pod of this node and allows ingress from its client pod and an ipBlock with an except, on a number and a named port, and egress on UDP 53 to the namespace's pods.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(s, "| policies (pods) | compute | render | nft -f, median of {RUNS} | each load | nft rules | sets | set elements | ruleset |");
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    );
    for r in results {
        let mut loads = r.loads.clone();
        loads.sort();
        let each: Vec<String> = r.loads.iter().map(|d| format!("{:.0} ms", ms(*d))).collect();
        let _ = writeln!(
            s,
            "| {} ({}) | {:.1} ms | {:.1} ms | {:.0} ms | {} | {} | {} | {} | {:.2} MB |",
            r.policies,
            r.pods,
            ms(r.compute),
            ms(r.render),
            ms(loads[loads.len() / 2]),
            each.join(", "),
            r.rules,
            r.sets,
            r.elements,
            r.bytes as f64 / 1e6
        );
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_rules_sets_and_elements_of_a_listing() {
        let listed = "table inet rkube-netpol { # handle 7\n\tset policy_0_0_peers { # handle 2\n\t\ttype ipv4_addr\n\t\telements = { 10.150.0.2, 10.150.0.3,\n\t\t\t     10.150.0.4 }\n\t}\n\tchain policy_0 { # handle 9\n\t\tip saddr @policy_0_0_peers accept # handle 10\n\t\tip saddr 192.168.0.0/16 accept # handle 11\n\t}\n}\n";
        assert_eq!(super::count(listed), (2, 1, 3));
    }
}
