//! A daemon's options: one struct per daemon that is both its flags (clap) and its YAML
//! config file (serde, camelCase keys, unknown keys refused), every field optional so
//! that "not given" can be told from "given". The file is read first and the flags given
//! on the command line are laid over it (clap's `update_from_arg_matches`, which touches
//! only the arguments present), so flags win field by field. Defaults are the daemon's
//! business, applied once where it turns its options into what it runs with.
//!
//! What every daemon has, [`DaemonOptions`] (`--config`, `--health-addr`), and what every
//! apiserver client has, [`ClientOptions`] (`--apiserver`, `--kubeconfig`), are declared
//! here once and flattened into each daemon's options (`#[command(flatten)]` with
//! `#[serde(flatten)]`).

use crate::HealthAddr;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::ffi::OsString;
use std::path::PathBuf;

/// `--config` and `--health-addr`, which every daemon has.
#[derive(clap::Args, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct DaemonOptions {
    /// YAML file with any of the settings below (camelCase keys); flags win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where to serve /healthz, /livez, /readyz and /metrics over plain
    /// HTTP; `off` turns it off.
    #[arg(long, value_name = "ADDR|off")]
    pub health_addr: Option<HealthAddr>,
}

impl DaemonOptions {
    /// The health and metrics endpoint: what was given, else loopback on `default_port`;
    /// `None` when turned off.
    pub fn health_addr(&self, default_port: u16) -> Option<std::net::SocketAddr> {
        HealthAddr::resolve(self.health_addr, default_port)
    }
}

/// `--apiserver` and `--kubeconfig`, which every daemon talking to the apiserver has, beside
/// its [`DaemonOptions`]. (Not nested in them: under `deny_unknown_fields`, serde does not
/// see the keys a flattened struct's own flattened fields take, and calls them unknown.)
#[derive(clap::Args, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientOptions {
    /// The apiserver to talk to (default: the server of --kubeconfig, else
    /// https://127.0.0.1:6443).
    #[arg(long, value_name = "URL")]
    pub apiserver: Option<String>,
    /// Client config file with this daemon's credentials: server, CA and
    /// client certificate or token (`rkubectl certs generate` writes one per
    /// component). --apiserver, if given, overrides its server.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

impl ClientOptions {
    /// The apiserver URL (see [`crate::apiserver_url`]) and the client config file.
    pub fn connection(&self) -> (String, Option<PathBuf>) {
        (
            crate::apiserver_url(self.apiserver.clone(), self.kubeconfig.as_deref()),
            self.kubeconfig.clone(),
        )
    }
}

/// A duration flag or config value as Kubernetes writes them (`15s`, `500ms`, `1m30s`,
/// `1.5s`, `2h`); a bare number is seconds, so `leaderElectLeaseDuration: 15` in a file
/// means what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub std::time::Duration);

impl std::str::FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a duration (e.g. 15s, 500ms, 1m30s)");
        let s = s.trim();
        if s.is_empty() {
            return Err(bad());
        }
        if let Ok(secs) = s.parse::<f64>() {
            return seconds(secs).map(DurationArg).ok_or_else(bad);
        }
        let mut rest = s;
        let mut total = 0.0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (number, tail) = rest.split_at(digits);
            let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let n: f64 = number.parse().map_err(|_| bad())?;
            let scale = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
            };
            total += n * scale;
            rest = tail;
        }
        seconds(total).map(DurationArg).ok_or_else(bad)
    }
}

fn seconds(secs: f64) -> Option<std::time::Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for DurationArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(n) => seconds(n)
                .map(DurationArg)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a duration"))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Implements [`Options`] for a daemon's options struct: its health port, and the path to
/// its [`DaemonOptions`] (`impl_options!(Options, SCHEDULER_PORT, daemon)`).
#[macro_export]
macro_rules! impl_options {
    ($ty:ty, $port:expr, $($field:ident).+) => {
        impl $crate::Options for $ty {
            const HEALTH_PORT: u16 = $port;
            fn daemon(&self) -> &$crate::DaemonOptions {
                &self.$($field).+
            }
        }
    };
}

/// A daemon's options struct: its flags and its config file in one.
pub trait Options: clap::Parser + DeserializeOwned + Default {
    /// The port `--health-addr` defaults to on loopback (said in `--help`).
    const HEALTH_PORT: u16;

    /// The options every daemon has.
    fn daemon(&self) -> &DaemonOptions;

    /// Where to serve health and metrics: `--health-addr`, else loopback on
    /// [`Self::HEALTH_PORT`]; `None` when turned off.
    fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.daemon().health_addr(Self::HEALTH_PORT)
    }
}

/// The daemon's options from the process's arguments over its config file. `--help`,
/// `--version` and malformed flags end the process here, as clap does (usage errors
/// exit 2); a config file that cannot be read or parsed is an error naming the file.
pub fn parse<O: Options>() -> anyhow::Result<O> {
    let matches = command::<O>().get_matches();
    from_matches(matches)
}

/// [`parse`] for the given arguments (the first is the program name), with every
/// error returned: for tests and embedders.
pub fn parse_from<O, I, T>(args: I) -> anyhow::Result<O>
where
    O: Options,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command::<O>().try_get_matches_from(args)?;
    from_matches(matches)
}

fn command<O: Options>() -> clap::Command {
    O::command().mut_arg("health_addr", |a| {
        let help = a.get_help().map(ToString::to_string).unwrap_or_default();
        // clap drops a one-paragraph doc comment's final period
        a.help(format!("{help}. Default: 127.0.0.1:{}", O::HEALTH_PORT))
    })
}

