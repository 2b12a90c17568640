//! The kubelet's gRPC service (`rkube.kubelet.v1.Kubelet`), called by the apiserver for
//! `rkubectl logs`, `exec`, `top` and `kubectl attach` (see [`attach`]).
//!
//! Logs are read from the CRI-format files `rkubelet log-driver` writes (see [`rkube_node_runtime::logs`]):
//! `timestamps`, `sinceSeconds`/`sinceTime`, `tailLines` (in records), `limitBytes`,
//! `follow` and `previous` behave as in Kubernetes. Files written without the driver hold
//! the raw streams: there `timestamps` and `since*` cannot apply and are ignored.
//!
//! Exec is a streaming session (stdin forwarded as it arrives, output streamed back, then
//! the exit code), with `tty` on a terminal the shim makes (resizes applied). A runtime
//! without streaming exec (the fake) collects stdin until `stdin_eof`, runs the command
//! and sends its output when it finishes.
//!
//! Port-forward connects to 127.0.0.1:PORT inside the pod's network namespace (the host's
//! for hostNetwork pods), as Kubernetes does, and moves bytes both ways.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt as _};
use rkube_api::core::v1::Pod;
use rkube_api::kubelet::v1::{
    exec_input, exec_output, kubelet_server::Kubelet, port_forward_input, ContainerUsage, ExecInput,
    ExecOutput, LogChunk, LogsRequest, MetricsRequest, MetricsResponse, NodeUsage, PodUsage,
    PortForwardInput, PortForwardOutput,
};
use rkube_api::selector::Selector;
use rkube_api::Resource as _;
use rkube_client::Store;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

mod attach;

use crate::volumes::PodDirs;
use rkube_node_runtime::logs::{records, render, Format, LogOptions};
use rkube_node_runtime::network::{netns, PodNetwork};
use rkube_node_runtime::runtime::{
    labels, ContainerId, ContainerRuntime, ContainerState, ExecChunk, ExecRequest, ExecSession,
    ExecSessionInput,
};

/// State the service reads: the pod cache, the runtime and the pod directories.
#[derive(Clone)]
pub struct KubeletService {
    pub node_name: String,
    pub root_dir: std::path::PathBuf,
    pub pods: Store<Pod>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub sampler: Arc<Sampler>,
    /// The node's pod network once it is set up: where each pod's network
    /// namespace is, for port-forward.
    pub network: tokio::sync::watch::Receiver<Option<Arc<dyn PodNetwork>>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl KubeletService {
    async fn pod(&self, namespace: &str, name: &str) -> Result<Arc<Pod>, Status> {
        // Right after a kubelet start the cache may still be listing.
        if tokio::time::timeout(Duration::from_secs(10), self.pods.wait_until_synced())
            .await
            .is_err()
        {
            return Err(Status::unavailable(
                "the kubelet has not finished listing its pods; try again",
            ));
        }
        self.pods.get_namespaced(namespace, name).ok_or_else(|| {
            Status::not_found(format!(
                "pod {namespace}/{name} is not on node {}; check `rkubectl get pod -o wide`",
                self.node_name
            ))
        })
    }

    /// The container the request names, or the pod's only one.
    fn container_name(pod: &Pod, requested: &str) -> Result<String, Status> {
        let spec = pod.spec.clone().unwrap_or_default();
        let names: Vec<String> = spec
            .init_containers
            .iter()
            .chain(spec.containers.iter())
            .map(|c| c.name.clone())
            .collect();
        if requested.is_empty() {
            if spec.containers.len() == 1 {
                return Ok(spec.containers[0].name.clone());
            }
            return Err(Status::invalid_argument(format!(
                "pod {} has several containers; name one of: {}",
                pod.name(),
                names.join(", ")
            )));
        }
        if names.iter().any(|n| n == requested) {
            Ok(requested.to_string())
        } else {
            Err(Status::not_found(format!(
                "container {requested:?} is not in pod {}; its containers: {}",
                pod.name(),
                names.join(", ")
            )))
        }
    }

    /// The latest instance of a container: (attempt, id, state).
    async fn latest(
        &self,
        uid: &str,
        name: &str,
    ) -> Result<Option<(u32, ContainerId, ContainerState)>, Status> {
        let list = self
            .runtime
            .list_containers()
            .await
            .map_err(|e| Status::unavailable(crate::error_report(&e)))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let i = c.identity()?;
                (i.pod_uid == uid && i.container_name == name).then_some((i.restart_attempt, c.id, c.state))
            })
            .max_by_key(|(a, _, _)| *a))
    }
}

