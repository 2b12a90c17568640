//! [`PodNetwork`] with the standard CNI plugins, executed directly (no libcni): `loopback`
//! for `lo`, then the chain `bridge` (+ `host-local` IPAM over the node's pod CIDR) and
//! `portmap` for hostPorts, in CNI spec 1.0.0.
//!
//! What DEL needs later (the pod's identity, its port mappings and the ADD result, passed
//! back as `prevResult` as libcni does) is cached in the state directory, so teardown works
//! after a kubelet restart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;
use tracing::Instrument as _;

use super::masquerade::{self, Cidr};
use super::{
    netns, validate_pod_uid, Error, PodNetwork, PodNetworkConfig, PodNetworkStatus, PortMapping, Protocol,
};

/// CNI spec version of the configuration (the Debian 12 plugins speak up to 1.0.0).
pub const CNI_VERSION: &str = "1.0.0";
/// Interface name of the pod's end of the veth pair.
const POD_INTERFACE: &str = "eth0";
/// A plugin that has not answered by then is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How pods are networked on this node.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Where plugin binaries are looked up, in order (`CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// Network namespaces are pinned at `<run_dir>/netns/<pod-uid>`. A tmpfs such as /run:
    /// namespaces do not survive a reboot and neither should their files.
    pub run_dir: PathBuf,
    /// host-local's allocations (`<state_dir>/ipam`) and cached ADD results
    /// (`<state_dir>/results`). Persistent, so IPs are released after a reboot too.
    pub state_dir: PathBuf,
    /// CNI network name (host-local keeps allocations per network).
    pub network_name: String,
    /// Linux bridge the pods hang off; its address is the pods' gateway.
    pub bridge: String,
    /// The node's `spec.podCIDR`, e.g. `10.244.1.0/24`.
    pub pod_cidr: String,
    /// Masquerade pod traffic that leaves the cluster network (to reach outside it).
    pub ip_masq: bool,
    /// The cluster's pod network (every node's pod CIDR inside it), e.g. `10.244.0.0/16`.
    /// With it, traffic to other pods keeps its pod source address and only the rest is
    /// masqueraded, by rkube's own table (see [`super::masquerade`]); without it, the
    /// bridge plugin masquerades everything leaving this node's pod CIDR, so pods on
    /// other nodes see this node's address.
    pub cluster_cidr: Option<String>,
    pub mtu: Option<u32>,
    /// Run the plugins inside this network namespace instead of the caller's; the bridge and
    /// NAT rules are then created there. Tests use it to keep the "node" in a namespace they
    /// own; a real kubelet leaves it `None`.
    pub node_netns: Option<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            plugin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            run_dir: PathBuf::from("/run/rkubelet"),
            state_dir: PathBuf::from("/var/lib/rkubelet/cni"),
            network_name: "rkube".to_string(),
            bridge: "rkube0".to_string(),
            pod_cidr: "10.244.0.0/24".to_string(),
            ip_masq: true,
            cluster_cidr: None,
            mtu: None,
            node_netns: None,
        }
    }
}

impl CniConfig {
    /// Directory host-local keeps this network's allocations in: one file per allocated IP,
    /// containing the pod uid.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }

