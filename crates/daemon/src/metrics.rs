//! Prometheus metrics in the text exposition format (version 0.0.4): the
//! process metrics every exporter has (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, ...), read from the kernel at scrape time,
//! and a registry any daemon adds its own counters and gauges to. Counters
//! and gauges are atomics: updating one never takes a lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A value that only goes up (requests served, pods synced).
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (watchers open, pods running).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn dec(&self) {
        self.add(-1);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

type GaugeFn = Box<dyn Fn() -> f64 + Send + Sync>;

enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Fn(GaugeFn),
}

struct Family {
    help: String,
    kind: &'static str,
    /// Rendered label set (`{a="b"}` or empty) to its value.
    series: BTreeMap<String, Series>,
}

/// Named metric families. Asking twice for the same name and labels returns
/// the same counter, so callers need not keep handles around.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// The process's registry, the one its health endpoint serves.
    pub fn global() -> &'static Arc<Registry> {
        static GLOBAL: OnceLock<Arc<Registry>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Registry::new()))
    }

    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.counter_with(name, help, &[])
    }

    /// A counter with labels, e.g. `("controller", "replicaset")`.
    pub fn counter_with(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        let made = self.series(name, help, "counter", labels, || {
            Series::Counter(Counter::default())
        });
        match made {
            Some(Series::Counter(c)) => c.clone(),
            _ => unreachable!("series() checked the kind"),
        }
    }

    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.gauge_with(name, help, &[])
    }

    pub fn gauge_with(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        let made = self.series(name, help, "gauge", labels, || Series::Gauge(Gauge::default()));
        match made {
            Some(Series::Gauge(g)) => g.clone(),
            _ => panic!("metric {name}: registered as a computed gauge, not a settable one"),
        }
    }

    /// A gauge computed at each scrape (queue lengths, cache sizes);
    /// replaces an earlier function with the same name and labels.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = family(&mut families, name, help, "gauge");
        family
            .series
            .insert(render_labels(labels), Series::Fn(Box::new(f)));
    }

    /// The handle of `name`/`labels`, created with `make` when new; `None`
    /// when it is a computed gauge. Panics when `name` is not a valid metric
    /// name or is registered with another kind: both are programming errors
    /// the first test run shows.
    fn series(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
    ) -> Option<Series> {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = family(&mut families, name, help, kind);
        match family.series.entry(render_labels(labels)).or_insert_with(make) {
            Series::Counter(c) => Some(Series::Counter(c.clone())),
            Series::Gauge(g) => Some(Series::Gauge(g.clone())),
            Series::Fn(_) => None,
        }
    }

    /// The registry's metrics in the text format.
    pub fn render(&self, out: &mut String) {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for (name, family) in families.iter() {
            header(out, name, &family.help, family.kind);
            for (labels, series) in &family.series {
                let value = match series {
                    Series::Counter(c) => c.get() as f64,
                    Series::Gauge(g) => g.get() as f64,
                    Series::Fn(f) => f(),
                };
                sample(out, name, labels, value);
            }
        }
    }
}

fn family<'a>(
    families: &'a mut BTreeMap<String, Family>,
    name: &str,
    help: &str,
    kind: &'static str,
) -> &'a mut Family {
    assert!(
        valid_name(name),
        "metric name {name:?} is not a valid Prometheus name"
    );
    let family = families.entry(name.to_string()).or_insert_with(|| Family {
        help: help.to_string(),
        kind,
        series: BTreeMap::new(),
    });
    assert!(
        family.kind == kind,
        "metric {name} is registered as a {}, not a {kind}",
        family.kind
    );
    family
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        assert!(
            valid_name(k) && !k.contains(':'),
            "metric label {k:?} is not a valid Prometheus label name"
        );
        if i > 0 {
            s.push(',');
        }
        let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = writeln!(out, "{name}{labels} {}", value as i64);
    } else {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn one(out: &mut String, name: &str, help: &str, kind: &str, value: Option<f64>) {
    if let Some(v) = value {
        header(out, name, help, kind);
        sample(out, name, "", v);
    }
}

/// The standard process metrics, read now. A value the kernel does not give
/// is left out rather than reported as zero.
pub fn render_process_metrics(out: &mut String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let n: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(n * 1024.0)
        })
    };
    let cpu = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .ok()
        .map(|u| {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        });
    one(
        out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        cpu,
    );
    one(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
        kib("VmRSS"),
    );
    one(
        out,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        "gauge",
        kib("VmSize"),
    );
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    one(
        out,
        "process_open_fds",
        "Number of open file descriptors.",
        "gauge",
        fds,
    );
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft as f64);
    one(
        out,
        "process_max_fds",
        "Maximum number of open file descriptors.",
        "gauge",
        max_fds,
    );
    one(
        out,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        start_time(),
    );
}

/// Boot time plus the process's start in clock ticks after boot.
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the command name may hold spaces and parentheses: fields follow the last ')'
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()?? as f64;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counters_gauges_and_labels_render_in_the_text_format() {
        let r = Registry::new();
        let syncs = r.counter_with(
            "rkube_syncs_total",
            "Syncs done.",
            &[("controller", "replicaset")],
        );
        syncs.add(2);
        // the same name and labels is the same counter
        r.counter_with(
            "rkube_syncs_total",
            "Syncs done.",
            &[("controller", "replicaset")],
        )
        .inc();
        r.counter_with("rkube_syncs_total", "Syncs done.", &[("controller", "a\"b")]);
        let watchers = r.gauge("rkube_watchers", "Open watches.");
        watchers.set(5);
        watchers.dec();
        r.gauge_fn("rkube_queue_depth", "Keys queued.", &[], || 1.5);
        let mut out = String::new();
        r.render(&mut out);
        assert!(
            out.contains("# HELP rkube_syncs_total Syncs done.\n# TYPE rkube_syncs_total counter\n"),
            "{out}"
        );
        assert_eq!(value(&out, "rkube_syncs_total{controller=\"replicaset\"}"), 3.0);
        assert_eq!(value(&out, "rkube_syncs_total{controller=\"a\\\"b\"}"), 0.0);
        assert_eq!(value(&out, "rkube_watchers"), 4.0);
        assert_eq!(value(&out, "rkube_queue_depth"), 1.5);
        assert!(out.contains("# TYPE rkube_watchers gauge"), "{out}");
    }

    #[test]
    #[should_panic(expected = "registered as a counter")]
    fn one_name_cannot_be_two_kinds() {
        let r = Registry::new();
        r.counter("x_total", "x");
        r.gauge("x_total", "x");
    }

    #[test]
    fn process_metrics_report_this_process() {
        let mut out = String::new();
        render_process_metrics(&mut out);
        let rss = value(&out, "process_resident_memory_bytes");
        assert!(
            rss > 1024.0 * 1024.0,
            "a test process uses more than 1 MiB: {rss}"
        );
        assert!(value(&out, "process_cpu_seconds_total") > 0.0);
        assert!(value(&out, "process_open_fds") >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value(&out, "process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        assert!(out.contains("# TYPE process_cpu_seconds_total counter"), "{out}");
    }
}
