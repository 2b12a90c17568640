//! The zone on the wire. UDP, where nearly every query comes, is served
//! here: one socket per runtime worker on the same port (SO_REUSEPORT, so
//! the kernel spreads clients over them), each read by one task that
//! answers cluster names inline (decode, look up in its snapshot of the
//! zone, encode, send: no task spawned, no channel, no lock) and hands only
//! forwarded names to a task of their own. TCP goes through hickory-server's
//! listener and the same answers (the `RequestHandler` below). Answers are
//! encoded to the client's buffer (512 bytes without EDNS) with the TC bit
//! set when they do not fit, so the client retries over TCP.
//!
//! Each UDP task also remembers the bytes it answered: a cluster answer
//! depends only on the query's bytes after its id (flags, question, EDNS)
//! and on the zone, so a repeated query is answered by copying the stored
//! answer under the new id, without decoding or encoding anything. Clients
//! ask the same few names over and over (every pod resolves its backends
//! on every connection), which is where dnsmasq's plain C loop would
//! otherwise beat hickory's general decoder. The memory is dropped whenever
//! the zone changes, so an answer is never older than the zone.

use crate::zone::{Answer, QueryType, Rdata, Zone};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

/// How long one upstream gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The zone as the caches are now; `None` until they have synced. Each
/// reader keeps its own receiver: a query costs one atomic load to learn
/// whether the zone changed, and a lock only when it did.
pub type SharedZone = tokio::sync::watch::Receiver<Option<Arc<Zone>>>;

/// Answers queries: see the module documentation.
#[derive(Clone)]
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

impl ClusterDns {
    /// The reply that needs no upstream: the cluster's answer, FORMERR,
    /// or SERVFAIL before the caches synced; `None`: forward it.
    fn reply_now(&self, zone: Option<&Zone>, request: &Request) -> Option<Reply> {
        let Ok(info) = request.request_info() else {
            return Some(Reply::code(ResponseCode::FormErr));
        };
        let Some(zone) = zone else {
            // caches not synced yet: the cluster's names are unknown
            return Some(Reply::code(ResponseCode::ServFail));
        };
        let qname = info.query.name().clone().into();
        self.answer(zone, &qname, info.query.query_type())
    }

    async fn reply(&self, zone: Option<&Zone>, request: &Request) -> Reply {
        match self.reply_now(zone, request) {
            Some(reply) => reply,
            None => self.forward(request.as_slice()).await,
        }
    }
}

/// The response to `request` carrying `reply`; `edns` is [`response_edns`]'s.
fn response<'q>(
    request: &'q Request,
    reply: &'q Reply,
    edns: Option<&'q Edns>,
) -> MessageResponse<
    'q,
    'q,
    std::slice::Iter<'q, Record>,
    std::slice::Iter<'q, Record>,
    std::iter::Empty<&'q Record>,
    std::slice::Iter<'q, Record>,
> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = reply.code;
    metadata.authoritative = reply.authoritative;
    metadata.recursion_available = reply.recursion_available;
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(e) = edns {
        builder.edns(e);
    }
    builder.build(
        metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    )
}

/// EDNS in the response when the query had it, with the client's buffer size.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e
    })
}

