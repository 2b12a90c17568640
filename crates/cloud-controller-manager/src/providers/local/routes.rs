//! The `local` provider's routes: kernel routes to each node's pod CIDR,
//! programmed over rtnetlink in the manager's (or `routes.netns`) network
//! namespace and tagged with the provider's route protocol.

use super::LocalCloud;
use crate::cloud::{CloudError, CloudResult, Route, Routes};
use async_trait::async_trait;
use futures::TryStreamExt as _;
use rkube_api::core::v1::NodeAddress;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The main routing table (`RT_TABLE_MAIN`).
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// Runs `op` on a netlink connection opened in `netns` (a name under
/// /var/run/netns), or else in the calling thread's network namespace.
///
/// A netlink socket talks to the namespace of the thread that created it,
/// so the connection is made here, per call. A named namespace is entered
/// by a thread of its own (with its own runtime, whose reactor the socket
/// registers with) that ends with the call: a worker thread of the
/// caller's runtime must never change namespace.
async fn on_netlink<T, F, Fut>(netns: Option<String>, op: F) -> CloudResult<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = CloudResult<T>> + Send + 'static,
{
    let Some(name) = netns else {
        return connected(op).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shown = name.clone();
    std::thread::Builder::new()
        .name("rkccm-netns".into())
        .spawn(move || {
            let result = enter_netns(&name)
                .and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()
                        .map_err(|e| {
                            CloudError::Other(format!("cannot start a runtime for routes.netns {name}: {e}"))
                        })
                })
                .and_then(|rt| rt.block_on(connected(op)));
            let _ = tx.send(result);
        })
        .map_err(|e| CloudError::Other(format!("cannot start a thread for routes.netns {shown}: {e}")))?;
    rx.await.map_err(|_| {
        CloudError::Other(format!(
            "the thread programming routes in routes.netns {shown} died; see the log"
        ))
    })?
}

fn enter_netns(name: &str) -> CloudResult<()> {
    let path = Path::new("/var/run/netns").join(name);
    let file = std::fs::File::open(&path).map_err(|e| {
        CloudError::Other(format!(
            "routes.netns {name}: cannot open {}: {e}; create the namespace (ip netns add {name}) or fix routes.netns in the cloud-config",
            path.display()
        ))
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        CloudError::Other(format!(
            "routes.netns {name}: cannot enter {}: {e} (needs CAP_SYS_ADMIN)",
            path.display()
        ))
    })
}

async fn connected<T, F, Fut>(op: F) -> CloudResult<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = CloudResult<T>>,
{
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| {
        CloudError::Other(format!(
            "cannot open a netlink socket to program kernel routes: {e}"
        ))
    })?;
    let connection = tokio::spawn(connection);
    let result = op(handle).await;
    connection.abort();
    result
}

/// The kernel's errno in `e`, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()).filter(|c| *c != 0),
        _ => None,
    }
}

/// `e` in words: the kernel's error text without the `(os error N)` noise.
fn explain(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let text = m.to_io().to_string();
            match text.split_once(" (os error") {
                Some((words, _)) => words.to_string(),
                None => text,
            }
        }
        other => other.to_string(),
    }
}

/// `NET/BITS` with no host bits set (the kernel refuses those).
pub(super) fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let (net, bits) = cidr
        .split_once('/')
        .ok_or_else(|| "is not a CIDR (NET/BITS)".to_string())?;
    let net: IpAddr = net.parse().map_err(|_| format!("{net:?} is not an IP address"))?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= max)
        .ok_or_else(|| format!("the prefix length must be 0-{max}"))?;
    let host_bits_set = match net {
        IpAddr::V4(a) => bits < 32 && u32::from(a) & (u32::MAX >> bits) != 0,
        IpAddr::V6(a) => bits < 128 && u128::from(a) & (u128::MAX >> bits) != 0,
    };
    if host_bits_set {
        return Err("has host bits set".into());
    }
    Ok((net, bits))
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// `(destination CIDR, next hop)` of the unicast routes with `protocol` in
/// `table`, IPv4 and IPv6.
async fn kernel_routes(
    handle: rtnetlink::Handle,
    protocol: u8,
    table: u32,
) -> CloudResult<Vec<(String, IpAddr)>> {
    let mut found = Vec::new();
    let dumps = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    for (i, query) in dumps.into_iter().enumerate() {
        let mut routes = handle.route().get(query).execute();
        loop {
            let r = match routes.try_next().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                // A kernel without IPv6 has no IPv6 routes to list.
                Err(e) if i == 1 && errno(&e) == Some(nix::libc::EAFNOSUPPORT) => break,
                Err(e) => {
                    return Err(CloudError::Other(format!(
                        "cannot list the kernel's routes over netlink: {}",
                        explain(&e)
                    )))
                }
            };
            if u8::from(r.header.protocol) != protocol
                || route_table(&r) != table
                || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(a) => ip_of(a),
                _ => None,
            });
            let via = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(a) => ip_of(a),
                _ => None,
            });
            if let (Some(dst), Some(via)) = (dst, via) {
                found.push((format!("{dst}/{}", r.header.destination_prefix_length), via));
            }
        }
    }
    Ok(found)
}

