//! `pods/exec`, `pods/attach` and `pods/portforward` for Kubernetes clients.
//!
//! kubectl 1.30 and newer open exec over WebSocket (`GET`, subprotocol
//! `v5.channel.k8s.io`, else `v4.channel.k8s.io`) and port-forward as
//! SPDY/3.1 tunnelled inside WebSocket (`SPDY/3.1+portforward.k8s.io`);
//! they fall back to plain SPDY only when the WebSocket upgrade fails
//! (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`
//! force it), which rkube does not serve. Both are translated onto the
//! gRPC streams rkubectl uses (`Exec`, `PortForward`), through the same
//! `ApiService` methods, so authorization (`create` on `pods/exec` and
//! `pods/portforward`, whatever the HTTP verb, as Kubernetes) and the
//! proxying to the pod's kubelet are decided once. The caller and the pod
//! are checked before the connection is upgraded, so a refusal is an
//! ordinary HTTP `Status`; what fails later (the kubelet, the container)
//! arrives inside the stream, as Kubernetes reports it.
//!
//! Attach (`create` on `pods/attach`) is an exec stream whose start asks
//! the kubelet to attach: the main process's output from now on, until it
//! exits (a success `Status`, whatever its exit code, as Kubernetes
//! reports an attach that ended). Its stdin is not served yet: `stdin=true`
//! is refused before the upgrade.
//!
//! Exec channels (the first byte of each binary message): 0 stdin, 1
//! stdout, 2 stderr, 3 the final `Status` (exit code), 4 terminal resize
//! (`{"Width":W,"Height":H}`); in v5, 255 closes a stream (`[255, 0]`:
//! the end of stdin).

use super::{spdy, status, Call, Caller, Target};
use crate::error::ApiError;
use crate::service::ApiService;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rkube_api::kubelet::v1::{self as kv1, exec_input, exec_output, port_forward_input};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tonic::body::Body;
use tonic::Status;

type Answer = Result<http::Response<Body>, Status>;
type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Exec subprotocols, preferred first: v5 adds closing stdin.
const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Whether `t` is a streaming subresource this module serves.
pub(super) fn is_stream(t: &Target) -> bool {
    t.info.kind == "Pod"
        && !t.name.is_empty()
        && matches!(t.subresource.as_str(), "exec" | "attach" | "portforward")
}

pub(super) async fn serve(
    api: &ApiService,
    call: &Call,
    t: &Target,
    upgrade: Option<OnUpgrade>,
) -> http::Response<Body> {
    let method = &call.parts.method;
    let answer = if *method != http::Method::GET && *method != http::Method::POST {
        Err(Status::unimplemented(format!(
            "{method} is not allowed on pods/{}: use GET (WebSocket) or POST",
            t.subresource
        )))
    } else {
        match t.subresource.as_str() {
            "exec" => exec(api, call, t, upgrade),
            "attach" => attach(api, call, t, upgrade),
            _ => port_forward(api, call, t, upgrade),
        }
    };
    answer.unwrap_or_else(|s| status::response(&s, Some(t.info)))
}

/// A WebSocket upgrade the client asked for: the accept key and the
/// subprotocol both sides will speak.
struct Upgrade {
    accept: String,
    protocol: &'static str,
}

fn header_values<'a>(call: &'a Call, name: &str) -> impl Iterator<Item = &'a str> {
    call.parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The WebSocket upgrade of `call` with the first of `supported` the
/// client offers; `None` when the request is not a WebSocket upgrade.
fn websocket_upgrade(call: &Call, supported: &[&'static str]) -> Result<Option<Upgrade>, Status> {
    if !header_values(call, "upgrade").any(|v| v.eq_ignore_ascii_case("websocket")) {
        return Ok(None);
    }
    let key =
        call.parts.headers.get("sec-websocket-key").ok_or_else(|| {
            Status::invalid_argument("a WebSocket upgrade needs a Sec-WebSocket-Key header")
        })?;
    let offered: Vec<&str> = header_values(call, "sec-websocket-protocol").collect();
    let protocol = supported.iter().find(|p| offered.contains(p)).ok_or_else(|| {
        Status::invalid_argument(format!(
            "the client offers the WebSocket subprotocols {offered:?}; rkube speaks {} here",
            supported.join(", ")
        ))
    })?;
    Ok(Some(Upgrade {
        accept: tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
        protocol,
    }))
}

/// `101 Switching Protocols` for `up`.
fn switching(up: &Upgrade) -> http::Response<Body> {
    let mut resp = http::Response::new(super::listener::full(bytes::Bytes::new()));
    *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&up.accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(up.protocol),
    );
    resp
}