    /// The network configuration list the plugins are run with.
    pub fn conflist(&self) -> Value {
        let mut bridge = json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": self.ip_masq && self.cluster_cidr.is_none(),
            // Lets a pod reach itself through a Service address that lands on it.
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "routes": [{"dst": if self.pod_cidr.contains(':') { "::/0" } else { "0.0.0.0/0" }}],
                "dataDir": self.ipam_dir(),
            },
        });
        if let Some(mtu) = self.mtu {
            bridge["mtu"] = json!(mtu);
        }
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.network_name,
            "plugins": [
                bridge,
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            ],
        })
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        let Some((address, prefix)) = self.pod_cidr.split_once('/') else {
            return invalid("pod CIDR", format!("{:?} is not address/prefix", self.pod_cidr));
        };
        let max = match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => return invalid("pod CIDR", format!("{address:?} is not an IP address")),
        };
        if !prefix.parse::<u8>().is_ok_and(|p| p <= max - 2) {
            return invalid(
                "pod CIDR",
                format!("prefix {prefix:?} must be a number of at most {}", max - 2),
            );
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 || self.bridge.contains(['/', ' ']) {
            return invalid(
                "bridge",
                format!(
                    "{:?} is not a valid interface name (1-15 characters)",
                    self.bridge
                ),
            );
        }
        if let Some(cluster) = &self.cluster_cidr {
            let family = |c: &Cidr| c.address.is_ipv4();
            match (Cidr::parse(cluster), Cidr::parse(&self.pod_cidr)) {
                (None, _) => {
                    return invalid(
                        "cluster CIDR",
                        format!("{cluster:?} is not address/prefix like 10.244.0.0/16"),
                    )
                }
                (Some(c), Some(p)) if family(&c) != family(&p) => {
                    return invalid(
                        "cluster CIDR",
                        format!(
                            "{cluster:?} and pod CIDR {:?} are not of one IP family",
                            self.pod_cidr
                        ),
                    )
                }
                _ => {}
            }
        }
        if self.network_name.is_empty() || self.network_name.contains('/') {
            return invalid("network name", format!("{:?} is not valid", self.network_name));
        }
        if self.plugin_dirs.is_empty() {
            return invalid("plugin directories", "none given".to_string());
        }
        Ok(())
    }
}

/// What a successful ADD leaves for DEL and for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedAttachment {
    pod_uid: String,
    pod_namespace: String,
    pod_name: String,
    port_mappings: Vec<CachedPortMapping>,
    netns: PathBuf,
    result: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedPortMapping {
    host_port: u16,
    container_port: u16,
    protocol: String,
    host_ip: Option<IpAddr>,
}

/// The pod identity a plugin invocation is for.
struct Invocation<'a> {
    pod_uid: &'a str,
    pod_namespace: &'a str,
    pod_name: &'a str,
    /// Empty when the namespace is already gone (DEL must still release the IP).
    netns: Option<&'a Path>,
}