/// Attempts that have a log file, newest first.
fn log_attempts(dir: &std::path::Path) -> Vec<u32> {
    let mut attempts: Vec<u32> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    attempts.sort_unstable_by(|a, b| b.cmp(a));
    attempts
}

impl KubeletService {
    /// A streaming session (on a terminal with `tty`): input is forwarded as it arrives,
    /// output streams back, then the exit code. Without `stdin` the process sees the end
    /// of its input at once. A client that goes away kills the process.
    fn stream_session(
        session: ExecSession,
        stdin: bool,
        mut input: Streaming<ExecInput>,
    ) -> Response<BoxStream<ExecOutput>> {
        let ExecSession {
            input: to_process,
            mut output,
            exit,
        } = session;
        tokio::spawn(async move {
            if !stdin {
                let _ = to_process.send(ExecSessionInput::StdinEof).await;
                return;
            }
            while let Some(Ok(message)) = input.next().await {
                let forwarded = match message.input {
                    Some(exec_input::Input::Stdin(data)) => ExecSessionInput::Stdin(data),
                    Some(exec_input::Input::StdinEof(_)) => {
                        let _ = to_process.send(ExecSessionInput::StdinEof).await;
                        return;
                    }
                    Some(exec_input::Input::Resize(size)) => ExecSessionInput::Resize {
                        width: size.width,
                        height: size.height,
                    },
                    _ => continue,
                };
                if to_process.send(forwarded).await.is_err() {
                    return;
                }
            }
            let _ = to_process.send(ExecSessionInput::StdinEof).await;
        });
        let (tx, rx) = mpsc::channel::<Result<ExecOutput, Status>>(64);
        tokio::spawn(async move {
            loop {
                let chunk = tokio::select! {
                    chunk = output.recv() => chunk,
                    // the client went away while the process is quiet:
                    // dropping `output` kills it
                    _ = tx.closed() => return,
                };
                let Some(chunk) = chunk else { break };
                let data = match chunk {
                    ExecChunk::Stdout(d) => exec_output::Output::Stdout(d),
                    ExecChunk::Stderr(d) => exec_output::Output::Stderr(d),
                };
                if tx.send(Ok(ExecOutput { output: Some(data) })).await.is_err() {
                    // Dropping `output` kills the process.
                    return;
                }
            }
            let last = match exit.await {
                Ok(Ok(code)) => Ok(ExecOutput {
                    output: Some(exec_output::Output::ExitCode(code)),
                }),
                Ok(Err(e)) => Err(Status::internal(crate::error_report(&e))),
                Err(_) => Err(Status::internal("the exec session ended without an exit code")),
            };
            let _ = tx.send(last).await;
        });
        Response::new(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }
}

/// since/tail/limit/timestamps of a request, checked.
fn log_options(req: &LogsRequest) -> Result<LogOptions, Status> {
    let since = if req.since_seconds > 0 {
        Some(SystemTime::now() - Duration::from_secs(req.since_seconds as u64))
    } else if !req.since_time.is_empty() {
        let t = chrono::DateTime::parse_from_rfc3339(&req.since_time).map_err(|e| {
            Status::invalid_argument(format!(
                "sinceTime {:?} is not an RFC 3339 time (like 2026-11-28T01:02:03Z): {e}",
                req.since_time
            ))
        })?;
        Some(SystemTime::from(t))
    } else {
        None
    };
    Ok(LogOptions {
        timestamps: req.timestamps,
        since,
        tail: (req.tail_lines > 0).then_some(req.tail_lines as usize),
        limit_bytes: (req.limit_bytes > 0).then_some(req.limit_bytes as usize),
    })
}

/// A log file read so far: the bytes not yet rendered (`carry`, from file `offset` back),
/// its format once known, and the output budget left.
struct LogReader {
    format: Option<Format>,
    /// Whether the output so far ended a line (a time goes before the next one).
    line_start: bool,
    carry: Vec<u8>,
    offset: u64,
    remaining: Option<usize>,
}

impl LogReader {
    /// Renders the complete records in `carry` (everything when `at_end`: the file will not
    /// grow, so an undetermined format is raw), keeping the budget.
    fn take(&mut self, options: &LogOptions, at_end: bool) -> Vec<u8> {
        if self.format.is_none() {
            self.format = Format::detect(&self.carry).or(at_end.then_some(Format::Raw));
        }
        let Some(format) = self.format else {
            return Vec::new();
        };
        let (recs, used) = records(&self.carry, format);
        let mut out = render(&recs, options, &mut self.line_start);
        self.carry.drain(..used);
        if let Some(remaining) = self.remaining.as_mut() {
            out.truncate(*remaining);
            *remaining -= out.len();
        }
        out
    }
}

#[tonic::async_trait]
impl Kubelet for KubeletService {
    type LogsStream = BoxStream<LogChunk>;
    type ExecStream = BoxStream<ExecOutput>;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let pod = self.pod(&req.namespace, &req.pod).await?;
        let name = Self::container_name(&pod, &req.container)?;
        let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
        let dirs = PodDirs::new(&self.root_dir, &uid);
        let attempts = log_attempts(&dirs.logs(&name));
        let attempt = if req.previous {
            *attempts.get(1).ok_or_else(|| {
                Status::not_found(format!(
                    "previous terminated container {name:?} in pod {:?} not found",
                    req.pod
                ))
            })?
        } else {
            *attempts.first().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "container {name:?} in pod {:?} has not started yet; try again when it runs",
                    req.pod
                ))
            })?
        };
        let path = dirs.log(&name, attempt);
        let options = log_options(&req)?;
        let data =
            std::fs::read(&path).map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?;
        let follow = req.follow && !req.previous;
        let mut reader = LogReader {
            format: Format::detect(&data),
            line_start: true,
            carry: data,
            offset: 0,
            remaining: options.limit_bytes,
        };
        reader.offset = reader.carry.len() as u64;
        // Not following: a last line without its newline is all there will be.
        let first = reader.take(&options, !follow);
        let (tx, rx) = mpsc::channel::<Result<LogChunk, Status>>(16);
        let me = self.clone();
        // Only the first read is tailed; what follows is new.
        let options = LogOptions {
            tail: None,
            ..options
        };
        tokio::spawn(async move {
            if !first.is_empty() && tx.send(Ok(LogChunk { data: first })).await.is_err() {
                return;
            }
            if !follow {
                return;
            }
            let mut last_check = std::time::Instant::now();
            while reader.remaining != Some(0) {
                let chunk = read_from(&path, reader.offset);
                if !chunk.is_empty() {
                    reader.offset += chunk.len() as u64;
                    reader.carry.extend_from_slice(&chunk);
                    let out = reader.take(&options, false);
                    if !out.is_empty() && tx.send(Ok(LogChunk { data: out })).await.is_err() {
                        return;
                    }
                    continue;
                }
                if tx.is_closed() {
                    return;
                }
                if last_check.elapsed() >= Duration::from_millis(500) {
                    last_check = std::time::Instant::now();
                    // Done when this attempt is no longer the running one.
                    match me.latest(&uid, &name).await {
                        Ok(Some((a, _, ContainerState::Running))) if a == attempt => {}
                        _ => {
                            // The logger (or the shim) may still flush the last bytes.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            let rest = read_from(&path, reader.offset);
                            reader.carry.extend_from_slice(&rest);
                            let out = reader.take(&options, true);
                            if !out.is_empty() {
                                let _ = tx.send(Ok(LogChunk { data: out })).await;
                            }
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
        ))
    }

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = request.into_inner();
        let start = match input.next().await {
            Some(Ok(ExecInput {
                input: Some(exec_input::Input::Start(start)),
            })) => start,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first exec message must be ExecStart",
                ))
            }
        };
        if start.attach {
            return Ok(Response::new(self.attach(&start, input).await?));
        }
        if start.command.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        let pod = self.pod(&start.namespace, &start.pod).await?;
        let name = Self::container_name(&pod, &start.container)?;
        let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
        let id = match self.latest(&uid, &name).await? {
            Some((_, id, ContainerState::Running)) => id,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "container {name:?} in pod {:?} is not running",
                    start.pod
                )))
            }
        };
        // a streaming session; runtimes without one (the fake) run it once, below
        match self
            .runtime
            .exec_interactive(&id, &start.command, start.tty)
            .await
        {
            Ok(session) => return Ok(Self::stream_session(session, start.stdin, input)),
            Err(e) if start.tty => return Err(Status::failed_precondition(crate::error_report(&e))),
            Err(e) => {
                tracing::debug!(container = %id, "no streaming exec ({}); running it once", crate::error_report(&e));
            }
        }
        let stdin = if start.stdin {
            let mut buf = Vec::new();
            while let Some(msg) = input.next().await {
                match msg?.input {
                    Some(exec_input::Input::Stdin(data)) => buf.extend_from_slice(&data),
                    Some(exec_input::Input::StdinEof(_)) => break,
                    _ => {}
                }
            }
            Some(buf)
        } else {
            None
        };
        let out = self
            .runtime
            .exec(
                &id,
                &ExecRequest {
                    command: start.command.clone(),
                    stdin,
                    timeout: None,
                },
            )
            .await
            .map_err(|e| Status::internal(crate::error_report(&e)))?;
        let mut messages = Vec::new();
        if !out.stdout.is_empty() {
            messages.push(Ok(ExecOutput {
                output: Some(exec_output::Output::Stdout(out.stdout)),
            }));
        }
        if !out.stderr.is_empty() {
            messages.push(Ok(ExecOutput {
                output: Some(exec_output::Output::Stderr(out.stderr)),
            }));
        }
        messages.push(Ok(ExecOutput {
            output: Some(exec_output::Output::ExitCode(out.exit_code)),
        }));
        Ok(Response::new(futures::stream::iter(messages).boxed()))
    }

    type PortForwardStream = BoxStream<PortForwardOutput>;

    async fn port_forward(
        &self,
        request: Request<Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        let mut input = request.into_inner();
        let start = match input.next().await {
            Some(Ok(PortForwardInput {
                input: Some(port_forward_input::Input::Start(start)),
            })) => start,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first port-forward message must be PortForwardStart",
                ))
            }
        };
        let (ns, name) = (&start.namespace, &start.pod);
        let port = u16::try_from(start.port).ok().filter(|p| *p > 0).ok_or_else(|| {
            Status::invalid_argument(format!("port {} is not a TCP port (1-65535)", start.port))
        })?;
        let pod = self.pod(ns, name).await?;
        let host_network = pod.spec.as_ref().is_some_and(|s| s.host_network);
        let netns = if host_network {
            None
        } else {
            let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
            let network = self.network.borrow().clone().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "node {} has no pod network yet, so pod {ns}/{name} has none to forward into",
                    self.node_name
                ))
            })?;
            let path = network.netns_path(&uid);
            if !netns::is_netns(&path) {
                return Err(Status::failed_precondition(format!(
                    "pod {ns}/{name} has no network namespace on node {} (is it running? see `kubectl get pod {name}`)",
                    self.node_name
                )));
            }
            Some(path)
        };
        // 127.0.0.1 inside the pod, as Kubernetes forwards: a server bound to
        // the pod's loopback or to all addresses answers
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let socket = crate::probes::in_pod_netns(netns, move || {
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .await
        .and_then(tokio::net::TcpStream::from_std)
        .map_err(|e| {
            Status::failed_precondition(format!(
                "cannot connect to port {port} of pod {ns}/{name} (127.0.0.1:{port} inside it): {e}"
            ))
        })?;
        let _ = socket.set_nodelay(true);
        let (read, mut write) = socket.into_split();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            while let Some(Ok(message)) = input.next().await {
                let written = match message.input {
                    Some(port_forward_input::Input::Data(d)) => write.write_all(&d).await,
                    Some(port_forward_input::Input::Eof(_)) => break,
                    _ => Ok(()),
                };
                if written.is_err() {
                    return;
                }
            }
            // the caller has no more to send: the pod reads end-of-file
            let _ = write.shutdown().await;
        });
        let output = futures::stream::unfold(Some(read), |read| async move {
            use tokio::io::AsyncReadExt as _;
            let mut read = read?;
            let mut buf = vec![0u8; 32 * 1024];
            match read.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(PortForwardOutput { data: buf }), Some(read)))
                }
                Err(e) => Some((Err(Status::aborted(format!("reading from the pod: {e}"))), None)),
            }
        });
        Ok(Response::new(output.boxed()))
    }

    async fn metrics(&self, request: Request<MetricsRequest>) -> Result<Response<MetricsResponse>, Status> {
        let req = request.into_inner();
        let selector =
            Selector::parse(&req.label_selector).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list()
            .into_iter()
            .filter(|p| req.namespace.is_empty() || p.namespace() == req.namespace)
            .filter(|p| {
                let labels: BTreeMap<String, String> = p
                    .metadata
                    .as_ref()
                    .map(|m| m.labels.clone().into_iter().collect())
                    .unwrap_or_default();
                selector.matches(&labels)
            })
            .collect();
        let usage = self.sampler.usage(self.runtime.as_ref()).await?;
        let mut out = MetricsResponse::default();
        for pod in pods {
            let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
            let containers: Vec<ContainerUsage> = usage
                .containers
                .iter()
                .filter(|c| c.pod_uid == uid)
                .map(|c| ContainerUsage {
                    name: c.name.clone(),
                    cpu_millis: c.cpu_millis,
                    memory_bytes: c.memory_bytes,
                })
                .collect();
            if containers.is_empty() {
                continue;
            }
            out.pods.push(PodUsage {
                namespace: pod.namespace().to_string(),
                name: pod.name().to_string(),
                containers,
                timestamp: usage.timestamp.clone(),
                window_seconds: usage.window_seconds,
            });
        }
        out.node = Some(NodeUsage {
            name: self.node_name.clone(),
            cpu_millis: usage.node_cpu_millis,
            memory_bytes: usage.node_memory_bytes,
            timestamp: usage.timestamp.clone(),
            window_seconds: usage.window_seconds,
        });
        Ok(Response::new(out))
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.take(1 << 20).read_to_end(&mut buf);
        }
    }
    buf
}

