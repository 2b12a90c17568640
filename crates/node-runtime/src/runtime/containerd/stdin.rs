//! The main process's stdin and terminal, for `kubectl attach -i` and `-t`.
//!
//! A container created with `stdin` gets fifos of its own in `STATE_DIR/io/ID/`, the
//! task's stdin among them. The runc shim opens stdin for reading and also keeps a writer
//! of its own, so the process does not read end-of-file when an attach session (a writer
//! that comes and goes) ends, nor when the kubelet restarts; `close_stdin` (containerd's
//! CloseIO) drops the shim's writer, after which the process reads end-of-file once the
//! last session's writer is gone: that is `stdinOnce`.
//!
//! On a terminal the shim feeds stdin to the console and the output still goes to the log
//! driver. Without one, containerd 1.6's shim copies stdin only when the output goes to
//! fifos too (its binary-logger IO has no stdin), so for such a container the output goes
//! to `stdout` and `stderr` fifos and this process copies them into the CRI log, as
//! containerd's CRI plugin does for every container. The shim keeps a reader of its own on
//! them, so output is buffered (64 KiB, then the process waits) while the kubelet restarts;
//! the restarted kubelet takes the copying up again when it lists the containers.

use std::fs::File;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::{CloseIoRequest, ResizePtyRequest};
use tonic::Code;

use super::ContainerdRuntime;
use crate::runtime::{labels, ContainerId, ContainerIo, ContainerStdin, Error};

/// `labels::STDIN`'s values.
const STDIN_OPEN: &str = "open";
const STDIN_ONCE: &str = "once";

/// The labels a container created with `io` carries.
pub(super) fn io_labels(io: &ContainerIo) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if io.stdin {
        let mode = if io.stdin_once { STDIN_ONCE } else { STDIN_OPEN };
        out.push((labels::STDIN, mode.to_string()));
    }
    if io.tty {
        out.push((labels::TTY, "true".to_string()));
    }
    out
}

/// The task's stdio for a container about to start: paths (or the log driver's URI) for
/// containerd, and the handles that keep the output fifos open until the task is running.
pub(super) struct TaskIo {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// Dropped once the task started (or failed to): from then on the copier sees
    /// end-of-file when the shim closes its writers.
    pub keepers: Vec<File>,
}

impl ContainerdRuntime {
    fn io_dir(&self, id: &ContainerId) -> PathBuf {
        self.inner.config.state_dir.join("io").join(&id.0)
    }

