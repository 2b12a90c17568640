//! An in-memory [`PodNetwork`] for the pod worker's unit tests: hands out addresses from
//! 10.88.0.0/24 in order, remembers them per pod and can be told to fail.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{validate_pod_uid, Error, PodNetwork, PodNetworkConfig, PodNetworkStatus};

#[derive(Default)]
struct State {
    pods: BTreeMap<String, (PodNetworkConfig, PodNetworkStatus)>,
    next_host: u8,
    fail_setup: Option<String>,
    setups: usize,
    teardowns: usize,
}

/// See the module documentation.
#[derive(Default)]
pub struct FakeNetwork {
    state: Mutex<State>,
}

impl FakeNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the next setups fail with `message` (as a plugin error) until cleared with `None`.
    pub fn fail_setup(&self, message: Option<&str>) {
        self.lock().fail_setup = message.map(str::to_string);
    }

    /// Pods with a network, with the config they were set up with.
    pub fn pods(&self) -> BTreeMap<String, PodNetworkConfig> {
        self.lock()
            .pods
            .iter()
            .map(|(uid, (config, _))| (uid.clone(), config.clone()))
            .collect()
    }

    /// How many setups actually created a network, and how many teardowns removed one.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.setups, state.teardowns)
    }
}

#[async_trait]
impl PodNetwork for FakeNetwork {
    async fn setup(&self, pod: &PodNetworkConfig) -> Result<PodNetworkStatus, Error> {
        validate_pod_uid(&pod.pod_uid)?;
        let path = self.netns_path(&pod.pod_uid);
        let mut state = self.lock();
        if let Some((_, status)) = state.pods.get(&pod.pod_uid) {
            return Ok(status.clone());
        }
        if let Some(message) = &state.fail_setup {
            return Err(Error::Plugin {
                plugin: "fake".to_string(),
                command: "ADD",
                pod_uid: pod.pod_uid.clone(),
                code: Some(11),
                message: message.clone(),
            });
        }
        state.next_host = state.next_host.wrapping_add(1).max(2);
        let status = PodNetworkStatus {
            netns_path: path,
            ip: IpAddr::V4(Ipv4Addr::new(10, 88, 0, state.next_host)),
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1))),
            interface: "eth0".to_string(),
        };
        state.setups += 1;
        state
            .pods
            .insert(pod.pod_uid.clone(), (pod.clone(), status.clone()));
        Ok(status)
    }

    async fn status(&self, pod_uid: &str) -> Result<Option<PodNetworkStatus>, Error> {
        validate_pod_uid(pod_uid)?;
        Ok(self.lock().pods.get(pod_uid).map(|(_, s)| s.clone()))
    }

    async fn teardown(&self, pod_uid: &str) -> Result<(), Error> {
        validate_pod_uid(pod_uid)?;
        let mut state = self.lock();
        if state.pods.remove(pod_uid).is_some() {
            state.teardowns += 1;
        }
        Ok(())
    }

    fn netns_path(&self, pod_uid: &str) -> PathBuf {
        PathBuf::from("/run/rkubelet-fake/netns").join(pod_uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn setup_is_idempotent_and_teardown_forgets() {
        let net = FakeNetwork::new();
        let pod = PodNetworkConfig {
            pod_uid: "u1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            port_mappings: vec![],
        };
        let a = net.setup(&pod).await.unwrap();
        let b = net.setup(&pod).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(net.status("u1").await.unwrap(), Some(a));
        net.teardown("u1").await.unwrap();
        net.teardown("u1").await.unwrap();
        assert_eq!(net.status("u1").await.unwrap(), None);
        assert_eq!(net.counts(), (1, 1));
        assert!(net
            .setup(&PodNetworkConfig {
                pod_uid: "../x".into(),
                ..pod.clone()
            })
            .await
            .is_err());
        net.fail_setup(Some("no IP addresses available in range set"));
        let err = net.setup(&pod).await.unwrap_err();
        assert!(err.to_string().contains("no IP addresses"), "{err}");
    }
}
