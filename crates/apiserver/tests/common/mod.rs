//! Test support: the apiserver fixture of rkube-testing, and a thin typed
//! layer over the raw gRPC client so the tests exercise the wire protocol
//! exactly as other-language clients do.
#![allow(dead_code)]

use rkube_api::rpc::{self, api_server_client::ApiServerClient};
use rkube_api::{from_any, to_any, Resource};
use rkube_testing::{TestApiServer, TestApiServerBuilder};
use tonic::transport::Channel;

/// A plain-text apiserver and a raw gRPC client of it.
pub struct Harness {
    pub api: TestApiServer,
    pub client: ApiServerClient<Channel>,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(TestApiServer::builder()).await
    }

    pub async fn start_with(options: TestApiServerBuilder) -> Harness {
        let api = options.start().await.unwrap();
        let client = connect(&api).await;
        Harness { api, client }
    }

    pub async fn stop(self) {
        self.api.stop().await.unwrap();
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.api.restart().await.unwrap();
        self.client = connect(&self.api).await;
    }
}

/// A raw gRPC client of `api`.
pub async fn connect(api: &TestApiServer) -> ApiServerClient<Channel> {
    ApiServerClient::connect(api.url().to_string()).await.unwrap()
}

pub fn rid<K: Resource>() -> Option<rpc::ResourceId> {
    Some(rpc::ResourceId {
        group: K::INFO.group.into(),
        resource: K::INFO.plural.into(),
    })
}

pub fn obj<K: Resource>(r: tonic::Response<rpc::ObjectResponse>) -> K {
    from_any(r.into_inner().object.as_ref().unwrap()).unwrap()
}

pub async fn create<K: Resource>(c: &mut ApiServerClient<Channel>, o: &K) -> Result<K, tonic::Status> {
    let ns = o.namespace().to_string();
    c.create(rpc::CreateRequest {
        resource: rid::<K>(),
        namespace: ns,
        object: Some(to_any(o)),
        dry_run: false,
    })
    .await
    .map(obj)
}

pub async fn get<K: Resource>(
    c: &mut ApiServerClient<Channel>,
    ns: &str,
    name: &str,
) -> Result<K, tonic::Status> {
    c.get(rpc::GetRequest {
        resource: rid::<K>(),
        namespace: ns.into(),
        name: name.into(),
    })
    .await
    .map(obj)
}

pub async fn update<K: Resource>(c: &mut ApiServerClient<Channel>, o: &K) -> Result<K, tonic::Status> {
    c.update(rpc::UpdateRequest {
        resource: rid::<K>(),
        object: Some(to_any(o)),
        dry_run: false,
    })
    .await
    .map(obj)
}

pub async fn update_status<K: Resource>(c: &mut ApiServerClient<Channel>, o: &K) -> Result<K, tonic::Status> {
    c.update_status(rpc::UpdateRequest {
        resource: rid::<K>(),
        object: Some(to_any(o)),
        dry_run: false,
    })
    .await
    .map(obj)
}

pub async fn delete<K: Resource>(
    c: &mut ApiServerClient<Channel>,
    ns: &str,
    name: &str,
    policy: &str,
) -> Result<K, tonic::Status> {
    c.delete(rpc::DeleteRequest {
        resource: rid::<K>(),
        namespace: ns.into(),
        name: name.into(),
        propagation_policy: policy.into(),
        ..Default::default()
    })
    .await
    .map(obj)
}

pub async fn list<K: Resource>(
    c: &mut ApiServerClient<Channel>,
    req: rpc::ListRequest,
) -> Result<(Vec<K>, rpc::ListResponse), tonic::Status> {
    let resp = c
        .list(rpc::ListRequest {
            resource: rid::<K>(),
            ..req
        })
        .await?
        .into_inner();
    let items = resp.items.iter().map(|a| from_any(a).unwrap()).collect();
    Ok((items, resp))
}

pub fn config_map(ns: &str, name: &str, labels: &[(&str, &str)]) -> rkube_api::core::v1::ConfigMap {
    let mut cm = rkube_api::core::v1::ConfigMap::default();
    cm.metadata_mut().name = name.into();
    cm.metadata_mut().namespace = ns.into();
    cm.metadata_mut().labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cm.data.insert("k".into(), "v".into());
    cm
}

pub fn pod(ns: &str, name: &str) -> rkube_api::core::v1::Pod {
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n"
    );
    serde_yaml::from_str(&text).unwrap()
}

/// The Kubernetes reason carried in the status details.
pub fn reason(s: &tonic::Status) -> String {
    use prost::Message;
    rkube_api::meta::v1::Status::decode(s.details())
        .map(|st| st.reason)
        .unwrap_or_default()
}