/// `reply` to `request` in UDP wire format: at most the client's buffer
/// (512 bytes without EDNS), truncated with the TC bit beyond it.
fn encode_udp(request: &Request, reply: &Reply) -> Vec<u8> {
    let edns = response_edns(request);
    let max = edns.as_ref().map_or(512, |e| e.max_payload());
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    if response(request, reply, edns.as_ref())
        .destructive_emit(&mut encoder)
        .is_ok()
    {
        return bytes;
    }
    tracing::debug!(
        id = request.metadata.id,
        "cannot encode a DNS response; answering SERVFAIL"
    );
    bytes.clear();
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let _ = header.emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

/// FORMERR for a datagram whose header reads but whose body does not;
/// nothing for one too short to have a header, or for a response.
fn format_error(raw: &[u8]) -> Option<Vec<u8>> {
    use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
    let header = Header::read(&mut BinDecoder::new(raw)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut bytes = Vec::with_capacity(12);
    header.emit(&mut BinEncoder::new(&mut bytes)).ok()?;
    Some(bytes)
}

/// How many answers one UDP task remembers before it forgets them all.
/// About 150 bytes each: a few hundred KiB per socket at most.
const REMEMBERED_ANSWERS: usize = 4096;

/// The answers one UDP task sent for the zone it has now, keyed by the
/// query's bytes after its id (see the module documentation).
#[derive(Default)]
struct AnswerMemory {
    answers: std::collections::HashMap<Box<[u8]>, Box<[u8]>>,
}

impl AnswerMemory {
    /// The stored answer to `query` (a whole datagram), under its id.
    fn answer(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        if query.len() < 12 {
            return false;
        }
        let Some(answer) = self.answers.get(&query[2..]) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&query[..2]);
        out.extend_from_slice(&answer[2..]);
        true
    }

    fn remember(&mut self, query: &[u8], answer: &[u8]) {
        if query.len() < 12 || answer.len() < 12 {
            return;
        }
        // a flood of distinct names (random subdomains) must not grow it:
        // forgetting everything is cheap and the next queries refill it
        if self.answers.len() >= REMEMBERED_ANSWERS {
            self.answers.clear();
        }
        self.answers.insert(query[2..].into(), answer.into());
    }

    fn forget(&mut self) {
        self.answers.clear();
    }
}

/// Serves UDP on `socket` until it fails for good: see the module documentation.
pub async fn serve_udp(socket: Arc<UdpSocket>, dns: Arc<ClusterDns>) {
    let mut zone_changes = dns.zone.clone();
    let mut zone = zone_changes.borrow_and_update().clone();
    let mut memory = AnswerMemory::default();
    let mut out = Vec::with_capacity(512);
    // the largest EDNS query a client may send; queries are small
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier sends surface here; the socket lives on
                tracing::debug!("receiving a DNS query: {e}");
                continue;
            }
        };
        if src.port() == 0 {
            continue; // nowhere to answer
        }
        if zone_changes.has_changed().unwrap_or(false) {
            zone = zone_changes.borrow_and_update().clone();
            memory.forget();
        }
        // only queries are remembered, so a response never matches
        if memory.answer(&buf[..n], &mut out) {
            if let Err(e) = socket.send_to(&out, src).await {
                tracing::debug!(%src, "sending a DNS answer: {e}");
            }
            continue;
        }
        let request = match Request::from_bytes(buf[..n].to_vec(), src, Protocol::Udp) {
            Ok(r) => r,
            Err(_) => {
                if let Some(answer) = format_error(&buf[..n]) {
                    let _ = socket.send_to(&answer, src).await;
                }
                continue;
            }
        };
        if request.metadata.message_type == MessageType::Response {
            continue; // never answer answers (reflection)
        }
        match dns.reply_now(zone.as_deref(), &request) {
            Some(reply) => {
                let answer = encode_udp(&request, &reply);
                // before the caches synced the answer is SERVFAIL: not the zone's
                if zone.is_some() {
                    memory.remember(&buf[..n], &answer);
                }
                if let Err(e) = socket.send_to(&answer, src).await {
                    tracing::debug!(%src, "sending a DNS answer: {e}");
                }
            }
            None => {
                let (socket, dns) = (socket.clone(), dns.clone());
                tokio::spawn(async move {
                    let reply = dns.forward(request.as_slice()).await;
                    if let Err(e) = socket.send_to(&encode_udp(&request, &reply), src).await {
                        tracing::debug!(%src, "sending a forwarded DNS answer: {e}");
                    }
                });
            }
        }
    }
}

/// TCP, through hickory-server's listener.
#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let zone = self.zone.borrow().clone();
        let reply = self.reply(zone.as_deref(), request).await;
        let edns = response_edns(request);
        match response_handle
            .send_response(response(request, &reply, edns.as_ref()))
            .await
        {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("sending a DNS response failed: {e}");
                let mut h = Header {
                    metadata: Metadata::response_from_request(&request.metadata),
                    counts: Default::default(),
                };
                h.metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(h)
            }
        }
    }
}
