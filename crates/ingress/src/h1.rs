//! The fast path for plain HTTP/1.1, where nearly every request comes: a
//! request is parsed by `httparse` (hyper's own parser) in the connection's
//! buffer, its head rewritten for the pod into one reused buffer and sent in
//! one write together with its body, and the pod's answer relayed the same
//! way, over upstream connections this client connection keeps. No
//! `Request`/`HeaderMap` is built, nothing is allocated per request, and the
//! answer is never handed between tasks: against a pod that costs little per
//! request, hyper's server and client together cost the proxy about as much
//! CPU as the client and the pod together (see the README's benchmark).
//!
//! Only what this path handles completely is taken: HTTP/1.1 in origin form
//! with a Host, a body of known length up to [`MAX_BODY`] (no chunked
//! uploads, `Expect` or `Upgrade`), a route with a ready pod. Anything else
//! (HTTP/1.0, HTTP/2's preface, a parse error, a 404 or 503, a large
//! upload) hands the connection, with the bytes read so far, to hyper's
//! server in [`crate::proxy`], which serves it from that request on exactly
//! as before. Answers are relayed as the pod frames them: by
//! `Content-Length`, chunked (followed to its end, so the connection to the
//! pod can be reused), or until the pod closes (then the client's connection
//! closes too).

use crate::proxy::{authority_host, lower_case};
use crate::routes::{Backend, RouteTable};
use bytes::Bytes;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A request or response head larger than this is hyper's to refuse
/// (requests) or a bad gateway (responses).
const MAX_HEAD: usize = 64 * 1024;
/// Headers per message this path parses; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Request bodies up to this size are read whole before the request is
/// sent, so a request a kept connection could not take can be sent again.
const MAX_BODY: usize = 64 * 1024;
/// Upstream connections a client connection keeps open for reuse.
const IDLE_UPSTREAMS: usize = 8;
/// How long a client may take to send a request head (hyper's setting in
/// the slow path too).
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffers start at this size and grow up to the limits above.
const BUFFER: usize = 16 * 1024;

/// How a client connection left the fast path.
pub enum End {
    /// Closed (by the client, by an error, or as the pod's answer required).
    Closed,
    /// For hyper's server to serve on, starting with these bytes already read.
    Fallback(Bytes),
}

/// One plain client connection's state on the fast path.
pub struct Conn {
    pub table_changes: watch::Receiver<Arc<RouteTable>>,
    pub table: Arc<RouteTable>,
    remote: SocketAddr,
    client_ip: String,
    upstreams: Vec<(SocketAddr, TcpStream)>,
    /// The client's bytes, the pod's bytes, and what is written next.
    from_client: Buf,
    from_pod: Buf,
    out: Vec<u8>,
}

impl Conn {
    pub fn new(
        table_changes: watch::Receiver<Arc<RouteTable>>,
        table: Arc<RouteTable>,
        remote: SocketAddr,
    ) -> Conn {
        Conn {
            table_changes,
            table,
            remote,
            client_ip: remote.ip().to_string(),
            upstreams: Vec::new(),
            from_client: Buf::new(),
            from_pod: Buf::new(),
            out: Vec::with_capacity(BUFFER),
        }
    }

