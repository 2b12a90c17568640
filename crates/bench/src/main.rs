//! `rkube-bench`: benchmarks of rkube's daemons against the systems they
//! stand in for, run by `make bench`.
//!
//! The benchmark is a list of named suites (see [`suites::SUITES`]); each is
//! a module that measures one thing and returns a Markdown section. `--only`
//! selects suites by name; without it every suite runs. Each section is
//! printed and written to `<out-dir>/<suite>.md` (default `target/bench`).
//!
//! Everything runs on 127.0.0.1, under one temporary directory, and every
//! loop is bounded in time or count, so a run always ends by itself.

mod hollow;
mod one_node;
mod pod_watch;
mod process;
mod startup_trace;
mod stats;
mod suites;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// Benchmarks of rkube, compared with what it replaces.
#[derive(Parser, Debug, Clone)]
#[command(name = "rkube-bench", version, about)]
pub struct Args {
    /// Seconds each timed phase (creates, gets at one concurrency) runs.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub seconds: u64,
    /// Run only these suites (repeat or comma-separate); default: all.
    #[arg(long, value_delimiter = ',', value_name = "SUITE")]
    pub only: Vec<String>,
    /// Objects created before timing a full list.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub objects: u64,
    /// Concurrent watchers in the watch-latency phase.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub watchers: usize,
    /// Objects written one by one while the watchers measure delivery.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub watch_events: u64,
    /// Concurrency levels (clients) of the create and get phases.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64], value_name = "N")]
    pub clients: Vec<usize>,
    /// The etcd binary to compare against (Debian package etcd-server).
    #[arg(long, default_value = "etcd", value_name = "PATH")]
    pub etcd_bin: PathBuf,
    /// Parent of the temporary data directories (rkube's and etcd's are
    /// side by side in one directory, so on the same filesystem).
    #[arg(long, default_value = "/var/tmp", value_name = "DIR")]
    pub tmp_dir: PathBuf,
    /// Where the Markdown reports go; default: the workspace's target/bench.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// The `rest` suite without the apiserver's background JSON encoding, to measure
    /// what it saves and costs.
    #[arg(long)]
    pub no_json_warming: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let selected = suites::select(&args.only)?;
    if args.seconds == 0 || args.clients.contains(&0) {
        anyhow::bail!("--seconds and --clients must be at least 1");
    }
    let out_dir = args.out_dir.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")))
            .join("bench")
    });
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create the report directory {}", out_dir.display()))?;
    for suite in selected {
        eprintln!("== suite {} ==", suite.name);
        let started = std::time::Instant::now();
        let report = (suite.run)(&args).with_context(|| format!("suite {} failed", suite.name))?;
        let report = format!(
            "{report}\nSuite `{}` took {:.0} s (`--seconds {}`).\n",
            suite.name,
            started.elapsed().as_secs_f64(),
            args.seconds
        );
        println!("{report}");
        let path = out_dir.join(format!("{}.md", suite.name));
        std::fs::write(&path, &report)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}
