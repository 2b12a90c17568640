//! A one-shot DNS client over UDP and TCP: for tests, the bench and
//! diagnostics (pods use their own libc resolver).

use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, RData, RecordType};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The wire form of a recursive query for `name` (absolute, final dot optional).
pub fn request(id: u16, name: &str, t: RecordType) -> io::Result<Vec<u8>> {
    let name = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(&name).map_err(invalid)?, t));
    m.to_vec().map_err(invalid)
}

/// One query over UDP (no EDNS, so answers over 512 bytes come truncated).
pub async fn udp(server: SocketAddr, name: &str, t: RecordType, timeout: Duration) -> io::Result<Message> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    let id = rand::random();
    sock.send(&request(id, name, t)?).await?;
    let mut buf = vec![0u8; 65535];
    tokio::time::timeout(timeout, async {
        loop {
            let n = sock.recv(&mut buf).await?;
            if n >= 2 && buf[..2] == id.to_be_bytes() {
                return Message::from_vec(&buf[..n]).map_err(invalid);
            }
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no DNS answer from {server}")))?
}

/// One query over TCP.
pub async fn tcp(server: SocketAddr, name: &str, t: RecordType, timeout: Duration) -> io::Result<Message> {
    tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(server).await?;
        let q = request(rand::random(), name, t)?;
        s.write_all(&u16::try_from(q.len()).map_err(invalid)?.to_be_bytes())
            .await?;
        s.write_all(&q).await?;
        let len = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await?;
        Message::from_vec(&buf).map_err(invalid)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no DNS answer from {server}")))?
}

/// The A and AAAA addresses in an answer section, in order.
pub fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}