    /// Serves `client` until it closes or needs hyper: see the module documentation.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&mut self, client: &mut S) -> End {
        loop {
            let request = match tokio::time::timeout(HEAD_TIMEOUT, self.read_request(client)).await {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return End::Closed,
            };
            let Some(request) = request else {
                return End::Fallback(Bytes::copy_from_slice(self.from_client.filled()));
            };
            match self.forward(client, &request).await {
                Ok(Next::Continue) if !request.close => {}
                Ok(_) | Err(_) => return End::Closed,
            }
        }
    }

    /// Reads a whole request (head and body) into `from_client`: `None` at
    /// the end of the stream, `Some(None)` for one this path leaves to hyper.
    async fn read_request<S: AsyncRead + Unpin>(
        &mut self,
        client: &mut S,
    ) -> io::Result<Option<Option<Request>>> {
        let (head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(self.from_client.filled()) {
                Ok(httparse::Status::Complete(n)) => match body_length(&req) {
                    Some(body) => break (n, body),
                    None => return Ok(Some(None)),
                },
                Ok(httparse::Status::Partial) if self.from_client.len() < MAX_HEAD => {
                    if self.from_client.fill(client).await? == 0 {
                        return Ok(None);
                    }
                }
                _ => return Ok(Some(None)),
            }
        };
        while self.from_client.len() < head_len + body_len {
            if self.from_client.fill(client).await? == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.prepare(head_len, body_len)))
    }

    /// Routes the request at the start of `from_client` and writes what the
    /// pod is sent into `out`; `None` leaves it to hyper (no host, no rule,
    /// no ready pod: hyper's path answers those).
    fn prepare(&mut self, head_len: usize, body_len: usize) -> Option<Request> {
        if self.table_changes.has_changed().unwrap_or(false) {
            self.table = self.table_changes.borrow_and_update().clone();
        }
        let bytes = self.from_client.filled();
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&bytes[..head_len]).ok()?;
        let (method, target) = (req.method?, req.path?);
        let host = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(authority_host)?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let backend = self.table.route(host, path)?;
        let upstream = backend.pick()?;
        let connection = Tokens::of(req.headers, "connection");

        let out = &mut self.out;
        out.clear();
        extend(out, &[method, " ", target, " HTTP/1.1\r\n"]);
        let mut prior_xff = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                prior_xff = prior_xff.or(Some(h.value));
            } else if !hop_by_hop(h.name)
                && !connection.names(h.name)
                && !["x-real-ip", "x-forwarded-proto", "x-forwarded-host"]
                    .iter()
                    .any(|n| h.name.eq_ignore_ascii_case(n))
            {
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prior) = prior_xff {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
        extend(
            out,
            &[
                &self.client_ip,
                "\r\nx-real-ip: ",
                &self.client_ip,
                "\r\nx-forwarded-proto: http\r\nx-forwarded-host: ",
                &lower_case(host),
                "\r\n\r\n",
            ],
        );
        out.extend_from_slice(&bytes[head_len..head_len + body_len]);
        Some(Request {
            len: head_len + body_len,
            head: method == "HEAD",
            idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
            close: connection.close,
            backend: backend.clone(),
            upstream,
        })
    }

    /// Sends the prepared request to its pod and relays the answer (a 502
    /// of ours when the pod gives none).
    async fn forward<S: AsyncWrite + Unpin>(&mut self, client: &mut S, req: &Request) -> io::Result<Next> {
        self.from_client.consume(req.len);
        let mut pod = None;
        // a kept connection the pod closed meanwhile costs one new one
        for fresh in [false, true] {
            let idle = if fresh { None } else { self.idle(req.upstream) };
            let (reused, mut stream) = match idle {
                Some(s) => (true, s),
                None => match connect(req.upstream).await {
                    Ok(s) => (false, s),
                    Err(e) => {
                        tracing::debug!(backend = %req.backend.name, upstream = %req.upstream, remote = %self.remote, "upstream failed: {e}");
                        break;
                    }
                },
            };
            self.from_pod.clear();
            let sent = stream.write_all(&self.out).await;
            let answered = match sent {
                Ok(()) => self.read_head(&mut stream, req.head).await,
                Err(e) => Err(e),
            };
            match answered {
                Ok(head) => {
                    pod = Some((stream, head));
                    break;
                }
                Err(e) if reused && req.idempotent && self.from_pod.len() == 0 => {
                    tracing::debug!(upstream = %req.upstream, "a kept connection failed, trying a new one: {e}");
                }
                Err(e) => {
                    tracing::debug!(backend = %req.backend.name, upstream = %req.upstream, remote = %self.remote, "upstream failed: {e}");
                    break;
                }
            }
        }
        let Some((mut stream, head)) = pod else {
            let body = format!(
                "502 bad gateway: {} at {} did not answer\n",
                req.backend.name, req.upstream
            );
            self.out.clear();
            extend(
                &mut self.out,
                &[
                    "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ",
                    &body.len().to_string(),
                    if req.close {
                        "\r\nconnection: close\r\n\r\n"
                    } else {
                        "\r\n\r\n"
                    },
                    &body,
                ],
            );
            client.write_all(&self.out).await?;
            return Ok(Next::Continue);
        };
        self.write_head(&head, req.close);
        let reusable = self.relay(client, &mut stream, &head).await?;
        if reusable && head.keep_alive && self.upstreams.len() < IDLE_UPSTREAMS {
            self.upstreams.push((req.upstream, stream));
        }
        Ok(if head.framing == Framing::Close {
            Next::Close
        } else {
            Next::Continue
        })
    }

    /// A kept connection to `upstream` the pod has not closed or written to since.
    fn idle(&mut self, upstream: SocketAddr) -> Option<TcpStream> {
        while let Some(i) = self.upstreams.iter().position(|(a, _)| *a == upstream) {
            let (_, stream) = self.upstreams.swap_remove(i);
            if matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return Some(stream);
            }
        }
        None
    }

    /// Reads the pod's answer head into `from_pod` (informational answers
    /// skipped, as hyper's client does) and writes nothing yet.
    async fn read_head(&mut self, pod: &mut TcpStream, head_request: bool) -> io::Result<Head> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(self.from_pod.filled()) {
                Ok(httparse::Status::Complete(n)) => {
                    let code = resp.code.unwrap_or(0);
                    if (100..200).contains(&code) && code != 101 {
                        self.from_pod.consume(n);
                        continue;
                    }
                    return Head::of(&resp, n, head_request);
                }
                Ok(httparse::Status::Partial) if self.from_pod.len() < MAX_HEAD => {
                    if self.from_pod.fill(pod).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(_) => return Err(invalid("the answer's head is too large")),
                Err(e) => return Err(invalid(e)),
            }
        }
    }

    /// The answer's head for the client in `out`: the pod's status and
    /// headers without hop-by-hop ones (`Transfer-Encoding` kept when the
    /// body is relayed chunked).
    fn write_head(&mut self, head: &Head, client_close: bool) {
        let bytes = &self.from_pod.filled()[..head.len];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        // parsed before, so it parses again
        let _ = resp.parse(bytes);
        let code = resp.code.unwrap_or(502);
        let reason = match resp.reason {
            Some(r) if !r.is_empty() => r,
            _ => http::StatusCode::from_u16(code)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or(""),
        };
        let out = &mut self.out;
        out.clear();
        let _ = write!(out, "HTTP/1.1 {code} {reason}\r\n");
        let connection = Tokens::of(resp.headers, "connection");
        for h in resp.headers.iter() {
            let keep = if h.name.eq_ignore_ascii_case("transfer-encoding") {
                head.framing == Framing::Chunked
            } else {
                !hop_by_hop(h.name) && !connection.names(h.name)
            };
            if keep {
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
        }
        if client_close || head.framing == Framing::Close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Writes `out` (the head) and the body after it to the client, as the
    /// pod sends it; true when the pod's connection ended exactly at the
    /// answer's end (so it can take another request).
    async fn relay<S: AsyncWrite + Unpin>(
        &mut self,
        client: &mut S,
        pod: &mut TcpStream,
        head: &Head,
    ) -> io::Result<bool> {
        self.from_pod.consume(head.len);
        let mut chunked = Chunked::default();
        let mut left = match head.framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            // what of the buffered bytes belongs to this answer
            let avail = self.from_pod.filled();
            let take = match head.framing {
                Framing::Empty => 0,
                Framing::Length(_) => avail.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
                Framing::Chunked => chunked.feed(avail).map_err(invalid)?.unwrap_or(avail.len()),
                Framing::Close => avail.len(),
            };
            self.out.extend_from_slice(&avail[..take]);
            self.from_pod.consume(take);
            if let Framing::Length(_) = head.framing {
                left -= take as u64;
            }
            if !self.out.is_empty() {
                client.write_all(&self.out).await?;
                self.out.clear();
            }
            let done = match head.framing {
                Framing::Empty => true,
                Framing::Length(_) => left == 0,
                Framing::Chunked => chunked.done(),
                Framing::Close => false,
            };
            if done {
                return Ok(self.from_pod.len() == 0);
            }
            self.from_pod.clear();
            if self.from_pod.fill(pod).await? == 0 {
                if head.framing == Framing::Close {
                    return Ok(false);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// What the fast path does after an answer.
enum Next {
    Continue,
    Close,
}

/// A request read whole and prepared in `out`.
struct Request {
    /// Its bytes in `from_client`.
    len: usize,
    head: bool,
    /// May be sent again when a kept connection fails (RFC 9110 9.2.2).
    idempotent: bool,
    /// The client asked to close after this answer.
    close: bool,
    backend: Arc<Backend>,
    upstream: SocketAddr,
}

/// A pod's answer head, as read.
struct Head {
    len: usize,
    framing: Framing,
    /// The pod will take another request on this connection.
    keep_alive: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the pod closes.
    Close,
}

impl Head {
    fn of(resp: &httparse::Response, len: usize, head_request: bool) -> io::Result<Head> {
        let code = resp.code.unwrap_or(0);
        if code == 101 {
            return Err(invalid("the pod switched protocols, which was not asked"));
        }
        let connection = Tokens::of(resp.headers, "connection");
        let keep_alive = resp.version == Some(1) && !connection.close;
        let framing = if head_request || code == 204 || code == 304 {
            Framing::Empty
        } else if let Some(te) = resp
            .headers
            .iter()
            .rev()
            .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            let last = te.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match content_length(resp.headers) {
                Ok(Some(n)) => Framing::Length(n),
                Ok(None) => Framing::Close,
                Err(()) => return Err(invalid("conflicting Content-Length headers")),
            }
        };
        Ok(Head {
            len,
            framing,
            keep_alive,
        })
    }
}

/// The body length of a request this path takes: HTTP/1.1, origin form,
/// no `Transfer-Encoding`, `Upgrade` or `Expect`, a body up to [`MAX_BODY`].
fn body_length(req: &httparse::Request) -> Option<usize> {
    if req.version != Some(1) || !req.path?.starts_with('/') {
        return None;
    }
    if req.headers.iter().any(|h| {
        ["transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
    }) {
        return None;
    }
    let len = content_length(req.headers).ok()?.unwrap_or(0);
    usize::try_from(len).ok().filter(|n| *n <= MAX_BODY)
}

/// The Content-Length, when every such header agrees; `Err` when they do
/// not or one is not a number.
fn content_length(headers: &[httparse::Header]) -> Result<Option<u64>, ()> {
    let mut length = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for v in h.value.split(|b| *b == b',') {
            let v = std::str::from_utf8(v.trim_ascii()).map_err(|_| ())?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = v.parse().map_err(|_| ())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Headers that describe one hop, not the message (RFC 9110 7.6.1), as
/// [`crate::proxy`] strips them.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "keep-alive",
        "proxy-connection",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// The tokens of a message's `Connection` headers: the header names it
/// makes hop-by-hop, and whether it says `close`.
struct Tokens<'a> {
    values: [&'a [u8]; 4],
    count: usize,
    close: bool,
}

impl<'a> Tokens<'a> {
    fn of(headers: &[httparse::Header<'a>], name: &str) -> Tokens<'a> {
        let mut t = Tokens {
            values: [&[]; 4],
            count: 0,
            close: false,
        };
        for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
            if t.count < t.values.len() {
                t.values[t.count] = h.value;
                t.count += 1;
            }
            t.close |= h
                .value
                .split(|b| *b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        t
    }

    /// `name` is one the Connection headers list.
    fn names(&self, name: &str) -> bool {
        self.values[..self.count].iter().any(|v| {
            v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        })
    }
}

/// Where a chunked body ends, followed byte by byte as it streams past
/// (RFC 9112 7.1): sizes, extensions, data, trailers.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    /// Bytes in the current trailer line.
    line: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    Done,
}

impl Chunked {
    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Follows `bytes`: `Some(n)` when the body ends after its first `n`.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() && self.state != Done {
            if self.state == Data {
                let n = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = bytes[i];
            self.state = match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.size >> 56 != 0 {
                            return Err("a chunk size too large");
                        }
                        self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                        Size
                    }
                    b';' | b' ' | b'\t' => Extension,
                    b'\r' => SizeLf,
                    _ => return Err("a bad chunk size"),
                },
                Extension => {
                    if b == b'\r' {
                        SizeLf
                    } else {
                        Extension
                    }
                }
                SizeLf if b == b'\n' => {
                    if self.size == 0 {
                        self.line = 0;
                        Trailer
                    } else {
                        Data
                    }
                }
                DataCr if b == b'\r' => DataLf,
                DataLf if b == b'\n' => Size,
                Trailer => {
                    if b == b'\r' {
                        TrailerLf
                    } else {
                        self.line += 1;
                        Trailer
                    }
                }
                TrailerLf if b == b'\n' => {
                    if self.line == 0 {
                        Done
                    } else {
                        self.line = 0;
                        Trailer
                    }
                }
                _ => return Err("a bad chunk delimiter"),
            };
            i += 1;
        }
        Ok(self.done().then_some(i))
    }
}

/// A read buffer: bytes `start..end` of `data` are read and not yet used.
struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: vec![0; BUFFER],
            start: 0,
            end: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.clear();
        }
    }

    fn clear(&mut self) {
        (self.start, self.end) = (0, 0);
    }

    /// Reads what `from` has into the free space, moving or growing the
    /// buffer first when it is full; 0 at the end of the stream.
    async fn fill<R: AsyncRead + Unpin>(&mut self, from: &mut R) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else if self.data.len() < MAX_HEAD + MAX_BODY {
                self.data
                    .resize((self.data.len() * 2).min(MAX_HEAD + MAX_BODY), 0);
            } else {
                return Err(invalid("a message larger than the buffer"));
            }
        }
        let n = from.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

async fn connect(upstream: SocketAddr) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting timed out after {CONNECT_TIMEOUT:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn extend(out: &mut Vec<u8>, parts: &[&str]) {
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_and_trailers_do() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        let mut whole = Chunked::default();
        assert_eq!(whole.feed(body), Ok(Some(end)));
        // byte by byte, as a slow pod sends it
        let mut slow = Chunked::default();
        for (i, b) in body.iter().enumerate() {
            let got = slow.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(got.is_some(), i + 1 == end, "byte {i}");
            if got.is_some() {
                break;
            }
        }
        assert_eq!(Chunked::default().feed(b"0\r\n\r\n"), Ok(Some(5)));
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        assert!(Chunked::default().feed(b"2\r\nabX").is_err());
    }

    #[test]
    fn only_simple_requests_take_the_fast_path() {
        let parse = |raw: &str| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            assert!(req.parse(raw.as_bytes()).unwrap().is_complete(), "{raw}");
            body_length(&req)
        };
        assert_eq!(parse("GET / HTTP/1.1\r\nhost: a\r\n\r\n"), Some(0));
        assert_eq!(parse("POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n"), Some(5));
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 999999999\r\n\r\n",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