/// [`PodNetwork`] running the CNI plugins. See the module documentation.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    config: CniConfig,
    /// Set once the masquerade table is loaded (with `cluster_cidr` and `ip_masq`).
    masquerading: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl CniNetwork {
    pub fn new(config: CniConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config,
            masquerading: Default::default(),
        })
    }

    /// Loads the masquerade table before the first pod is wired (once per process: the
    /// table is declared whole, so a restarted kubelet replaces what an earlier one left).
    async fn ensure_masquerade(&self) -> Result<(), Error> {
        let (Some(cluster), true) = (&self.config.cluster_cidr, self.config.ip_masq) else {
            return Ok(());
        };
        let (Some(cluster), Some(pods)) = (Cidr::parse(cluster), Cidr::parse(&self.config.pod_cidr)) else {
            return Ok(()); // refused by validate
        };
        self.masquerading
            .get_or_try_init(|| async {
                let script = masquerade::render(pods, cluster);
                masquerade::install(&script, self.config.node_netns.as_deref()).await?;
                tracing::info!(pod_cidr = %pods, cluster_cidr = %cluster, "pod traffic leaving the cluster network is masqueraded");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    fn cache_path(&self, pod_uid: &str) -> PathBuf {
        self.config
            .state_dir
            .join("results")
            .join(format!("{pod_uid}.json"))
    }

    fn read_cache(&self, pod_uid: &str) -> Result<Option<CachedAttachment>, Error> {
        let path = self.cache_path(pod_uid);
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::State {
                    operation: "reading",
                    path,
                    source,
                })
            }
        };
        match serde_json::from_slice(&data) {
            Ok(cached) => Ok(Some(cached)),
            Err(e) => {
                // A torn write from a crash; DEL without prevResult still releases the IP.
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable CNI cache file");
                Ok(None)
            }
        }
    }

    fn write_cache(&self, cached: &CachedAttachment) -> Result<(), Error> {
        let path = self.cache_path(&cached.pod_uid);
        let state_error = |source| Error::State {
            operation: "writing",
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(state_error)?;
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(cached).map_err(|e| state_error(e.into()))?;
        std::fs::write(&tmp, data).map_err(state_error)?;
        std::fs::rename(&tmp, &path).map_err(state_error)
    }

    fn remove_cache(&self, pod_uid: &str) -> Result<(), Error> {
        let path = self.cache_path(pod_uid);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::State {
                operation: "removing",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn find_plugin(&self, plugin: &str) -> Result<PathBuf, Error> {
        self.config
            .plugin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::PluginNotFound {
                plugin: plugin.to_string(),
                dirs: self.config.plugin_dirs.clone(),
            })
    }

    /// Runs one plugin with the CNI environment and `conf` on stdin; returns its stdout JSON
    /// (empty object for DEL, which prints nothing).
    async fn run_plugin(
        &self,
        command: &'static str,
        conf: &Value,
        interface: &str,
        invocation: &Invocation<'_>,
    ) -> Result<Value, Error> {
        let plugin = conf["type"].as_str().unwrap_or_default().to_string();
        let binary = self.find_plugin(&plugin)?;
        let exec_error = |source| Error::PluginExec {
            plugin: plugin.clone(),
            command,
            pod_uid: invocation.pod_uid.to_string(),
            source,
        };
        let mut cmd = match &self.config.node_netns {
            Some(node) => {
                // nsenter changes only the network namespace; paths still resolve in ours.
                let mut c = tokio::process::Command::new("nsenter");
                c.arg(format!("--net={}", node.display())).arg("--").arg(&binary);
                c
            }
            None => tokio::process::Command::new(&binary),
        };
        let cni_path = std::env::join_paths(&self.config.plugin_dirs)
            .map_err(|e| exec_error(std::io::Error::other(e)))?;
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", invocation.pod_uid)
            .env(
                "CNI_NETNS",
                invocation.netns.map(Path::as_os_str).unwrap_or_default(),
            )
            .env("CNI_IFNAME", interface)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                    invocation.pod_namespace, invocation.pod_name, invocation.pod_uid, invocation.pod_uid
                ),
            )
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(exec_error)?;
        let input = serde_json::to_vec(conf).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await.map_err(exec_error)?;
            // Dropping stdin closes it: plugins read the config to EOF.
        }
        let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                exec_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {PLUGIN_TIMEOUT:?}"),
                ))
            })?
            .map_err(exec_error)?;
        tracing::debug!(%plugin, command, pod = invocation.pod_uid, status = %output.status, "ran CNI plugin");
        if !output.status.success() {
            #[derive(Deserialize)]
            struct CniError {
                #[serde(default)]
                code: Option<u64>,
                #[serde(default)]
                msg: String,
                #[serde(default)]
                details: String,
            }
            let (code, message) = match serde_json::from_slice::<CniError>(&output.stdout) {
                Ok(e) if !e.msg.is_empty() => (
                    e.code,
                    if e.details.is_empty() {
                        e.msg
                    } else {
                        format!("{}: {}", e.msg, e.details)
                    },
                ),
                _ => {
                    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
                    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
                    let text = [stderr, stdout]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                    (
                        None,
                        if text.is_empty() {
                            output.status.to_string()
                        } else {
                            text
                        },
                    )
                }
            };
            return Err(Error::Plugin {
                plugin,
                command,
                pod_uid: invocation.pod_uid.to_string(),
                code,
                message,
            });
        }
        if output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&output.stdout).map_err(|source| Error::BadResult {
            plugin,
            command,
            pod_uid: invocation.pod_uid.to_string(),
            source,
        })
    }

    fn loopback_conf() -> Value {
        json!({"cniVersion": CNI_VERSION, "name": "cni-loopback", "type": "loopback"})
    }

    /// The stdin of one plugin of the chain: its section plus the network's name and
    /// version, the previous result and the runtime config its capabilities ask for.
    fn plugin_conf(
        &self,
        list: &Value,
        plugin: &Value,
        prev_result: Option<&Value>,
        port_mappings: &[CachedPortMapping],
    ) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        if let Some(prev) = prev_result {
            conf["prevResult"] = prev.clone();
        }
        if plugin["capabilities"]["portMappings"] == json!(true) {
            let mappings: Vec<Value> = port_mappings
                .iter()
                .map(|m| {
                    let mut v = json!({
                        "hostPort": m.host_port,
                        "containerPort": m.container_port,
                        "protocol": m.protocol,
                    });
                    if let Some(ip) = m.host_ip {
                        v["hostIP"] = json!(ip.to_string());
                    }
                    v
                })
                .collect();
            conf["runtimeConfig"] = json!({"portMappings": mappings});
        }
        conf
    }

    async fn add(&self, cached: &mut CachedAttachment) -> Result<(), Error> {
        let invocation = Invocation {
            pod_uid: &cached.pod_uid,
            pod_namespace: &cached.pod_namespace,
            pod_name: &cached.pod_name,
            netns: Some(&cached.netns),
        };
        self.run_plugin("ADD", &Self::loopback_conf(), "lo", &invocation)
            .await?;
        let list = self.config.conflist();
        let mut result: Option<Value> = None;
        for plugin in list["plugins"].as_array().into_iter().flatten() {
            let conf = self.plugin_conf(&list, plugin, result.as_ref(), &cached.port_mappings);
            let out = self.run_plugin("ADD", &conf, POD_INTERFACE, &invocation).await?;
            result = Some(out);
        }
        cached.result = result.unwrap_or_else(|| json!({}));
        Ok(())
    }

    async fn del(&self, cached: &CachedAttachment, netns_present: bool) -> Result<(), Error> {
        let invocation = Invocation {
            pod_uid: &cached.pod_uid,
            pod_namespace: &cached.pod_namespace,
            pod_name: &cached.pod_name,
            netns: netns_present.then_some(cached.netns.as_path()),
        };
        let list = self.config.conflist();
        let prev = (!cached.result.is_null() && cached.result != json!({})).then_some(&cached.result);
        let plugins: Vec<&Value> = list["plugins"].as_array().into_iter().flatten().collect();
        for plugin in plugins.into_iter().rev() {
            let conf = self.plugin_conf(&list, plugin, prev, &cached.port_mappings);
            self.run_plugin("DEL", &conf, POD_INTERFACE, &invocation).await?;
        }
        if netns_present {
            self.run_plugin("DEL", &Self::loopback_conf(), "lo", &invocation)
                .await?;
        }
        Ok(())
    }

    fn status_from(&self, cached: &CachedAttachment) -> Result<PodNetworkStatus, Error> {
        let no_ip = || Error::NoIp {
            pod_uid: cached.pod_uid.clone(),
            pod_cidr: self.config.pod_cidr.clone(),
        };
        let result: CniResult =
            serde_json::from_value(cached.result.clone()).map_err(|source| Error::BadResult {
                plugin: "bridge".to_string(),
                command: "ADD",
                pod_uid: cached.pod_uid.clone(),
                source,
            })?;
        // The address on the pod's interface: the one whose interface entry has a sandbox.
        let in_sandbox = |ip: &&CniIp| {
            ip.interface
                .and_then(|i| result.interfaces.get(i))
                .is_some_and(|iface| !iface.sandbox.is_empty())
        };
        let chosen = result
            .ips
            .iter()
            .find(in_sandbox)
            .or_else(|| result.ips.first())
            .ok_or_else(no_ip)?;
        let address = chosen.address.split('/').next().unwrap_or_default();
        let ip: IpAddr = address.parse().map_err(|_| no_ip())?;
        let interface = chosen
            .interface
            .and_then(|i| result.interfaces.get(i))
            .map(|i| i.name.clone())
            .unwrap_or_else(|| POD_INTERFACE.to_string());
        Ok(PodNetworkStatus {
            netns_path: cached.netns.clone(),
            ip,
            gateway: chosen.gateway.as_deref().and_then(|g| g.parse().ok()),
            interface,
        })
    }
}