/// How the kernel reaches `gateway` (`ip route get`), or why it cannot.
async fn next_hop(handle: &rtnetlink::Handle, gateway: IpAddr) -> Result<NextHop, String> {
    let bits = if gateway.is_ipv4() { 32 } else { 128 };
    let query = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(gateway, bits)
        .map_err(|e| e.to_string())?
        .build();
    let answer = handle.route().get(query).execute().try_next().await;
    match answer {
        Ok(Some(r)) if r.header.kind == RouteType::Local => Ok(NextHop::Local),
        Ok(Some(r)) => match r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(a) => ip_of(a),
            _ => None,
        }) {
            Some(router) => Ok(NextHop::ThroughRouter(router)),
            None => Ok(NextHop::Direct),
        },
        Ok(None) => Err(format!("the kernel gave no route to {gateway}")),
        Err(e) if matches!(errno(&e), Some(nix::libc::ENETUNREACH | nix::libc::EHOSTUNREACH)) => {
            Err(format!("no interface has a route to {gateway}"))
        }
        Err(e) => Err(format!("cannot look up the route to {gateway}: {}", explain(&e))),
    }
}

enum NextHop {
    /// An address of this machine: its pods are reached directly.
    Local,
    /// On the network of one of this machine's interfaces.
    Direct,
    /// Reached only through another router: not a valid next hop.
    ThroughRouter(IpAddr),
}

#[async_trait]
impl Routes for LocalCloud {
    async fn list_routes(&self, _cluster: &str) -> CloudResult<Vec<Route>> {
        let config = self.current();
        let settings = config.routes.clone();
        let table = settings.table.unwrap_or(MAIN_TABLE);
        let routes = on_netlink(settings.netns.clone(), move |handle| {
            kernel_routes(handle, settings.protocol, table)
        })
        .await?;
        Ok(routes
            .into_iter()
            .map(|(destination_cidr, via)| {
                let via = via.to_string();
                let target_node = config
                    .machines
                    .iter()
                    .find(|m| m.addresses.iter().any(|a| a.address == via))
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                Route {
                    target_node,
                    target_node_addresses: vec![NodeAddress {
                        r#type: "InternalIP".into(),
                        address: via,
                    }],
                    destination_cidr,
                }
            })
            .collect())
    }

    async fn create_route(&self, _cluster: &str, route: &Route) -> CloudResult<()> {
        let config = self.current();
        let settings = config.routes.clone();
        let gateway = crate::cloud::address_of(&route.target_node_addresses, "InternalIP")
            .map(str::to_string)
            .or_else(|| {
                config
                    .machine(&route.target_node)
                    .and_then(|m| m.addresses.iter().find(|a| a.kind == "InternalIP"))
                    .map(|a| a.address.clone())
            })
            .ok_or_else(|| {
                CloudError::Other(format!(
                    "node {} has no InternalIP to route {} to: list it under its machine in cloud-config {}",
                    route.target_node,
                    route.destination_cidr,
                    self.path.display()
                ))
            })?;
        let what = format!(
            "route for node {} (podCIDR {} via {gateway})",
            route.target_node, route.destination_cidr
        );
        let fail = move |why: String| CloudError::Other(format!("{what}: {why}"));
        let (dst, bits) =
            parse_cidr(&route.destination_cidr).map_err(|e| fail(format!("the podCIDR {e}")))?;
        let via: IpAddr = gateway
            .parse()
            .map_err(|_| fail(format!("the next hop {gateway:?} is not an IP address")))?;
        if dst.is_ipv4() != via.is_ipv4() {
            return Err(fail(
                "the podCIDR and the next hop are of different IP families".into(),
            ));
        }
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, bits)
            .and_then(|b| b.gateway(via))
            .map_err(|e| fail(e.to_string()))?
            .protocol(RouteProtocol::from(settings.protocol))
            .table_id(settings.table.unwrap_or(MAIN_TABLE))
            .build();
        let made = on_netlink(settings.netns.clone(), move |handle| async move {
            match next_hop(&handle, via).await.map_err(&fail)? {
                // The node this manager runs on reaches its own pods directly.
                NextHop::Local => return Ok(false),
                NextHop::Direct => {}
                NextHop::ThroughRouter(router) => {
                    return Err(fail(format!(
                        "{via} is not on the network of any interface here (the kernel reaches it only through the router {router}); a next hop must be directly connected"
                    )))
                }
            }
            handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(|e| match errno(&e) {
                    Some(nix::libc::ENETUNREACH) => fail(format!("no interface has a route to {via}")),
                    Some(nix::libc::EPERM) => fail("not permitted: the manager needs CAP_NET_ADMIN to program routes".into()),
                    _ => fail(explain(&e)),
                })?;
            Ok(true)
        })
        .await?;
        if made {
            tracing::debug!(node = %route.target_node, cidr = %route.destination_cidr, %gateway, "kernel route in place");
        }
        Ok(())
    }

    async fn delete_route(&self, _cluster: &str, route: &Route) -> CloudResult<()> {
        let config = self.current();
        let settings = config.routes.clone();
        let what = format!(
            "deleting the route for node {} (podCIDR {})",
            route.target_node, route.destination_cidr
        );
        let fail = move |why: String| CloudError::Other(format!("{what}: {why}"));
        let (dst, bits) =
            parse_cidr(&route.destination_cidr).map_err(|e| fail(format!("the podCIDR {e}")))?;
        // Whatever route of ours leads to the CIDR goes, whichever its next
        // hop: the node may have changed address since.
        let mut message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, bits)
            .map_err(|e| fail(e.to_string()))?
            .protocol(RouteProtocol::from(settings.protocol))
            .table_id(settings.table.unwrap_or(MAIN_TABLE))
            .build();
        message.header.scope = RouteScope::NoWhere;
        on_netlink(settings.netns.clone(), move |handle| async move {
            match handle.route().del(message).execute().await {
                Ok(()) => Ok(()),
                // Already gone.
                Err(e) if errno(&e) == Some(nix::libc::ESRCH) => Ok(()),
                Err(e) => Err(fail(explain(&e))),
            }
        })
        .await
    }
}
