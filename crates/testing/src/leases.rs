//! Watching a leader-election Lease from a test: who holds it, and when that changes.

use crate::eventually;
use rkube_api::coordination::v1::Lease;
use rkube_client::{Api, Client};
use std::time::Duration;

/// The Lease `namespace/name` as the apiserver has it.
pub struct LeaseProbe {
    api: Api<Lease>,
    name: String,
}

impl LeaseProbe {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        LeaseProbe {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    /// The holder's identity and the Lease's renewTime ("" for either when there is no
    /// Lease or no holder).
    pub async fn holder(&self) -> anyhow::Result<(String, String)> {
        let lease = self.api.get_opt(&self.name).await?;
        let spec = lease.and_then(|l| l.spec).unwrap_or_default();
        Ok((spec.holder_identity, spec.renew_time))
    }

    /// Waits until someone other than `previous` (and not nobody) holds the Lease;
    /// returns the new holder.
    pub async fn new_holder(&self, previous: &str, timeout: Duration) -> anyhow::Result<String> {
        eventually(
            &format!("a holder of Lease {} other than {previous:?}", self.name),
            timeout,
            || async {
                let (holder, _) = self.holder().await?;
                anyhow::ensure!(!holder.is_empty() && holder != previous, "held by {holder:?}");
                Ok(Some(holder))
            },
        )
        .await
    }

    /// Waits until `holder` has renewed the Lease `times` more times, and checks that
    /// nobody else took it meanwhile: a leader that keeps its Lease while standbys run.
    pub async fn renewed_by(&self, holder: &str, times: usize, timeout: Duration) -> anyhow::Result<()> {
        let mut seen = self.holder().await?.1;
        for _ in 0..times {
            seen = eventually(
                &format!("{holder} to renew Lease {}", self.name),
                timeout,
                || async {
                    let (now, renewed) = self.holder().await?;
                    anyhow::ensure!(
                        now == holder,
                        "Lease {} taken by {now:?} from {holder:?}",
                        self.name
                    );
                    Ok((renewed != seen).then_some(renewed))
                },
            )
            .await?;
        }
        Ok(())
    }
}