#[derive(Debug, Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<CniInterface>,
    #[serde(default)]
    ips: Vec<CniIp>,
}

#[derive(Debug, Deserialize)]
struct CniInterface {
    #[serde(default)]
    name: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Deserialize)]
struct CniIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

fn cached_mappings(mappings: &[PortMapping]) -> Vec<CachedPortMapping> {
    mappings
        .iter()
        .map(|m| CachedPortMapping {
            host_port: m.host_port,
            container_port: m.container_port,
            protocol: m.protocol.as_str().to_string(),
            host_ip: m.host_ip,
        })
        .collect()
}

#[async_trait]
impl PodNetwork for CniNetwork {
    async fn setup(&self, pod: &PodNetworkConfig) -> Result<PodNetworkStatus, Error> {
        validate_pod_uid(&pod.pod_uid)?;
        self.ensure_masquerade().await?;
        let path = self.netns_path(&pod.pod_uid);
        if let Some(cached) = self.read_cache(&pod.pod_uid)? {
            if netns::is_netns(&path) {
                return self.status_from(&cached);
            }
            // The namespace vanished (reboot: /run is a tmpfs) but the IP is still
            // allocated: release it before starting over.
            self.teardown(&pod.pod_uid).await?;
        }
        let netns_span =
            tracing::debug_span!(target: crate::POD_STARTUP_TRACE, "netns_create", pod_uid = %pod.pod_uid);
        netns_span
            .in_scope(|| netns::create(&path))
            .map_err(|source| Error::Netns {
                operation: "creating",
                pod_uid: pod.pod_uid.clone(),
                path: path.clone(),
                source,
            })?;
        drop(netns_span);
        let mut cached = CachedAttachment {
            pod_uid: pod.pod_uid.clone(),
            pod_namespace: pod.pod_namespace.clone(),
            pod_name: pod.pod_name.clone(),
            port_mappings: cached_mappings(&pod.port_mappings),
            netns: path.clone(),
            result: Value::Null,
        };
        let cni_add =
            tracing::debug_span!(target: crate::POD_STARTUP_TRACE, "cni_add", pod_uid = %pod.pod_uid);
        let outcome = match self.add(&mut cached).instrument(cni_add).await {
            Ok(()) => self.status_from(&cached),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(status) => {
                self.write_cache(&cached)?;
                tracing::info!(pod = %pod.pod_uid, ip = %status.ip, "pod network set up");
                Ok(status)
            }
            Err(error) => {
                // Undo the half-done ADD so a retry starts clean and no IP leaks.
                if let Err(cleanup) = self.del(&cached, true).await {
                    tracing::warn!(pod = %pod.pod_uid, error = %cleanup, "cleaning up failed CNI ADD");
                }
                let _ = netns::remove(&path);
                Err(error)
            }
        }
    }