/// One container's usage over the last window.
#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub pod_uid: String,
    pub name: String,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub containers: Vec<ContainerSample>,
    pub node_cpu_millis: i64,
    pub node_memory_bytes: i64,
    pub timestamp: String,
    pub window_seconds: i32,
}

/// Raw counters at one moment.
#[derive(Debug, Clone, Default)]
struct Raw {
    at: Option<SystemTime>,
    /// container id → (pod uid, name, cpu nanos, memory bytes)
    containers: HashMap<ContainerId, (String, String, u64, u64)>,
    node_cpu_nanos: u64,
}

/// CPU needs two readings: the sampler keeps the last one (taken every ~10 s by
/// [`Sampler::run`], or on demand).
#[derive(Default)]
pub struct Sampler {
    last: Mutex<Raw>,
}

impl Sampler {
    async fn read(runtime: &dyn ContainerRuntime) -> Result<Raw, Status> {
        let list = runtime
            .running_container_stats()
            .await
            .map_err(|e| Status::unavailable(crate::error_report(&e)))?;
        let mut raw = Raw {
            at: Some(SystemTime::now()),
            node_cpu_nanos: node_cpu_nanos(),
            ..Default::default()
        };
        for (c, s) in list {
            let (Some(uid), Some(name)) = (
                c.labels.get(labels::POD_UID),
                c.labels.get(labels::CONTAINER_NAME),
            ) else {
                continue;
            };
            raw.containers.insert(
                c.id.clone(),
                (
                    uid.clone(),
                    name.clone(),
                    s.cpu_usage_nanos,
                    s.memory_working_set_bytes,
                ),
            );
        }
        Ok(raw)
    }