/// The refusal of a request that is not a WebSocket upgrade (SPDY, or
/// plain HTTP).
fn not_websocket(what: &str, protocols: &str, env: &str) -> Status {
    Status::invalid_argument(format!(
        "pods/{what} is served over WebSocket ({protocols}), not SPDY or plain HTTP: kubectl 1.30 and newer use it \
         unless {env}=false is set; rkubectl {what} works too"
    ))
}

/// The upgraded connection as a WebSocket, once hyper hands it over.
async fn accept(upgrade: OnUpgrade) -> Option<WebSocket> {
    match upgrade.await {
        Ok(upgraded) => {
            Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await)
        }
        Err(e) => {
            tracing::debug!("the upgrade of a stream request failed: {e}");
            None
        }
    }
}

fn upgradable(upgrade: Option<OnUpgrade>) -> Result<OnUpgrade, Status> {
    upgrade.ok_or_else(|| {
        Status::invalid_argument(
            "this connection cannot be upgraded to a WebSocket: open it over HTTP/1.1 (kubectl does)",
        )
    })
}

fn exec(api: &ApiService, call: &Call, t: &Target, upgrade: Option<OnUpgrade>) -> Answer {
    let q = &call.query;
    let start = kv1::ExecStart {
        namespace: t.namespace.clone(),
        pod: t.name.clone(),
        container: q.get("container").into(),
        command: call.query_all("command"),
        stdin: q.flag("stdin"),
        tty: q.flag("tty"),
        attach: false,
    };
    api.check_pod_stream(&call.grpc(()), &t.namespace, &t.name, "exec")?;
    if start.command.is_empty() {
        return Err(ApiError::bad_request(format!(
            "exec in pod {:?} needs a command (query parameter `command`, once per word): kubectl exec {} -- COMMAND [ARGS...]",
            t.name, t.name
        ))
        .into());
    }
    let Some(up) = websocket_upgrade(call, EXEC_PROTOCOLS)? else {
        return Err(not_websocket(
            "exec",
            &EXEC_PROTOCOLS.join(", "),
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
        ));
    };
    let upgrade = upgradable(upgrade)?;
    let options = ExecOptions {
        v5: up.protocol == EXEC_PROTOCOLS[0],
        stdin: start.stdin,
        tty: start.tty,
        stdout: !matches!(q.get("stdout"), "false" | "0"),
        stderr: !matches!(q.get("stderr"), "false" | "0"),
        attach: false,
    };
    Ok(start_session(api, call, start, upgrade, &up, options))
}

/// Upgrades the connection and runs the exec (or attach) `start` over it.
fn start_session(
    api: &ApiService,
    call: &Call,
    start: kv1::ExecStart,
    upgrade: OnUpgrade,
    up: &Upgrade,
    options: ExecOptions,
) -> http::Response<Body> {
    let command = start.command.clone();
    let (tx, rx) = mpsc::channel(16);
    // the channel is empty: the first message always fits
    let _ = tx.try_send(Ok(kv1::ExecInput {
        input: Some(exec_input::Input::Start(start)),
    }));
    let req = call.grpc(ReceiverStream::new(rx));
    let api = ApiService {
        state: api.state.clone(),
    };
    tokio::spawn(async move {
        if let Some(ws) = accept(upgrade).await {
            run_exec(api, req, tx, ws, options, command).await;
        }
    });
    switching(up)
}

#[derive(Debug, Clone, Copy)]
struct ExecOptions {
    v5: bool,
    stdin: bool,
    tty: bool,
    stdout: bool,
    stderr: bool,
    /// Attached to the main process: its end is a success, whatever its
    /// exit code, as Kubernetes reports it.
    attach: bool,
}

type ExecInputs = mpsc::Sender<Result<kv1::ExecInput, Status>>;

/// What a message from the client asks of the exec, if anything.
fn exec_input(message: &[u8], options: ExecOptions) -> Option<exec_input::Input> {
    let (&channel, payload) = message.split_first()?;
    match channel {
        STDIN if options.stdin => Some(exec_input::Input::Stdin(payload.to_vec())),
        RESIZE => {
            let size: Value = serde_json::from_slice(payload).ok()?;
            let dim = |k: &str| {
                size.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
            };
            Some(exec_input::Input::Resize(kv1::TerminalSize {
                width: dim("Width")?,
                height: dim("Height")?,
            }))
        }
        CLOSE if options.v5 && payload.first() == Some(&STDIN) => Some(exec_input::Input::StdinEof(true)),
        _ => None,
    }
}

