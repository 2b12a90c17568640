//! Processes run inside running containers. One IO type, [`ExecIo`], serves both the
//! interactive session (`rkubectl exec -it`) and the one-shot exec (probes, `rkubectl exec`
//! with input given up front), which is a session fed all its input at once and collected
//! to the end.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, ResizePtyRequest, StartRequest,
};
use containerd_client::types::v1::Status as ProcessStatus;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{random_hex, ContainerdRuntime, KILL_WAIT, PROCESS_TYPE_URL};
use crate::runtime::{ContainerId, Error, ExecChunk, ExecOutput, ExecRequest, ExecSession, ExecSessionInput};

/// How long to wait for exec output after the process is gone.
const FIFO_DRAIN: Duration = Duration::from_secs(10);

/// The fifos of one exec'd process in its own directory, and the threads that move bytes
/// through them: stdin from a channel, stdout and stderr (one stream on a terminal) into
/// `ExecChunk`s.
struct ExecIo {
    dir: PathBuf,
    stdin: PathBuf,
    stdout: PathBuf,
    /// `None` on a terminal: the shim sends everything to stdout.
    stderr: Option<PathBuf>,
    /// A read-write "keeper" on each output fifo keeps the pipe alive from creation on: the
    /// shim's writes are buffered even before a reader thread gets to open it, and the
    /// readers see end-of-file only once the keepers are dropped after the process is gone.
    keepers: Vec<File>,
    readers: Vec<JoinHandle<()>>,
    /// Bytes for stdin go to a blocking writer as they arrive; it opens the fifo once the
    /// shim has (opening blocks until then).
    stdin_data: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
}

impl ExecIo {
    /// Makes the fifos in `dir` and starts the threads; output goes to `output`.
    async fn create(dir: PathBuf, tty: bool, output: mpsc::Sender<ExecChunk>) -> Result<Self, Error> {
        let io_error = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error("creating exec io directory", &dir))?;
        // From here on, dropping `io` on an error cleans up (see `Drop`).
        let mut io = ExecIo {
            stdin: dir.join("stdin"),
            stdout: dir.join("stdout"),
            stderr: (!tty).then(|| dir.join("stderr")),
            dir,
            keepers: Vec::new(),
            readers: Vec::new(),
            stdin_data: None,
            writer: None,
        };
        for fifo in [Some(&io.stdin), Some(&io.stdout), io.stderr.as_ref()]
            .into_iter()
            .flatten()
        {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io_error("creating exec fifo", fifo)(e.into()))?;
        }
        let outputs: Vec<(PathBuf, bool)> = std::iter::once((io.stdout.clone(), false))
            .chain(io.stderr.clone().map(|p| (p, true)))
            .collect();
        for (path, _) in &outputs {
            let keeper = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_error("opening exec fifo", path))?;
            io.keepers.push(keeper);
        }
        for (path, is_stderr) in outputs {
            let tx = output.clone();
            io.readers.push(tokio::task::spawn_blocking(move || {
                use std::io::Read as _;
                let Ok(mut fifo) = File::open(&path) else {
                    return;
                };
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = fifo.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let data = buf[..n].to_vec();
                    let chunk = if is_stderr {
                        ExecChunk::Stderr(data)
                    } else {
                        ExecChunk::Stdout(data)
                    };
                    if tx.blocking_send(chunk).is_err() {
                        return;
                    }
                }
            }));
        }
        let (data_tx, data_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let path = io.stdin.clone();
        io.writer = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&path) else {
                return;
            };
            while let Ok(data) = data_rx.recv() {
                // A process that exits without reading its stdin breaks the pipe: fine.
                if fifo.write_all(&data).is_err() {
                    return;
                }
            }
        }));
        io.stdin_data = Some(data_tx);
        Ok(io)
    }

    fn path_string(path: Option<&PathBuf>) -> String {
        path.map(|p| p.display().to_string()).unwrap_or_default()
    }

    fn send_stdin(&self, data: Vec<u8>) {
        if let Some(tx) = &self.stdin_data {
            let _ = tx.send(data);
        }
    }

    /// Ends the input: everything sent is written before this returns (or the process
    /// stopped reading). Returns whether the input was still open.
    async fn finish_stdin(&mut self) -> bool {
        if self.stdin_data.take().is_none() {
            return false;
        }
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(FIFO_DRAIN, writer).await;
        }
        true
    }

    /// After the process is gone (and deleted, so the shim closed its ends): frees a writer
    /// still waiting to open stdin, lets the readers reach end-of-file and waits for them,
    /// and removes the directory.
    async fn close(mut self) {
        self.stdin_data = None;
        release_fifo(&self.stdin);
        self.keepers.clear();
        for reader in std::mem::take(&mut self.readers) {
            let _ = tokio::time::timeout(FIFO_DRAIN, reader).await;
        }
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(FIFO_DRAIN, writer).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
    }
}

