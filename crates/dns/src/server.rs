//! The zone on the wire: a hickory-server `RequestHandler` that answers the
//! cluster domain from the current [`Zone`] and forwards every other query
//! to the node's resolvers. hickory's server reads UDP and TCP and encodes
//! answers to the client's buffer (512 bytes without EDNS), setting the TC
//! bit when they do not fit, so the client retries over TCP.

use crate::zone::{Answer, QueryType, Rdata, Zone};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one upstream gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The zone as the caches are now; `None` until they have synced.
pub type SharedZone = Arc<RwLock<Option<Arc<Zone>>>>;

/// Answers queries: see the module documentation.
pub struct ClusterDns {
    pub zone: SharedZone,
    /// The node's resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of cluster answers, and of negative ones (the SOA minimum).
    pub ttl: u32,
}

/// A response in owned parts, before it meets hickory's borrowing builder.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    recursion_available: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: false,
            recursion_available: true,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{s}.")).ok()
}

fn record(owner: &Name, ttl: u32, r: &Rdata) -> Option<Record> {
    let data = match r {
        Rdata::A(ip) => RData::A(A(*ip)),
        Rdata::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rdata::Cname(t) => RData::CNAME(CNAME(name(t)?)),
        Rdata::Ptr(t) => RData::PTR(PTR(name(t)?)),
        Rdata::Srv { weight, port, target } => RData::SRV(SRV::new(0, *weight, *port, name(target)?)),
    };
    Some(Record::from_rdata(owner.clone(), ttl, data))
}

fn query_type(t: RecordType) -> QueryType {
    match t {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::CNAME => QueryType::Cname,
        RecordType::SRV => QueryType::Srv,
        RecordType::PTR => QueryType::Ptr,
        RecordType::SOA => QueryType::Soa,
        RecordType::ANY => QueryType::Any,
        _ => QueryType::Other,
    }
}

impl ClusterDns {
    fn soa(&self, domain: &str) -> Option<Record> {
        let apex = name(domain)?;
        let soa = SOA::new(
            name(&format!("ns.dns.{domain}"))?,
            name(&format!("hostmaster.{domain}"))?,
            1,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Some(Record::from_rdata(apex, self.ttl, RData::SOA(soa)))
    }

    /// The cluster's answer, or `None` when the query is not the cluster's.
    fn answer(&self, zone: &Zone, qname: &Name, qtype: RecordType) -> Option<Reply> {
        let answer = zone.lookup(&qname.to_ascii(), query_type(qtype));
        let mut reply = Reply::code(ResponseCode::NoError);
        reply.authoritative = true;
        match answer {
            Answer::Forward => return None,
            Answer::NxDomain => {
                reply.code = ResponseCode::NXDomain;
                reply.authorities.extend(self.soa(zone.domain()));
            }
            Answer::NoData => reply.authorities.extend(self.soa(zone.domain())),
            Answer::Soa => reply.answers.extend(self.soa(zone.domain())),
            Answer::Records { answers, additionals } => {
                reply.answers = answers
                    .iter()
                    .filter_map(|r| record(qname, self.ttl, r))
                    .collect();
                reply.additionals = additionals
                    .iter()
                    .filter_map(|(owner, r)| record(&name(owner)?, self.ttl, r))
                    .collect();
            }
        }
        Some(reply)
    }

    /// The node's resolvers' answer to the raw query; SERVFAIL when none
    /// answers.
    async fn forward(&self, raw: &[u8]) -> Reply {
        for upstream in &self.upstreams {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(*upstream, raw)).await {
                Ok(Ok(msg)) => {
                    return Reply {
                        code: msg.metadata.response_code,
                        authoritative: msg.metadata.authoritative,
                        recursion_available: msg.metadata.recursion_available,
                        answers: msg.answers,
                        authorities: msg.authorities,
                        additionals: msg.additionals,
                    }
                }
                Ok(Err(e)) => tracing::debug!(%upstream, "forwarding failed: {e}"),
                Err(_) => tracing::debug!(%upstream, "forwarding timed out"),
            }
        }
        Reply::code(ResponseCode::ServFail)
    }
}

/// One query to an upstream: over UDP from a fresh port with a fresh id,
/// again over TCP when the answer was truncated.
async fn exchange(
    upstream: SocketAddr,
    raw: &[u8],
) -> Result<hickory_server::proto::op::Message, Box<dyn std::error::Error + Send + Sync>> {
    use hickory_server::proto::op::Message;
    if raw.len() < 12 {
        return Err("short query".into());
    }
    let mut query = raw.to_vec();
    let id: u16 = rand::random();
    query[..2].copy_from_slice(&id.to_be_bytes());
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(&query).await?;
    let mut buf = vec![0u8; 65535];
    let msg = loop {
        let n = socket.recv(&mut buf).await?;
        // a stray datagram (an old answer to this port) is not ours
        if n >= 2 && buf[..2] == id.to_be_bytes() {
            break Message::from_vec(&buf[..n])?;
        }
    };
    if !msg.metadata.truncation {
        return Ok(msg);
    }
    let mut tcp = tokio::net::TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len())?;
    tcp.write_all(&len.to_be_bytes()).await?;
    tcp.write_all(&query).await?;
    let len = tcp.read_u16().await?;
    let mut answer = vec![0u8; usize::from(len)];
    tcp.read_exact(&mut answer).await?;
    Ok(Message::from_vec(&answer)?)
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut edns = None;
        if let Some(req) = request.edns.as_ref() {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            edns = Some(e);
        }
        let reply = match request.request_info() {
            Err(_) => Reply::code(ResponseCode::FormErr),
            Ok(info) => {
                let qname = info.query.name().clone().into();
                let qtype = info.query.query_type();
                let zone = self.zone.read().unwrap_or_else(|p| p.into_inner()).clone();
                match zone {
                    Some(zone) => match self.answer(&zone, &qname, qtype) {
                        Some(reply) => reply,
                        None => self.forward(request.as_slice()).await,
                    },
                    // caches not synced yet: the cluster's names are unknown
                    None => Reply::code(ResponseCode::ServFail),
                }
            }
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = reply.recursion_available;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("sending a DNS response failed: {e}");
                let mut h = hickory_server::proto::op::Header {
                    metadata: Metadata::response_from_request(&request.metadata),
                    counts: Default::default(),
                };
                h.metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(h)
            }
        }
    }
}
