//! One module per verb. Each has an `Args` struct (its flags, for clap)
//! and `run(ctx, args, out)`; adding a verb is a module here and a line in
//! `Command`.

pub mod api_resources;
pub mod apply;
pub mod auth;
pub mod autoscale;
pub mod certificate;
pub mod certs;
pub mod cordon;
pub mod create;
pub mod delete;
pub mod describe;
pub mod drain;
pub mod exec;
pub mod expose;
pub mod generate;
pub mod get;
pub mod get_custom;
pub mod kubeconfig;
pub mod label;
pub mod logs;
pub mod patch;
pub mod port_forward;
pub mod rollout;
pub mod run;
pub mod scale;
pub mod service;
pub mod set;
pub mod taint;
pub mod token;
pub mod top;
pub mod version;
pub mod wait;

use crate::error::CtlError;
use crate::manifest::NamespaceChoice;
use crate::server::ApiServer;

/// What every command knows before it starts: where the apiserver is and
/// which namespace the user means.
#[derive(Debug, Clone)]
pub struct Context {
    pub server_url: String,
    pub namespace: String,
    /// Whether `-n` was given (objects from files must then agree).
    pub namespace_explicit: bool,
    /// Credentials and TLS settings of the client config file (token,
    /// certificateAuthority, clientCertificate, clientKey).
    pub credentials: rkube_client::ClientConfig,
}

impl Context {
    pub async fn connect(&self) -> Result<ApiServer, CtlError> {
        Ok(ApiServer::new(self.client()?, &self.server_url))
    }

    /// The typed client: the resolved server and namespace with the config
    /// file's credentials and TLS settings.
    pub fn client(&self) -> Result<rkube_client::Client, CtlError> {
        let config = rkube_client::ClientConfig {
            server: self.server_url.clone(),
            namespace: self.namespace.clone(),
            ..self.credentials.clone()
        };
        rkube_client::Client::from_config(&config)
            .map(|c| c.with_field_manager("rkubectl"))
            .map_err(|e| CtlError::usage(format!("client config {e}")))
    }

    pub fn namespace_choice(&self) -> NamespaceChoice {
        NamespaceChoice {
            namespace: self.namespace.clone(),
            explicit: self.namespace_explicit,
        }
    }
}
