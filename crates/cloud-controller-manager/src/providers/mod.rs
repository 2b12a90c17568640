//! The providers this binary knows, by `--cloud-provider` name. A provider
//! for another cloud is one module here and one arm in `build`.

use crate::cloud::CloudProvider;
use crate::Config;
use std::sync::Arc;

pub mod local;

/// Every provider name `--cloud-provider` accepts.
pub const NAMES: &[&str] = &[local::NAME];

/// The provider `config` names, with its cloud-config read and checked.
pub fn build(config: &Config) -> anyhow::Result<Arc<dyn CloudProvider>> {
    match config.cloud_provider.as_str() {
        local::NAME => {
            let Some(path) = &config.cloud_config else {
                anyhow::bail!(
                    "--cloud-provider local needs --cloud-config FILE listing the machines \
                     (see deploy/examples/cloud-config.yaml)"
                );
            };
            Ok(Arc::new(local::LocalCloud::load(path)?))
        }
        other => anyhow::bail!(
            "--cloud-provider {other:?} is not supported: use one of {}",
            NAMES.join(", ")
        ),
    }
}