/// The final `Status` of an exec as the error channel carries it: Success,
/// or Failure with reason NonZeroExitCode and the code as the cause
/// `ExitCode` (which kubectl turns into its own exit code).
fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A failure before or during the exec (the kubelet, the container), as a
/// `Status` on the error channel.
fn failure(s: &Status) -> Value {
    let (_, mut v) = status::status_json(s, None);
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
        o.remove("code");
    }
    v
}

fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    Message::Binary(m.into())
}

async fn run_exec(
    api: ApiService,
    req: tonic::Request<ReceiverStream<Result<kv1::ExecInput, Status>>>,
    tx: ExecInputs,
    ws: WebSocket,
    options: ExecOptions,
    command: Vec<String>,
) {
    let (mut sink, mut source) = ws.split();
    // the client's messages become exec input until it goes away; then
    // the input ends, and the kubelet ends the process. Without stdin or a
    // terminal to resize there is no input: it ends after the start, as
    // rkubectl's does.
    let forward = options.stdin || options.tty;
    // ends only when the client is gone (closed, or the connection lost)
    let mut reader = tokio::spawn(async move {
        let mut tx = forward.then_some(tx);
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let (Some(to_exec), Some(input)) = (&tx, exec_input(&data, options)) else {
                continue;
            };
            if to_exec
                .send(Ok(kv1::ExecInput { input: Some(input) }))
                .await
                .is_err()
            {
                // the exec takes no more input; keep watching for the close
                tx = None;
            }
        }
    });
    let session = async {
        match api.exec_stream(req).await {
            Err(s) => Some(failure(&s)),
            Ok(mut out) => loop {
                let (channel, data) = match out.next().await {
                    Some(Ok(kv1::ExecOutput { output: Some(o) })) => match o {
                        exec_output::Output::Stdout(d) if options.stdout => (STDOUT, d),
                        exec_output::Output::Stderr(d) if options.stderr => (STDERR, d),
                        exec_output::Output::Stderr(d) if options.tty => (STDOUT, d),
                        exec_output::Output::ExitCode(_) if options.attach => {
                            break Some(exit_status(&[], 0))
                        }
                        exec_output::Output::ExitCode(code) => break Some(exit_status(&command, code)),
                        _ => continue,
                    },
                    Some(Ok(_)) => continue,
                    Some(Err(s)) => break Some(failure(&s)),
                    None => {
                        break Some(failure(&Status::internal(
                            "the kubelet ended the exec without an exit code",
                        )))
                    }
                };
                if sink.send(channel_message(channel, &data)).await.is_err() {
                    break None;
                }
            },
        }
    };
    // a client that goes away ends the exec: dropping its stream cancels
    // the call, and the kubelet kills the process
    let last = tokio::select! {
        last = session => last,
        _ = &mut reader => None,
    };
    if let Some(status) = last {
        let bytes = serde_json::to_vec(&status).unwrap_or_default();
        let _ = sink.send(channel_message(ERROR, &bytes)).await;
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }
    let _ = sink.close().await;
    reader.abort();
}

/// `kubectl attach`: the container's main process's output from now on,
/// through the exec stream with `attach` set (the kubelet follows the
/// container's log file), and with `-i` its stdin (the container needs
/// `stdin: true`; the kubelet says so otherwise).
fn attach(api: &ApiService, call: &Call, t: &Target, upgrade: Option<OnUpgrade>) -> Answer {
    let q = &call.query;
    api.check_pod_stream(&call.grpc(()), &t.namespace, &t.name, "attach")?;
    let Some(up) = websocket_upgrade(call, EXEC_PROTOCOLS)? else {
        return Err(not_websocket(
            "attach",
            &EXEC_PROTOCOLS.join(", "),
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
        ));
    };
    let upgrade = upgradable(upgrade)?;
    let tty = q.flag("tty");
    let stdin = q.flag("stdin");
    let options = ExecOptions {
        v5: up.protocol == EXEC_PROTOCOLS[0],
        stdin,
        tty,
        stdout: !matches!(q.get("stdout"), "false" | "0"),
        // on a terminal both streams are one: kubectl reads only stdout
        stderr: !tty && !matches!(q.get("stderr"), "false" | "0"),
        attach: true,
    };
    let start = kv1::ExecStart {
        namespace: t.namespace.clone(),
        pod: t.name.clone(),
        container: q.get("container").into(),
        attach: true,
        stdin,
        tty,
        ..Default::default()
    };
    Ok(start_session(api, call, start, upgrade, &up, options))
}