    async fn status(&self, pod_uid: &str) -> Result<Option<PodNetworkStatus>, Error> {
        validate_pod_uid(pod_uid)?;
        match self.read_cache(pod_uid)? {
            Some(cached) if netns::is_netns(&cached.netns) => self.status_from(&cached).map(Some),
            _ => Ok(None),
        }
    }

    async fn teardown(&self, pod_uid: &str) -> Result<(), Error> {
        validate_pod_uid(pod_uid)?;
        let path = self.netns_path(pod_uid);
        let cached = self.read_cache(pod_uid)?.unwrap_or_else(|| CachedAttachment {
            pod_uid: pod_uid.to_string(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            port_mappings: Vec::new(),
            netns: path.clone(),
            result: Value::Null,
        });
        let present = netns::is_netns(&cached.netns);
        // DEL even without a cache or a namespace: host-local releases by pod uid, and DEL
        // of what is already gone succeeds, so this is idempotent.
        self.del(&cached, present).await?;
        netns::remove(&cached.netns).map_err(|source| Error::Netns {
            operation: "removing",
            pod_uid: pod_uid.to_string(),
            path: cached.netns.clone(),
            source,
        })?;
        self.remove_cache(pod_uid)?;
        tracing::info!(pod = %pod_uid, "pod network torn down");
        Ok(())
    }

    fn netns_path(&self, pod_uid: &str) -> PathBuf {
        self.config.run_dir.join("netns").join(pod_uid)
    }
}

/// Parses `protocol` strings as Kubernetes writes them (`TCP`, `UDP`, `SCTP`).
impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(format!("unknown protocol {s:?}; expected TCP, UDP or SCTP")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_has_the_node_settings() {
        let config = CniConfig {
            pod_cidr: "10.244.3.0/24".into(),
            bridge: "rkube9".into(),
            state_dir: PathBuf::from("/var/lib/x"),
            mtu: Some(1400),
            ..Default::default()
        };
        let list = config.conflist();
        assert_eq!(list["cniVersion"], "1.0.0");
        let bridge = &list["plugins"][0];
        assert_eq!(bridge["bridge"], "rkube9");
        assert_eq!(bridge["mtu"], 1400);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/x/ipam");
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert_eq!(
            bridge["ipMasq"], true,
            "without a cluster CIDR the bridge masquerades"
        );
        let with_cluster = CniConfig {
            cluster_cidr: Some("10.244.0.0/16".into()),
            ..config
        };
        assert_eq!(
            with_cluster.conflist()["plugins"][0]["ipMasq"],
            false,
            "rkube's own table masquerades instead"
        );
        let err = CniNetwork::new(CniConfig {
            cluster_cidr: Some("fd00::/48".into()),
            ..with_cluster
        })
        .unwrap_err();
        assert!(err.to_string().contains("cluster CIDR"), "{err}");
    }

    #[test]
    fn invalid_config_is_rejected_with_the_field() {
        for (config, needle) in [
            (
                CniConfig {
                    pod_cidr: "10.0.0.0".into(),
                    ..Default::default()
                },
                "pod CIDR",
            ),
            (
                CniConfig {
                    pod_cidr: "10.0.0.0/31".into(),
                    ..Default::default()
                },
                "pod CIDR",
            ),
            (
                CniConfig {
                    pod_cidr: "ten/24".into(),
                    ..Default::default()
                },
                "pod CIDR",
            ),
            (
                CniConfig {
                    bridge: "a-very-long-bridge-name".into(),
                    ..Default::default()
                },
                "bridge",
            ),
        ] {
            let err = CniNetwork::new(config).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn plugin_conf_carries_prev_result_and_port_mappings() {
        let net = CniNetwork::new(CniConfig::default()).unwrap();
        let list = net.config.conflist();
        let mappings = cached_mappings(&[PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None,
        }]);
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let conf = net.plugin_conf(&list, &list["plugins"][1], Some(&prev), &mappings);
        assert_eq!(conf["name"], "rkube");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(
            conf["runtimeConfig"]["portMappings"][0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})
        );
        let conf = net.plugin_conf(&list, &list["plugins"][0], None, &mappings);
        assert!(conf.get("runtimeConfig").is_none());
        assert!(conf.get("prevResult").is_none());
    }

    #[test]
    fn result_ip_is_the_sandbox_interface_address() {
        let net = CniNetwork::new(CniConfig::default()).unwrap();
        let cached = CachedAttachment {
            pod_uid: "u".into(),
            pod_namespace: "ns".into(),
            pod_name: "p".into(),
            port_mappings: vec![],
            netns: PathBuf::from("/run/rkubelet/netns/u"),
            result: json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "rkube0", "mac": "aa"},
                    {"name": "veth1", "mac": "bb"},
                    {"name": "eth0", "mac": "cc", "sandbox": "/run/rkubelet/netns/u"}
                ],
                "ips": [{"address": "10.244.0.7/24", "gateway": "10.244.0.1", "interface": 2}]
            }),
        };
        let status = net.status_from(&cached).unwrap();
        assert_eq!(status.ip, "10.244.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(status.gateway, Some("10.244.0.1".parse().unwrap()));
        assert_eq!(status.interface, "eth0");
        let empty = CachedAttachment {
            result: json!({"cniVersion": "1.0.0"}),
            ..cached
        };
        assert!(matches!(net.status_from(&empty), Err(Error::NoIp { .. })));
    }

    #[test]
    fn protocols_parse_like_kubernetes() {
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert_eq!("udp".parse::<Protocol>(), Ok(Protocol::Udp));
        assert!("icmp".parse::<Protocol>().is_err());
    }
}
