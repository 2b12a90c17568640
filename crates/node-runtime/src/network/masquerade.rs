//! Masquerading of pod traffic that leaves the cluster network, in an nftables table of
//! the node's own (`ip rkube-pod-masq`, `ip6` for an IPv6 pod network).
//!
//! Why not the bridge plugin's `ipMasq`: it masquerades everything that leaves the node's
//! own pod range, so a pod on another node sees this node's address instead of the
//! client pod's, and NetworkPolicy rules by `podSelector` cannot match it there. As
//! Kubernetes networks do (ip-masq-agent, kubenet's `--non-masquerade-cidr`), traffic
//! to the cluster's pod CIDR keeps its pod source; only traffic to the rest of the world
//! is masqueraded, so it finds its way back. Service traffic is judged after
//! rkube-proxy's DNAT: a ClusterIP that lands on a pod keeps the source too.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

use super::Error;

pub const TABLE: &str = "rkube-pod-masq";

/// An address block with its host bits cleared (nft refuses others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (or IPv6), clearing host bits.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (address, prefix) = s.split_once('/')?;
        let address: IpAddr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let address = match address {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Cidr { address, prefix })
    }

    fn family(&self) -> (&'static str, &'static str) {
        match self.address {
            IpAddr::V4(_) => ("ip", "224.0.0.0/4"),
            IpAddr::V6(_) => ("ip6", "ff00::/8"),
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// The transaction that (re)declares the table: traffic from this node's pods to the
/// cluster's pods, to the node's own range or to multicast keeps its source; the rest is
/// masqueraded.
pub fn render(pod_cidr: Cidr, cluster_cidr: Cidr) -> String {
    let (family, multicast) = pod_cidr.family();
    format!(
        "table {family} {TABLE}\n\
         delete table {family} {TABLE}\n\
         table {family} {TABLE} {{\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   {family} saddr != {pod_cidr} return\n\
         \x20   {family} daddr {pod_cidr} return\n\
         \x20   {family} daddr {cluster_cidr} return\n\
         \x20   {family} daddr {multicast} return\n\
         \x20   masquerade\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Loads `script` with `nft -f -`, inside `node_netns` when given.
pub async fn install(script: &str, node_netns: Option<&Path>) -> Result<(), Error> {
    let failed = |reason: String| Error::Masquerade { reason };
    let mut cmd = match node_netns {
        Some(node) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--net={}", node.display()))
                .args(["--", "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            failed(format!(
                "cannot run nft: {e}; is nftables installed (package nftables)?"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| failed(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| failed(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "nft -f failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_lose_host_bits_and_bad_ones_are_refused() {
        assert_eq!(Cidr::parse("10.244.1.7/16").unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(Cidr::parse("fd00::1/64").unwrap().to_string(), "fd00::/64");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        for bad in ["10.244.0.0", "10.244.0.0/33", "ten/8", "fd00::/129"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pod_to_pod_keeps_its_source_and_the_rest_is_masqueraded() {
        let script = render(
            Cidr::parse("10.244.1.0/24").unwrap(),
            Cidr::parse("10.244.0.0/16").unwrap(),
        );
        for line in [
            "ip saddr != 10.244.1.0/24 return\n",
            "ip daddr 10.244.0.0/16 return\n",
            "ip daddr 224.0.0.0/4 return\n    masquerade\n",
        ] {
            assert!(script.contains(line), "{line:?} missing from\n{script}");
        }
    }

    /// The kernel takes the rendering (checked in a network namespace of its own); skipped
    /// where that cannot run (not root, no nft).
    #[test]
    fn nft_accepts_the_table() {
        use std::io::Write as _;
        for (pods, cluster) in [("10.244.1.0/24", "10.244.0.0/16"), ("fd00:1::/64", "fd00::/48")] {
            let Ok(mut child) = std::process::Command::new("unshare")
                .args(["-n", "nft", "-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            else {
                eprintln!("SKIPPED: no unshare");
                return;
            };
            let script = render(Cidr::parse(pods).unwrap(), Cidr::parse(cluster).unwrap());
            child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("Operation not permitted") || stderr.contains("No such file") {
                eprintln!("SKIPPED: {stderr}");
                return;
            }
            assert!(out.status.success(), "{script}\n{stderr}");
        }
    }
}
