//! `rkubectl port-forward POD [LOCAL:]REMOTE...`: listens on local ports and
//! carries each connection to a port of the pod, through the apiserver and
//! the pod's kubelet, which connects to 127.0.0.1:REMOTE inside the pod (as
//! `kubectl port-forward` does). Runs until interrupted.

use crate::cmd::logs::resolve_pod;
use crate::cmd::Context;
use crate::error::CtlError;
use futures::StreamExt;
use rkube_api::kubelet::v1::{port_forward_input::Input, PortForwardInput, PortForwardStart};
use std::io::Write;
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct PortForwardArgs {
    /// The pod (`web-1` or `pod/web-1`).
    pub pod: String,
    /// Ports: `LOCAL:REMOTE`, `PORT` (the same number on both ends) or
    /// `:REMOTE` (a free local port, printed).
    #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
    pub ports: Vec<String>,
    /// The local address to listen on.
    #[arg(long = "address", default_value = "127.0.0.1")]
    pub address: IpAddr,
}

/// `(local, remote)` from `LOCAL:REMOTE`, `PORT` or `:REMOTE`; local 0
/// means any free port.
pub fn parse_ports(spec: &str) -> Result<(u16, u16), CtlError> {
    let port = |s: &str, zero_ok: bool| -> Result<u16, CtlError> {
        match s.parse::<u16>() {
            Ok(p) if p > 0 || zero_ok => Ok(p),
            _ => Err(CtlError::usage(format!(
                "port-forward: {spec:?} is not [LOCAL:]REMOTE with ports 1-65535 (e.g. 8080:80, 80 or :80)"
            ))),
        }
    };
    match spec.split_once(':') {
        None => {
            let p = port(spec, false)?;
            Ok((p, p))
        }
        Some(("", remote)) => Ok((0, port(remote, false)?)),
        Some((local, remote)) => Ok((port(local, false)?, port(remote, false)?)),
    }
}

pub async fn run(ctx: &Context, args: &PortForwardArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let server = ctx.connect().await?;
    let pod = resolve_pod(ctx, &args.pod).await?;
    let mut listeners = Vec::new();
    for spec in &args.ports {
        let (local, remote) = parse_ports(spec)?;
        let listener = tokio::net::TcpListener::bind((args.address, local))
            .await
            .map_err(|e| CtlError::usage(format!("cannot listen on {}:{local}: {e}", args.address)))?;
        let bound = listener.local_addr()?;
        writeln!(out, "Forwarding from {bound} -> {remote}")?;
        listeners.push((listener, remote));
    }
    out.flush()?;
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        let forward = Forward {
            client: server.client().clone(),
            namespace: ctx.namespace.clone(),
            pod: pod.clone(),
            remote,
        };
        tasks.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((conn, _)) => {
                        let forward = forward.clone();
                        tokio::spawn(async move { forward.connection(conn).await });
                    }
                    Err(e) => return e,
                }
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(Ok(e)) = tasks.join_next() => Err(CtlError::usage(format!("accepting connections: {e}"))),
    }
}

#[derive(Clone)]
struct Forward {
    client: rkube_client::Client,
    namespace: String,
    pod: String,
    remote: u16,
}

impl Forward {
    /// One local connection, both ways; a failure is printed and ends only
    /// this connection, as kubectl's does.
    async fn connection(self, conn: tokio::net::TcpStream) {
        let _ = conn.set_nodelay(true);
        let (mut read, mut write) = conn.into_split();
        let (tx, rx) = tokio::sync::mpsc::channel::<PortForwardInput>(16);
        let start = PortForwardInput {
            input: Some(Input::Start(PortForwardStart {
                namespace: self.namespace.clone(),
                pod: self.pod.clone(),
                port: i32::from(self.remote),
            })),
        };
        if tx.send(start).await.is_err() {
            return;
        }
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let input = match read.read(&mut buf).await {
                    Ok(0) | Err(_) => Input::Eof(true),
                    Ok(n) => Input::Data(buf[..n].to_vec()),
                };
                let eof = matches!(input, Input::Eof(_));
                if tx.send(PortForwardInput { input: Some(input) }).await.is_err() || eof {
                    return;
                }
            }
        });
        let input = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut from_pod = match self.client.port_forward(input).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error forwarding port {} to pod {}: {e}", self.remote, self.pod);
                return;
            }
        };
        while let Some(chunk) = from_pod.next().await {
            let written = match chunk {
                Ok(data) => write.write_all(&data).await,
                Err(e) => {
                    eprintln!("error forwarding port {} to pod {}: {e}", self.remote, self.pod);
                    break;
                }
            };
            if written.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_as_kubectl_reads_them() {
        assert_eq!(parse_ports("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_ports("80").unwrap(), (80, 80));
        assert_eq!(parse_ports(":80").unwrap(), (0, 80));
        for bad in ["", "x", "80:", "0", "1:0", "70000", "a:80"] {
            let e = parse_ports(bad).unwrap_err().to_string();
            assert!(e.contains("[LOCAL:]REMOTE"), "{bad:?}: {e}");
        }
    }
}
