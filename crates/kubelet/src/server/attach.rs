//! Attach (`kubectl attach`): a container's main process's stdout and stderr from the
//! moment of attaching until it exits or the caller goes away.
//!
//! The process writes straight to its log file (through `rkubelet log-driver`, CRI records
//! tagged `stdout` or `stderr`), so attaching follows that file from its current end and
//! splits the records by their stream; what was written before is `kubectl logs`'s. When
//! the attempt stops running, the rest of the file is sent, then its exit code.
//!
//! With `stdin` asked for (`kubectl attach -i`), the caller's input goes to the process's
//! stdin, which the runtime keeps open for a container with `stdin: true`; with
//! `stdinOnce` it is closed when this session's input ends, as Kubernetes' runtimes do
//! (except on a terminal, where the end of input is the user's Ctrl-D). Terminal resizes
//! go to the container's terminal (`tty: true`).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rkube_api::kubelet::v1::{exec_input, exec_output, ExecInput, ExecOutput, ExecStart};
use rkube_node_runtime::logs::{records, Format};
use rkube_node_runtime::runtime::{ContainerId, ContainerState, ContainerStdin};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{read_from, BoxStream, KubeletService};
use crate::volumes::PodDirs;

/// How often a quiet log's container is checked for having exited.
const EXIT_CHECK: Duration = Duration::from_millis(300);