fn from_matches<O: Options>(matches: clap::ArgMatches) -> anyhow::Result<O> {
    let flags = O::from_arg_matches(&matches)?;
    let Some(path) = flags.daemon().config.clone() else {
        return Ok(flags);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    // An empty (or all-comment) file is null to YAML: it sets nothing.
    let mut options: O = serde_yaml::from_str::<Option<O>>(&text)
        .map_err(|e| {
            anyhow::anyhow!(
                "config file {}: {}",
                path.display(),
                with_suggestion::<O>(e.to_string())
            )
        })?
        .unwrap_or_default();
    options.update_from_arg_matches(&matches)?;
    Ok(options)
}

/// serde's `unknown field `x`` with the nearest key the daemon knows (its flags' names in
/// camelCase): serde's flatten no longer lists the expected keys itself.
fn with_suggestion<O: Options>(message: String) -> String {
    let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    else {
        return message;
    };
    let field = field.to_ascii_lowercase();
    let best = O::command()
        .get_arguments()
        .map(|a| camel_case(a.get_id().as_str()))
        .filter(|key| !matches!(key.as_str(), "config" | "help" | "version"))
        .map(|key| (strsim::levenshtein(&field, &key.to_ascii_lowercase()), key))
        .min();
    match best {
        Some((distance, key)) if distance <= 3 => format!("{message}; did you mean `{key}`?"),
        _ => message,
    }
}

/// `node_monitor_period` → `nodeMonitorPeriod`, as the config file spells a flag's field.
fn camel_case(id: &str) -> String {
    let mut words = id.split('_');
    let mut out = words.next().unwrap_or_default().to_string();
    for w in words {
        let mut chars = w.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations_read_as_kubernetes_writes_them() {
        let d = |s: &str| s.parse::<DurationArg>().map(|d| d.0);
        assert_eq!(d("15s"), Ok(std::time::Duration::from_secs(15)));
        assert_eq!(d("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(d("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(d("1.5s"), Ok(std::time::Duration::from_millis(1500)));
        assert_eq!(d("7"), Ok(std::time::Duration::from_secs(7)));
        assert!(d("15x").unwrap_err().contains("unknown unit"));
        assert!(d("s").is_err() && d("-1s").is_err() && d("").is_err());
        let yaml: DurationArg = serde_yaml::from_str("2").unwrap();
        assert_eq!(yaml.0, std::time::Duration::from_secs(2));
        let yaml: DurationArg = serde_yaml::from_str("250ms").unwrap();
        assert_eq!(yaml.0, std::time::Duration::from_millis(250));
    }

    #[derive(Parser, Deserialize, Debug, Default)]
    #[command(name = "rkube-test")]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct TestOptions {
        #[command(flatten)]
        #[serde(flatten)]
        daemon: DaemonOptions,
        #[command(flatten)]
        #[serde(flatten)]
        client: ClientOptions,
        /// Bind calls in flight.
        #[arg(long)]
        parallel_binds: Option<usize>,
        /// Which controllers run.
        #[arg(long, value_delimiter = ',')]
        controllers: Option<Vec<String>>,
        /// A switch.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        leader_elect: Option<bool>,
    }

    crate::impl_options!(TestOptions, 10259, daemon);

    #[test]
    fn flags_win_over_the_file_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(
            &path,
            "apiserver: https://file:6443\nparallelBinds: 8\ncontrollers: [a, b]\nleaderElect: true\nhealthAddr: off\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let o: TestOptions = parse_from(["rkube-test", "--config", path, "--parallel-binds", "16"]).unwrap();
        assert_eq!(o.client.apiserver.as_deref(), Some("https://file:6443"));
        assert_eq!(o.parallel_binds, Some(16));
        assert_eq!(o.controllers, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(o.leader_elect, Some(true));
        assert_eq!(o.health_addr(), None);
        assert_eq!(o.daemon.config.as_deref(), Some(std::path::Path::new(path)));

        let o: TestOptions = parse_from([
            "rkube-test",
            "--config",
            path,
            "--controllers",
            "c",
            "--leader-elect=false",
            "--health-addr",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(o.controllers, Some(vec!["c".to_string()]));
        assert_eq!(o.leader_elect, Some(false));
        assert_eq!(o.health_addr(), Some(([127, 0, 0, 1], 1).into()));

        let o: TestOptions = parse_from(["rkube-test", "--leader-elect"]).unwrap();
        assert_eq!(o.leader_elect, Some(true));
        assert_eq!(o.parallel_binds, None);
        assert_eq!(o.health_addr(), Some(([127, 0, 0, 1], 10259).into()));
        assert_eq!(o.client.connection().0, "https://127.0.0.1:6443");
    }

    #[test]
    fn file_errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "parallelBind: 8\n").unwrap();
        let err = parse_from::<TestOptions, _, _>(["rkube-test", "--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.yaml")
                && err.contains("unknown field `parallelBind`")
                && err.ends_with("did you mean `parallelBinds`?"),
            "{err}"
        );
        // The file cannot name another file to read.
        std::fs::write(&path, "config: other.yaml\n").unwrap();
        let err = parse_from::<TestOptions, _, _>(["rkube-test", "--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `config`"), "{err}");
        let missing = dir.path().join("missing.yaml");
        let err = parse_from::<TestOptions, _, _>(["rkube-test", "--config", missing.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read config file") && err.contains("missing.yaml"),
            "{err}"
        );
        // An empty file sets nothing.
        std::fs::write(&path, "# nothing yet\n").unwrap();
        let o: TestOptions = parse_from(["rkube-test", "--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(o.parallel_binds, None);
    }

    #[test]
    fn help_says_the_daemons_health_port() {
        let help = command::<TestOptions>().render_long_help().to_string();
        assert!(
            help.contains("turns it off. Default: 127.0.0.1:10259\n"),
            "{help}"
        );
        assert!(help.contains("--kubeconfig <FILE>"), "{help}");
    }
}
