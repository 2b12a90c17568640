//! The calls rkubectl makes to the apiserver, on objects whose kind is
//! known only at run time, over rkube-client's dynamic API.
//!
//! This module is the only place that knows rkube-client: it turns its
//! errors into kubectl's wording (`CtlError`), walks list pages, and
//! tracks the revision a watch has reached so it can resume.

use crate::error::CtlError;
use futures::stream::BoxStream;
use futures::StreamExt;
use rkube_api::rpc;
use rkube_api::{DynObject, ResourceInfo};
use rkube_client::{Client, DeleteParams, ListParams, PropagationPolicy, WatchParams};

/// A page size that keeps each response small without many round trips.
const LIST_PAGE: u32 = 500;

/// A connection to one apiserver.
#[derive(Clone)]
pub struct ApiServer {
    client: Client,
    url: String,
}

/// What a list returned: the objects and the revision to watch from.
#[derive(Debug, Default)]
pub struct ObjectList {
    pub items: Vec<DynObject>,
    pub resource_version: String,
}

/// One change seen by a watch.
#[derive(Debug)]
pub struct WatchEvent {
    /// ADDED, MODIFIED or DELETED, as kubectl prints them.
    pub kind: &'static str,
    pub object: DynObject,
}

/// How to delete: `--cascade` and `--grace-period`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Background, Foreground or Orphan; empty for the server's default.
    pub propagation_policy: String,
    pub grace_period_seconds: Option<i32>,
}

/// kubectl's wording for every client error.
pub(crate) fn ctl_error(e: rkube_client::Error, url: &str) -> CtlError {
    match e {
        rkube_client::Error::Api {
            code,
            reason,
            message,
            ..
        } => CtlError::Server {
            reason,
            code,
            message,
        },
        rkube_client::Error::Transport { message, .. } => CtlError::Connect {
            url: url.to_string(),
            detail: message,
        },
        other => CtlError::Usage(other.to_string()),
    }
}

impl ApiServer {
    /// A handle on the apiserver at `url` through `client`. The connection
    /// is made by the first call, whose failure says the server cannot be
    /// reached.
    pub fn new(client: Client, url: &str) -> Self {
        ApiServer {
            client,
            url: url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The typed client, for calls without a wrapper here (logs, exec, top).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn err(&self, e: rkube_client::Error) -> CtlError {
        ctl_error(e, &self.url)
    }

    pub async fn create(&self, obj: &DynObject) -> Result<DynObject, CtlError> {
        self.client
            .create_dyn(obj, &obj.namespace)
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn get(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Result<DynObject, CtlError> {
        self.client
            .get_dyn(info, namespace_for(info, namespace), name)
            .await
            .map_err(|e| self.err(e))
    }

    /// Lists every object (all pages); an empty namespace lists all.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<ObjectList, CtlError> {
        let mut out = ObjectList::default();
        let mut params = ListParams::default()
            .labels(label_selector)
            .fields(field_selector)
            .limit(LIST_PAGE);
        loop {
            let page = self
                .client
                .list_dyn(info, namespace_for(info, namespace), &params)
                .await
                .map_err(|e| self.err(e))?;
            out.items.extend(page.items);
            if out.resource_version.is_empty() {
                // the first page fixes the snapshot every later page comes from
                out.resource_version = page.resource_version;
            }
            if page.continue_token.is_empty() {
                return Ok(out);
            }
            params.continue_token = page.continue_token;
        }
    }

    pub async fn update(&self, obj: &DynObject) -> Result<DynObject, CtlError> {
        self.client.update_dyn(obj).await.map_err(|e| self.err(e))
    }

    /// Sends an RFC 7386 JSON merge patch.
    pub async fn merge_patch(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<DynObject, CtlError> {
        self.client
            .patch_dyn(info, namespace_for(info, namespace), name, patch)
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn delete(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(), CtlError> {
        let propagation_policy = match opts.propagation_policy.as_str() {
            "Background" => Some(PropagationPolicy::Background),
            "Foreground" => Some(PropagationPolicy::Foreground),
            "Orphan" => Some(PropagationPolicy::Orphan),
            _ => None,
        };
        let params = DeleteParams {
            propagation_policy,
            grace_period_seconds: opts.grace_period_seconds,
            ..Default::default()
        };
        self.client
            .delete_dyn(info, namespace_for(info, namespace), name, &params)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Watches changes after `resource_version` (or, when empty, every
    /// existing object as ADDED and then changes).
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
        resource_version: &str,
    ) -> Result<Watch, CtlError> {
        let params = WatchParams {
            label_selector: label_selector.to_string(),
            field_selector: field_selector.to_string(),
            resource_version: resource_version.to_string(),
            allow_bookmarks: true,
        };
        let stream = self
            .client
            .watch_dyn(info, namespace_for(info, namespace), &params)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Watch {
            stream,
            url: self.url.clone(),
            resource_version: resource_version.to_string(),
        })
    }

    pub async fn discovery(&self) -> Result<Vec<rpc::ApiResource>, CtlError> {
        self.client.discovery().await.map_err(|e| self.err(e))
    }

    pub async fn version(&self) -> Result<rpc::VersionResponse, CtlError> {
        self.client.version().await.map_err(|e| self.err(e))
    }
}

/// A running watch.
pub struct Watch {
    stream: BoxStream<'static, rkube_client::Result<rkube_client::WatchEvent<DynObject>>>,
    url: String,
    /// The last revision seen, to resume from.
    pub resource_version: String,
}

impl Watch {
    /// The next change, or None when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, CtlError> {
        use rkube_client::WatchEvent as E;
        loop {
            let Some(item) = self.stream.next().await else {
                return Ok(None);
            };
            let (kind, object) = match item.map_err(|e| ctl_error(e, &self.url))? {
                E::Bookmark(rv) => {
                    if !rv.is_empty() {
                        self.resource_version = rv;
                    }
                    continue;
                }
                E::Added(o) => ("ADDED", o),
                E::Modified(o) => ("MODIFIED", o),
                E::Deleted(o) => ("DELETED", o),
            };
            let rv = crate::objects::metadata(&object).resource_version;
            if !rv.is_empty() {
                self.resource_version = rv;
            }
            return Ok(Some(WatchEvent { kind, object }));
        }
    }
}

/// Cluster-scoped kinds never carry a namespace, whatever `-n` says.
fn namespace_for<'a>(info: &ResourceInfo, namespace: &'a str) -> &'a str {
    if info.namespaced {
        namespace
    } else {
        ""
    }
}