impl KubeletService {
    pub(super) async fn attach(
        &self,
        start: &ExecStart,
        input: Streaming<ExecInput>,
    ) -> Result<BoxStream<ExecOutput>, Status> {
        let pod = self.pod(&start.namespace, &start.pod).await?;
        let name = Self::container_name(&pod, &start.container)?;
        let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
        let (attempt, id) = match self.latest(&uid, &name).await? {
            Some((attempt, id, ContainerState::Running)) => (attempt, id),
            _ => {
                return Err(Status::failed_precondition(format!(
                    "container {name:?} in pod {:?} is not running, so there is nothing to attach to; \
                     `kubectl logs {}` shows what it wrote",
                    start.pod, start.pod
                )))
            }
        };
        let path = PodDirs::new(&self.root_dir, &uid).log(&name, attempt);
        // The format from the file's first line: the current end may be mid-record.
        let mut follower = Follower {
            format: Format::detect(&read_from(&path, 0)),
            carry: Vec::new(),
            offset: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let container = spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .find(|c| c.name == name);
        let (stdin_once, tty) = container.map_or((false, false), |c| (c.stdin_once, c.tty));
        if start.tty && !tty {
            return Err(Status::failed_precondition(format!(
                "container {name:?} in pod {:?} has no terminal (its `tty` is false): attach without -t, \
                 or set `tty: true` and `stdin: true` on it in the pod spec",
                start.pod
            )));
        }
        let stdin = match start.stdin {
            true => Some(self.runtime.open_stdin(&id).await.map_err(|e| {
                Status::failed_precondition(format!(
                    "cannot attach to the stdin of container {name:?} in pod {:?}: {}",
                    start.pod,
                    crate::error_report(&e)
                ))
            })?),
            false => None,
        };
        // Runs until the caller's stream ends (it went away or the call finished).
        tokio::spawn(forward_input(self.clone(), id, input, stdin, stdin_once && !tty));
        let (tx, rx) = mpsc::channel::<Result<ExecOutput, Status>>(16);
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_check = Instant::now();
            loop {
                let chunk = read_from(&path, follower.offset);
                if !chunk.is_empty() {
                    for out in follower.push(&chunk, false) {
                        if tx.send(Ok(out)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                if tx.is_closed() {
                    return;
                }
                if last_check.elapsed() >= EXIT_CHECK {
                    last_check = Instant::now();
                    let code = match me.latest(&uid, &name).await {
                        Ok(Some((a, _, ContainerState::Running))) if a == attempt => None,
                        Ok(Some((a, _, ContainerState::Exited { exit_code, .. }))) if a == attempt => {
                            Some(exit_code)
                        }
                        // replaced by a newer attempt, or gone
                        _ => Some(-1),
                    };
                    if let Some(code) = code {
                        // The logger (or the shim) may still flush the last bytes.
                        tokio::time::sleep(EXIT_CHECK).await;
                        let rest = read_from(&path, follower.offset);
                        let mut last = follower.push(&rest, true);
                        last.push(ExecOutput {
                            output: Some(exec_output::Output::ExitCode(code)),
                        });
                        for out in last {
                            if tx.send(Ok(out)).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }
}

/// Moves the caller's input to the container until the caller goes away: stdin bytes to
/// its stdin (when attached to it), terminal sizes to its terminal. With `close_at_end`
/// (`stdinOnce` without a terminal) the container's stdin is closed when the input ends.
async fn forward_input(
    kubelet: KubeletService,
    id: ContainerId,
    mut input: Streaming<ExecInput>,
    mut stdin: Option<ContainerStdin>,
    close_at_end: bool,
) {
    let attached = stdin.is_some();
    while let Some(Ok(message)) = input.next().await {
        match message.input {
            Some(exec_input::Input::Stdin(data)) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data).await.is_err() {
                        // the process no longer reads: drop the rest
                        stdin = None;
                    }
                }
            }
            Some(exec_input::Input::StdinEof(_)) => {
                stdin = None;
                if close_at_end {
                    let _ = kubelet.runtime.close_stdin(&id).await;
                }
            }
            Some(exec_input::Input::Resize(size)) => {
                let _ = kubelet.runtime.resize_tty(&id, size.width, size.height).await;
            }
            Some(exec_input::Input::Start(_)) | None => {}
        }
    }
    // The caller went away; with stdinOnce that ends the container's stdin too.
    if attached && close_at_end {
        drop(stdin);
        let _ = kubelet.runtime.close_stdin(&id).await;
    }
}

/// A log file followed from some offset: the bytes read but not yet sent (a record being
/// written) and the file's format once known.
struct Follower {
    format: Option<Format>,
    carry: Vec<u8>,
    offset: u64,
}

impl Follower {
    /// The output in the complete records read so far (everything when `at_end`), with
    /// `data` just read; consecutive records of one stream become one message.
    fn push(&mut self, data: &[u8], at_end: bool) -> Vec<ExecOutput> {
        self.offset += data.len() as u64;
        self.carry.extend_from_slice(data);
        if self.format.is_none() {
            self.format = Format::detect(&self.carry).or(at_end.then_some(Format::Raw));
        }
        let Some(format) = self.format else {
            return Vec::new();
        };
        let (recs, used) = records(&self.carry, format);
        let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
        for r in recs {
            let stderr = r.stream == "stderr";
            if out.last().is_none_or(|(e, _)| *e != stderr) {
                out.push((stderr, Vec::new()));
            }
            if let Some((_, bytes)) = out.last_mut() {
                bytes.extend_from_slice(r.content);
                if !r.partial {
                    bytes.push(b'\n');
                }
            }
        }
        self.carry.drain(..used);
        out.into_iter()
            .map(|(stderr, d)| ExecOutput {
                output: Some(if stderr {
                    exec_output::Output::Stderr(d)
                } else {
                    exec_output::Output::Stdout(d)
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_node_runtime::logs::format_record;
    use std::time::SystemTime;

    fn output(o: &ExecOutput) -> (&'static str, String) {
        match o.output.as_ref().unwrap() {
            exec_output::Output::Stdout(d) => ("stdout", String::from_utf8_lossy(d).into()),
            exec_output::Output::Stderr(d) => ("stderr", String::from_utf8_lossy(d).into()),
            exec_output::Output::ExitCode(c) => ("exit", c.to_string()),
        }
    }

    #[test]
    fn records_are_split_by_stream_and_joined_within_one() {
        let now = SystemTime::now();
        let mut file = Vec::new();
        file.extend(format_record(now, "stdout", false, b"one"));
        file.extend(format_record(now, "stdout", true, b"tw"));
        file.extend(format_record(now, "stdout", false, b"o"));
        file.extend(format_record(now, "stderr", false, b"oops"));
        let next = format_record(now, "stdout", false, b"three");
        let mut f = Follower {
            format: Format::detect(&file),
            carry: Vec::new(),
            offset: 0,
        };
        // the next record is half written: it waits for its newline
        file.extend_from_slice(&next[..10]);
        let got: Vec<_> = f.push(&file, false).iter().map(output).collect();
        assert_eq!(
            got,
            vec![
                ("stdout", "one\ntwo\n".to_string()),
                ("stderr", "oops\n".to_string())
            ]
        );
        let got: Vec<_> = f.push(&next[10..], false).iter().map(output).collect();
        assert_eq!(got, vec![("stdout", "three\n".to_string())]);
        assert_eq!(f.offset, (file.len() + next.len() - 10) as u64);
    }

    #[test]
    fn a_raw_file_is_stdout() {
        let mut f = Follower {
            format: None,
            carry: Vec::new(),
            offset: 0,
        };
        assert!(
            f.push(b"no newline", false).is_empty(),
            "undecided until a line ends"
        );
        let got: Vec<_> = f.push(b" yet", true).iter().map(output).collect();
        assert_eq!(got, vec![("stdout", "no newline yet".to_string())]);
    }
}