fn port_forward(api: &ApiService, call: &Call, t: &Target, upgrade: Option<OnUpgrade>) -> Answer {
    api.check_pod_stream(&call.grpc(()), &t.namespace, &t.name, "portforward")?;
    let Some(up) = websocket_upgrade(call, &[PORT_FORWARD_PROTOCOL])? else {
        return Err(not_websocket(
            "port-forward",
            PORT_FORWARD_PROTOCOL,
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
        ));
    };
    let upgrade = upgradable(upgrade)?;
    let session = PortForwardSession {
        api: ApiService {
            state: api.state.clone(),
        },
        caller: call.caller(),
        namespace: t.namespace.clone(),
        pod: t.name.clone(),
    };
    tokio::spawn(async move {
        if let Some(ws) = accept(upgrade).await {
            session.run(ws).await;
        }
    });
    Ok(switching(&up))
}

/// One `kubectl port-forward` connection: SPDY inside WebSocket binary
/// messages. Each local connection is a pair of SPDY streams (`error`,
/// `data`) sharing a `requestid`; each pair becomes one `PortForward` call.
struct PortForwardSession {
    api: ApiService,
    caller: Caller,
    namespace: String,
    pod: String,
}

/// A pair of streams being opened.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<i32>,
}

/// A connection being forwarded: where its bytes from the client go, and
/// how to stop it when the client resets it.
struct Forwarding {
    input: Option<mpsc::Sender<Result<kv1::PortForwardInput, Status>>>,
    cancel: Option<oneshot::Sender<()>>,
}

type Frames = mpsc::Sender<Vec<u8>>;