    /// Takes a sample every `period` until the task is dropped.
    pub async fn run(self: Arc<Self>, runtime: Arc<dyn ContainerRuntime>, period: Duration) {
        loop {
            if let Ok(raw) = Self::read(runtime.as_ref()).await {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = raw;
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Usage between the last sample and now; takes two samples 1 s apart when there is no
    /// usable earlier one.
    pub async fn usage(&self, runtime: &dyn ContainerRuntime) -> Result<Usage, Status> {
        let mut prev = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut now = Self::read(runtime).await?;
        let fresh = |prev: &Raw, now: &Raw| {
            prev.at.is_some_and(|t| {
                now.at
                    .and_then(|n| n.duration_since(t).ok())
                    .is_some_and(|d| d >= Duration::from_millis(500))
            }) && now.containers.keys().all(|k| prev.containers.contains_key(k))
        };
        if !fresh(&prev, &now) {
            prev = now;
            tokio::time::sleep(Duration::from_secs(1)).await;
            now = Self::read(runtime).await?;
        }
        let window = now
            .at
            .zip(prev.at)
            .and_then(|(n, p)| n.duration_since(p).ok())
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1));
        let millis = |delta: u64| (delta as f64 / window.as_nanos() as f64 * 1000.0).round() as i64;
        let mut usage = Usage {
            timestamp: now
                .at
                .map(|t| rkube_api::time::format(t.into()))
                .unwrap_or_default(),
            window_seconds: window.as_secs().max(1) as i32,
            node_cpu_millis: millis(now.node_cpu_nanos.saturating_sub(prev.node_cpu_nanos)),
            node_memory_bytes: node_memory_bytes(),
            containers: Vec::new(),
        };
        for (id, (uid, name, cpu, mem)) in &now.containers {
            let before = prev.containers.get(id).map(|p| p.2).unwrap_or(*cpu);
            usage.containers.push(ContainerSample {
                pod_uid: uid.clone(),
                name: name.clone(),
                cpu_millis: millis(cpu.saturating_sub(before)),
                memory_bytes: *mem as i64,
            });
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(usage)
    }
}

/// Busy CPU time of the whole node from /proc/stat (USER_HZ = 100 on Linux).
fn node_cpu_nanos() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) * 10_000_000
}

fn node_memory_bytes() -> i64 {
    let total = crate::node::meminfo_kib("MemTotal").unwrap_or(0);
    let available = crate::node::meminfo_kib("MemAvailable").unwrap_or(0);
    (total.saturating_sub(available) * 1024) as i64
}
