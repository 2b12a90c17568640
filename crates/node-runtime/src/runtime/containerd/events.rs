//! Task exits from containerd's event stream, turned into [`RuntimeEvent`]s.

use std::time::Duration;

use containerd_client::events::TaskExit;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::SubscribeRequest;
use prost::Message as _;

use super::ContainerdRuntime;
use crate::runtime::{labels, ContainerId, RuntimeEvent};

impl ContainerdRuntime {
    /// Feeds `tx` with the exits of containers in rkube's namespace from containerd's event
    /// stream until `tx` is closed. Each (re)subscription is followed by a
    /// [`RuntimeEvent::Resync`], as exits during the gap were not seen.
    pub(super) async fn forward_exits(&self, tx: tokio::sync::mpsc::Sender<RuntimeEvent>) {
        let filter = format!(
            "topic==\"/tasks/exit\",namespace=={}",
            self.inner.config.namespace
        );
        let mut first = true;
        loop {
            let subscribed = EventsClient::new(self.channel())
                .subscribe(self.unbounded_request(SubscribeRequest {
                    filters: vec![filter.clone()],
                }))
                .await;
            match subscribed {
                Ok(stream) => {
                    if !first && tx.send(RuntimeEvent::Resync).await.is_err() {
                        return;
                    }
                    first = false;
                    let mut stream = stream.into_inner();
                    loop {
                        tokio::select! {
                            _ = tx.closed() => return,
                            message = stream.message() => match message {
                                Ok(Some(envelope)) => {
                                    let Some(exit) = envelope
                                        .event
                                        .and_then(|any| TaskExit::decode(any.value.as_slice()).ok())
                                    else {
                                        continue;
                                    };
                                    // Exec'd processes report their own exits (id = exec id).
                                    if exit.id != exit.container_id {
                                        continue;
                                    }
                                    let container = ContainerId(exit.container_id);
                                    let pod_uid = match self.get_container(&container).await {
                                        Ok(c) => c.labels.get(labels::POD_UID).cloned(),
                                        Err(_) => None,
                                    };
                                    if tx.send(RuntimeEvent::Exited { container, pod_uid }).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => break,
                                Err(status) => {
                                    tracing::debug!("containerd event stream: {status}");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(status) => {
                    let error = self.status_error("subscribe to task exits", "events", status);
                    tracing::debug!("{error}");
                    first = false;
                }
            }
            // containerd restarting: try again shortly; the pod workers' resync covers
            // the gap.
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