impl PortForwardSession {
    async fn run(self, ws: WebSocket) {
        let (mut sink, mut source) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let mut framer = spdy::Framer::new();
        let mut pairs: HashMap<String, Pair> = HashMap::new();
        // by data stream id
        let mut forwardings: HashMap<u32, Forwarding> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        'connection: while let Some(message) = source.next().await {
            let bytes = match message {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            framer.push(&bytes);
            loop {
                let frame = match framer.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(pod = %self.pod, "port-forward: {e}");
                        break 'connection;
                    }
                };
                match frame {
                    spdy::Frame::SynStream {
                        stream_id, headers, ..
                    } => {
                        if out.send(framer.syn_reply(stream_id)).await.is_err() {
                            break 'connection;
                        }
                        let request = spdy::header(&headers, "requestid").unwrap_or("").to_string();
                        let pair = pairs.entry(request.clone()).or_default();
                        match spdy::header(&headers, "streamtype") {
                            Some("error") => pair.error = Some(stream_id),
                            Some("data") => pair.data = Some(stream_id),
                            _ => {
                                let _ = out.send(spdy::rst_stream(stream_id, spdy::CANCEL)).await;
                                continue;
                            }
                        }
                        pair.port = spdy::header(&headers, "port").and_then(|p| p.parse().ok());
                        if let (Some(error), Some(data)) = (pair.error, pair.data) {
                            let port = pair.port.unwrap_or(0);
                            pairs.remove(&request);
                            let (input, input_rx) = mpsc::channel(16);
                            let (cancel, cancelled) = oneshot::channel();
                            forwardings.insert(
                                data,
                                Forwarding {
                                    input: Some(input),
                                    cancel: Some(cancel),
                                },
                            );
                            tasks.spawn(self.forward(port, error, data, input_rx, cancelled, out.clone()));
                        }
                    }
                    spdy::Frame::Data { stream_id, fin, data } => {
                        let Some(f) = forwardings.get_mut(&stream_id) else {
                            continue;
                        };
                        let Some(input) = &f.input else {
                            continue;
                        };
                        let mut messages = Vec::new();
                        if !data.is_empty() {
                            messages.push(port_forward_input::Input::Data(data.to_vec()));
                        }
                        if fin {
                            messages.push(port_forward_input::Input::Eof(true));
                        }
                        for m in messages {
                            let _ = input.send(Ok(kv1::PortForwardInput { input: Some(m) })).await;
                        }
                        if fin {
                            f.input = None;
                        }
                    }
                    spdy::Frame::RstStream { stream_id } => {
                        if let Some(mut f) = forwardings.remove(&stream_id) {
                            if let Some(cancel) = f.cancel.take() {
                                let _ = cancel.send(());
                            }
                        }
                    }
                    spdy::Frame::Ping { id } => {
                        if out.send(spdy::ping(id)).await.is_err() {
                            break 'connection;
                        }
                    }
                    spdy::Frame::GoAway => break 'connection,
                    spdy::Frame::Ignored => {}
                }
            }
        }
        // the client is gone: every forwarded connection ends with it
        drop(forwardings);
        tasks.abort_all();
        drop(out);
        let _ = writer.await;
    }

    /// One forwarded connection: its bytes both ways, then the end of both
    /// streams; a failure is written on the error stream, as kubectl
    /// expects it (and prints it).
    fn forward(
        &self,
        port: i32,
        error: u32,
        data: u32,
        input: mpsc::Receiver<Result<kv1::PortForwardInput, Status>>,
        mut cancelled: oneshot::Receiver<()>,
        out: Frames,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let api = ApiService {
            state: self.api.state.clone(),
        };
        let pod = self.pod.clone();
        let start = kv1::PortForwardInput {
            input: Some(port_forward_input::Input::Start(kv1::PortForwardStart {
                namespace: self.namespace.clone(),
                pod: self.pod.clone(),
                port,
            })),
        };
        let caller = self.caller.clone();
        async move {
            let first = futures::stream::once(async move { Ok(start) });
            let req = caller.grpc(first.chain(ReceiverStream::new(input)).boxed());
            let copy = async {
                let mut from_pod = api.port_forward_stream(req).await?;
                while let Some(chunk) = from_pod.next().await {
                    let chunk = chunk?;
                    if out.send(spdy::data(data, &chunk.data, false)).await.is_err() {
                        break;
                    }
                }
                Ok::<(), Status>(())
            };
            let result = tokio::select! {
                r = copy => Some(r),
                _ = &mut cancelled => None,
            };
            if let Some(Err(s)) = &result {
                let message = format!("error forwarding port {port} to pod {pod}: {}", s.message());
                let _ = out.send(spdy::data(error, message.as_bytes(), false)).await;
            }
            if result.is_some() {
                let _ = out.send(spdy::data(data, b"", true)).await;
            }
            let _ = out.send(spdy::data(error, b"", true)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V5: ExecOptions = ExecOptions {
        v5: true,
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
        attach: false,
    };

    #[test]
    fn channels_become_exec_input() {
        assert_eq!(
            exec_input(b"\x00hi\n", V5),
            Some(exec_input::Input::Stdin(b"hi\n".to_vec()))
        );
        let mut resize = vec![RESIZE];
        resize.extend_from_slice(br#"{"Width":120,"Height":40}"#);
        assert_eq!(
            exec_input(&resize, V5),
            Some(exec_input::Input::Resize(kv1::TerminalSize {
                width: 120,
                height: 40
            }))
        );
        assert_eq!(
            exec_input(&[CLOSE, STDIN], V5),
            Some(exec_input::Input::StdinEof(true))
        );
        // v4 has no close channel; stdin not asked for is dropped
        let v4 = ExecOptions { v5: false, ..V5 };
        assert_eq!(exec_input(&[CLOSE, STDIN], v4), None);
        let no_stdin = ExecOptions { stdin: false, ..V5 };
        assert_eq!(exec_input(b"\x00hi", no_stdin), None);
        assert_eq!(exec_input(b"", V5), None);
        assert_eq!(exec_input(&[RESIZE, b'{'], V5), None, "a bad resize is ignored");
    }

    #[test]
    fn exit_codes_are_statuses_kubectl_understands() {
        assert_eq!(exit_status(&[], 0), json!({"metadata": {}, "status": "Success"}));
        let s = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        let f = failure(&Status::failed_precondition("container \"c\" is not running"));
        assert_eq!(f["status"], "Failure");
        assert!(f["message"].as_str().unwrap().contains("not running"), "{f}");
    }

    #[test]
    fn output_is_framed_by_channel() {
        let Message::Binary(b) = channel_message(STDERR, b"oops") else {
            panic!("binary");
        };
        assert_eq!(&b[..], b"\x02oops");
    }
}