impl Drop for ExecIo {
    /// An `ExecIo` dropped without `close` (set-up failed half way) must not leave a blocked
    /// writer thread or the directory behind; after `close` this finds nothing left to do.
    fn drop(&mut self) {
        self.stdin_data = None;
        release_fifo(&self.stdin);
        self.keepers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unblocks a writer stuck opening the stdin fifo at `path` (the shim never opened it,
/// e.g. because the process failed to start) by opening and closing a reader without
/// blocking; the writer's write then fails harmlessly. No effect when it is past its open.
fn release_fifo(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

impl ContainerdRuntime {
    /// The OCI process of an exec into running container `id`: it inherits the container's
    /// user, env, cwd and capabilities, and runs `command`.
    async fn exec_process(&self, id: &ContainerId, command: &[String]) -> Result<serde_json::Value, Error> {
        let container = self.get_container(id).await?;
        match self.get_task(id).await? {
            Some(p) if p.status == ProcessStatus::Running as i32 => {}
            _ => {
                return Err(Error::NotRunning {
                    id: id.clone(),
                    what: "exec",
                })
            }
        }
        let container_spec: serde_json::Value = container
            .spec
            .as_ref()
            .map(|any| serde_json::from_slice(&any.value))
            .transpose()
            .map_err(|source| Error::BadSpec {
                id: id.clone(),
                source,
            })?
            .unwrap_or_default();
        let mut process = container_spec
            .get("process")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}}));
        process["args"] = serde_json::json!(command);
        Ok(process)
    }