    /// The stdio of a container about to start, from the labels it was created with;
    /// `log_uri` is where its output goes when the log driver takes it.
    pub(super) fn task_io(
        &self,
        id: &ContainerId,
        labels: &std::collections::HashMap<String, String>,
        log_uri: &str,
        log_path: &Path,
    ) -> Result<TaskIo, Error> {
        let terminal = labels.contains_key(labels::TTY);
        let mut io = TaskIo {
            stdin: String::new(),
            stdout: log_uri.to_string(),
            stderr: log_uri.to_string(),
            terminal,
            keepers: Vec::new(),
        };
        if !labels.contains_key(labels::STDIN) {
            return Ok(io);
        }
        let dir = self.io_dir(id);
        let io_error = |what, source| Error::Io {
            what,
            path: dir.clone(),
            source,
        };
        // Anew: fifos left from an earlier start would hold nothing but confusion.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing old stdio fifos", e)),
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_error("creating the stdio directory", e))?;
        let names: &[&str] = if terminal {
            &["stdin"]
        } else {
            &["stdin", "stdout", "stderr"]
        };
        for name in names {
            nix::unistd::mkfifo(&dir.join(name), nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io_error("creating a stdio fifo", e.into()))?;
        }
        io.stdin = dir.join("stdin").display().to_string();
        if !terminal {
            io.stdout = dir.join("stdout").display().to_string();
            io.stderr = dir.join("stderr").display().to_string();
            io.keepers = self.copy_output(id, log_path)?;
        }
        Ok(io)
    }

    /// Starts copying the container's output fifos into its log unless this process does
    /// already; returns read-write handles on the fifos that keep the copier from seeing
    /// end-of-file before the shim opened them (drop them once it has).
    fn copy_output(&self, id: &ContainerId, log_path: &Path) -> Result<Vec<File>, Error> {
        if !self
            .inner
            .log_copiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.0.clone())
        {
            return Ok(Vec::new());
        }
        let dir = self.io_dir(id);
        let open = |name: &str, write: bool| {
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(&path)
                .map_err(|source| Error::Io {
                    what: "opening an output fifo",
                    path,
                    source,
                })
        };
        let opened = (|| {
            // The keepers first: with a writer present the readers' opens return at once.
            let keepers = vec![open("stdout", true)?, open("stderr", true)?];
            let pipes = [Some(open("stdout", false)?), Some(open("stderr", false)?)];
            Ok((keepers, pipes))
        })();
        let (keepers, pipes) = match opened {
            Ok(o) => o,
            Err(e) => {
                self.inner
                    .log_copiers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id.0);
                return Err(e);
            }
        };
        let copiers = self.inner.log_copiers.clone();
        let stop = self.inner.stop_copiers.clone();
        let (id, log_path) = (id.0.clone(), log_path.to_path_buf());
        std::thread::spawn(move || {
            crate::log_driver::copy_into_log(pipes, &log_path, Some(stop), || {});
            copiers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
        Ok(keepers)
    }

    /// A restarted kubelet takes the copying of a running container's output up again.
    pub(super) fn adopt_output(&self, id: &ContainerId, labels: &std::collections::HashMap<String, String>) {
        if !labels.contains_key(labels::STDIN) || labels.contains_key(labels::TTY) {
            return;
        }
        let Some(log_path) = labels.get(labels::LOG_PATH) else {
            return;
        };
        match self.copy_output(id, Path::new(log_path)) {
            // dropped at once: the shim's writers are there while the task runs
            Ok(_keepers) => {}
            Err(e) => tracing::warn!(container = %id, "cannot copy its output into its log: {e}"),
        }
    }

    pub(super) fn remove_io_dir(&self, id: &ContainerId) {
        let _ = std::fs::remove_dir_all(self.io_dir(id));
    }

    pub(super) async fn open_stdin_inner(&self, id: &ContainerId) -> Result<ContainerStdin, Error> {
        let container = self.get_container(id).await?;
        let refused = |reason: String| Error::InvalidConfig {
            container: id.0.clone(),
            field: "stdin",
            reason,
        };
        let once = match container.labels.get(labels::STDIN).map(String::as_str) {
            Some(STDIN_OPEN) => false,
            Some(_) => true,
            None => {
                return Err(refused(
                    "the container was created without stdin; set `stdin: true` on it in the pod spec \
                     (and `tty: true` for a terminal) to attach to its input"
                        .to_string(),
                ))
            }
        };
        let path = self.io_dir(id).join("stdin");
        // Non-blocking: fails at once (ENXIO) when nobody reads any more.
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(&path) {
            Ok(sender) => Ok(Box::new(sender)),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && once => Err(refused(
                "its stdin was closed when the first attach session ended (`stdinOnce: true`); \
                 it opens again when the container restarts"
                    .to_string(),
            )),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Err(refused(
                "the container's process no longer reads its stdin".to_string(),
            )),
            Err(source) => Err(Error::Io {
                what: "opening the container's stdin",
                path,
                source,
            }),
        }
    }

    pub(super) async fn close_stdin_inner(&self, id: &ContainerId) -> Result<(), Error> {
        let closed = self
            .tasks()
            .close_io(self.request(CloseIoRequest {
                container_id: id.0.clone(),
                exec_id: String::new(),
                stdin: true,
            }))
            .await;
        match closed {
            Ok(_) => Ok(()),
            // the task is gone: its stdin with it
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.status_error("close stdin", id.as_str(), s)),
        }
    }

    pub(super) async fn resize_tty_inner(
        &self,
        id: &ContainerId,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        self.tasks()
            .resize_pty(self.request(ResizePtyRequest {
                container_id: id.0.clone(),
                exec_id: String::new(),
                width,
                height,
            }))
            .await
            .map(|_| ())
            .map_err(|s| self.status_error("resize terminal", id.as_str(), s))
    }
}
