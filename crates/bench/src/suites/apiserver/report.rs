//! The suite's Markdown section: the machine it ran on and the results table.

use super::{Results, LIST_RUNS, LOAD_CLIENTS};
use crate::Args;
use anyhow::Context;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What the reader needs to judge the numbers.
pub(super) struct Facts {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    filesystem: String,
    same_fs: bool,
}

pub(super) fn machine_facts(rkube_dir: &Path, etcd_dir: &Path) -> anyhow::Result<Facts> {
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("cannot stat {}", p.display()))
    };
    let same_fs = dev(rkube_dir)? == dev(etcd_dir)?;
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dir = rkube_dir
        .parent()
        .unwrap_or(rkube_dir)
        .to_string_lossy()
        .to_string();
    let df = run("df", &["-T", "-h", &dir]);
    let filesystem = df
        .lines()
        .nth(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [dev, fstype, size, .., mount] => {
                    format!("{fstype} on {dev} ({size}), mounted on {mount}; data under {dir}")
                }
                _ => l.to_string(),
            }
        })
        .unwrap_or_else(|| format!("unknown (df failed); data under {dir}"));
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Ok(Facts {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model,
        kernel: run("uname", &["-sr"]),
        filesystem,
        same_fs,
    })
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

pub(super) fn render(args: &Args, facts: &Facts, etcd_version: &str, r: &Results) -> String {
    let mut s = String::new();
    let mut row = |metric: &str, rk: f64, et: f64, digits: usize| {
        let fmt = |v: f64| {
            if v.is_finite() {
                format!("{v:.digits$}")
            } else {
                "-".into()
            }
        };
        let _ = writeln!(s, "| {metric} | {} | {} | {} |", fmt(rk), fmt(et), ratio(rk, et));
    };
    row(
        "object size, bytes (client-encoded ConfigMap / etcd value)",
        r.object_bytes as f64,
        r.object_bytes as f64,
        0,
    );
    for l in &r.levels {
        let n = l.clients;
        let ops = [
            ("creates", "create", &l.rkube_create, &l.etcd_create),
            ("gets", "get", &l.rkube_get, &l.etcd_get),
        ];
        for (plural, singular, rk, et) in ops {
            row(
                &format!("{plural}/s, {n} clients"),
                rk.per_second(),
                et.per_second(),
                0,
            );
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                row(
                    &format!("{singular} {name} ms, {n} clients"),
                    rk.latencies.quantile_ms(q),
                    et.latencies.quantile_ms(q),
                    2,
                );
            }
            // a Kubernetes create is etcd's put-if-absent; plain puts are the reference
            if singular == "create" {
                row(
                    &format!("(ref.) creates/s vs etcd plain put/s, {n} clients"),
                    rk.per_second(),
                    l.etcd_put.per_second(),
                    0,
                );
                row(
                    &format!("(ref.) create p99 ms vs etcd plain put p99, {n} clients"),
                    rk.latencies.quantile_ms(0.99),
                    l.etcd_put.latencies.quantile_ms(0.99),
                    2,
                );
            }
        }
    }
    let o = args.objects;
    row(
        &format!("list of {o} objects, ms (median of {LIST_RUNS})"),
        r.list_rkube.as_secs_f64() * 1e3,
        r.list_etcd.as_secs_f64() * 1e3,
        1,
    );
    row(
        &format!("loading those {o} objects, creates/s ({LOAD_CLIENTS} clients)"),
        r.load_rkube.per_second(),
        r.load_etcd.per_second(),
        0,
    );
    let w = args.watchers;
    row(
        &format!("watch delivery p50 ms, {w} watchers"),
        r.watch_rkube.quantile_ms(0.5),
        r.watch_etcd.quantile_ms(0.5),
        2,
    );
    row(
        &format!("watch delivery p99 ms, {w} watchers"),
        r.watch_rkube.quantile_ms(0.99),
        r.watch_etcd.quantile_ms(0.99),
        2,
    );
    row(
        "watch deliveries measured",
        r.watch_rkube.len() as f64,
        r.watch_etcd.len() as f64,
        0,
    );
    let table = s;

    let mut out = String::new();
    let _ = writeln!(out, "## apiserver: rkube vs etcd\n");
    let _ = writeln!(
        out,
        "Machine: {} CPUs ({}), {}.",
        facts.cpus, facts.cpu_model, facts.kernel
    );
    let _ = writeln!(
        out,
        "Data: {}; rkube's and etcd's data directories are {}.",
        facts.filesystem,
        if facts.same_fs {
            "on the same filesystem"
        } else {
            "on DIFFERENT filesystems"
        }
    );
    let _ = writeln!(
        out,
        "etcd: {etcd_version}, default settings (fsync on every commit). rkube: the apiserver in-process \
         on its own 2-thread runtime, sled store, durable (group-committed fsync) writes. \
         Every client has its own connection; {} s per timed phase.\n",
        args.seconds
    );
    let _ = writeln!(
        out,
        "etcd's create is a transaction (put if create_revision == 0), as the Kubernetes apiserver does; \
         `(ref.)` rows compare with plain etcd puts. rkube objects grow on the server (uid, timestamps, \
         resourceVersion): stored {} bytes. Rates: higher is better; times: lower is better.\n",
        r.stored_bytes
    );
    let _ = writeln!(out, "| metric | rkube | etcd | rkube/etcd |\n|---|---|---|---|");
    out.push_str(&table);
    if let Some(l) = r.levels.iter().find(|l| l.clients == 16) {
        let (rk, et) = (l.rkube_create.per_second(), l.etcd_create.per_second());
        let (rk99, et99) = (
            l.rkube_create.latencies.quantile_ms(0.99),
            l.etcd_create.latencies.quantile_ms(0.99),
        );
        let met = rk >= et && rk99 <= et99;
        let _ = writeln!(
            out,
            "\nTarget (durable creates/s with 16 clients >= etcd's, p99 no worse): **{}** \
             ({rk:.0} vs {et:.0} creates/s; p99 {rk99:.2} vs {et99:.2} ms). Against plain etcd puts: {:.0} puts/s, p99 {:.2} ms.",
            if met { "MET" } else { "NOT MET" },
            l.etcd_put.per_second(),
            l.etcd_put.latencies.quantile_ms(0.99),
        );
    } else {
        let _ = writeln!(
            out,
            "\nTarget not evaluated: it is defined at 16 clients, not measured in this run."
        );
    }
    out
}