    /// See [`ContainerRuntime::exec`](crate::runtime::ContainerRuntime::exec): a session
    /// given all of `request.stdin` and then the end of input, read to the end. A timeout
    /// drops the session's output, which kills the process.
    pub(super) async fn exec_once(
        &self,
        id: &ContainerId,
        request: &ExecRequest,
    ) -> Result<ExecOutput, Error> {
        let ExecSession {
            input,
            mut output,
            exit,
        } = self.exec_session(id, &request.command, false).await?;
        if let Some(data) = &request.stdin {
            let _ = input.send(ExecSessionInput::Stdin(data.clone())).await;
        }
        let _ = input.send(ExecSessionInput::StdinEof).await;
        let collect = async move {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(chunk) = output.recv().await {
                match chunk {
                    ExecChunk::Stdout(data) => stdout.extend_from_slice(&data),
                    ExecChunk::Stderr(data) => stderr.extend_from_slice(&data),
                }
            }
            (stdout, stderr)
        };
        let (stdout, stderr) = match request.timeout {
            None => collect.await,
            Some(limit) => match tokio::time::timeout(limit, collect).await {
                Ok(streams) => streams,
                Err(_) => {
                    // The output is dropped: the session kills the process and cleans up.
                    let _ = tokio::time::timeout(KILL_WAIT + FIFO_DRAIN, exit).await;
                    return Err(Error::ExecTimeout {
                        id: id.clone(),
                        command: request.command.clone(),
                        timeout: limit,
                    });
                }
            },
        };
        let exit_code = exit.await.unwrap_or_else(|_| {
            Err(Error::Io {
                what: "waiting for exec",
                path: PathBuf::new(),
                source: std::io::Error::other("the exec session ended without an exit code"),
            })
        })?;
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// See [`ContainerRuntime::exec_interactive`](crate::runtime::ContainerRuntime::exec_interactive).
    /// The shim makes the pty for a tty process; rkube only moves bytes between fifos and
    /// channels.
    pub(super) async fn exec_session(
        &self,
        id: &ContainerId,
        command: &[String],
        tty: bool,
    ) -> Result<ExecSession, Error> {
        if command.is_empty() {
            return Err(Error::InvalidConfig {
                container: id.0.clone(),
                field: "exec command",
                reason: "it is empty".to_string(),
            });
        }
        let mut process = self.exec_process(id, command).await?;
        process["terminal"] = serde_json::json!(tty);
        if tty {
            // As containerd's CRI does: programs need TERM to drive a terminal.
            let env = process["env"].as_array().cloned().unwrap_or_default();
            if !env
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
            {
                let mut env = env;
                env.push(serde_json::json!("TERM=xterm"));
                process["env"] = serde_json::json!(env);
            }
        }
        let process_json = serde_json::to_vec(&process).map_err(|source| Error::BadSpec {
            id: id.clone(),
            source,
        })?;
        let exec_id = format!("exec-{}", random_hex(8));
        let dir = self
            .inner
            .config
            .state_dir
            .join("exec")
            .join(format!("{id}-{exec_id}"));
        let (out_tx, out_rx) = mpsc::channel::<ExecChunk>(64);
        let mut io = ExecIo::create(dir, tty, out_tx.clone()).await?;
        let started = async {
            self.tasks()
                .exec(self.request(ExecProcessRequest {
                    container_id: id.0.clone(),
                    stdin: ExecIo::path_string(Some(&io.stdin)),
                    stdout: ExecIo::path_string(Some(&io.stdout)),
                    stderr: ExecIo::path_string(io.stderr.as_ref()),
                    terminal: tty,
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_TYPE_URL.to_string(),
                        value: process_json,
                    }),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| self.status_error("exec", id.as_str(), s))?;
            self.tasks()
                .start(self.request(StartRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| self.status_error("start exec", id.as_str(), s))?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = started {
            let _ = self
                .tasks()
                .delete_process(self.request(DeleteProcessRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await;
            io.close().await;
            return Err(e);
        }

        let (in_tx, mut in_rx) = mpsc::channel::<ExecSessionInput>(64);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut input_open = true;
            let mut killed = false;
            let wait = me.wait(&id, &exec_id, None);
            tokio::pin!(wait);
            let exit = loop {
                tokio::select! {
                    result = &mut wait => break result,
                    // The user went away: an interactive shell would otherwise run forever.
                    _ = out_tx.closed(), if !killed => {
                        killed = true;
                        let _ = me.kill(&id, &exec_id, libc::SIGKILL, false).await;
                    }
                    message = in_rx.recv(), if input_open => match message {
                        Some(ExecSessionInput::Stdin(data)) => io.send_stdin(data),
                        Some(ExecSessionInput::Resize { width, height }) if tty => {
                            let _ = me
                                .tasks()
                                .resize_pty(me.request(ResizePtyRequest {
                                    container_id: id.0.clone(),
                                    exec_id: exec_id.clone(),
                                    width,
                                    height,
                                }))
                                .await;
                        }
                        Some(ExecSessionInput::Resize { .. }) => {}
                        // On a terminal, the end of the user's input is Ctrl-D, as if
                        // typed: closing the shim's stdin would hang up the terminal
                        // before the process read what was sent.
                        Some(ExecSessionInput::StdinEof) | None if tty => {
                            input_open = false;
                            io.send_stdin(vec![0x04]);
                        }
                        Some(ExecSessionInput::StdinEof) | None => {
                            input_open = false;
                            if io.finish_stdin().await {
                                // The shim holds its own writer on the stdin fifo: the
                                // process sees end-of-file only after CloseIO.
                                let _ = me
                                    .tasks()
                                    .close_io(me.request(CloseIoRequest {
                                        container_id: id.0.clone(),
                                        exec_id: exec_id.clone(),
                                        stdin: true,
                                    }))
                                    .await;
                            }
                        }
                    },
                }
            };
            // Deleting the process makes the shim finish copying and close its fifo ends.
            let _ = me
                .tasks()
                .delete_process(me.request(DeleteProcessRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await;
            drop(out_tx);
            io.close().await;
            let code = exit.map(|w| w.map(|w| w.exit_status as i32).unwrap_or(-1));
            let _ = exit_tx.send(code);
        });
        Ok(ExecSession {
            input: in_tx,
            output: out_rx,
            exit: exit_rx,
        })
    }
}
