//! The gRPC service: resolves which kind a call is about and hands it to
//! the generic handler for that kind.

use crate::error::{ApiError, ApiResult};
use crate::handlers;
use crate::State;
use futures::future::BoxFuture;
use prost_types::Any;
use rkube_api::rpc::{self, api_server_server::ApiServer};
use rkube_api::{visit_kind, KindVisitor, Resource, ResourceInfo, KINDS};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct ApiService {
    pub state: Arc<State>,
}

fn resolve(id: Option<&rpc::ResourceId>) -> ApiResult<&'static ResourceInfo> {
    let id = id.ok_or_else(|| {
        ApiError::bad_request("the request does not say which resource (group and plural name)")
    })?;
    ResourceInfo::by_group_resource(&id.group, &id.resource).ok_or_else(|| {
        let name = if id.group.is_empty() {
            id.resource.clone()
        } else {
            format!("{}.{}", id.resource, id.group)
        };
        ApiError::not_found_resource(&name)
    })
}

impl ApiError {
    fn not_found_resource(name: &str) -> ApiError {
        ApiError::bad_request(format!(
            "the server doesn't have a resource type {name:?}; `rkubectl api-resources` lists what it serves"
        ))
    }
}

/// Generates a `KindVisitor` that calls `handlers::$func::<K>(state, req)`.
macro_rules! dispatch {
    ($info:expr, $state:expr, $req:expr, $req_ty:ty => $out:ty, |$s:ident, $r:ident| $call:expr) => {{
        struct Visit(Arc<State>, $req_ty);
        impl KindVisitor for Visit {
            type Output = BoxFuture<'static, ApiResult<$out>>;
            fn visit<K: Resource>(self) -> Self::Output {
                let ($s, $r) = (self.0, self.1);
                Box::pin(async move { $call.await })
            }
        }
        visit_kind($info, Visit($state, $req))
    }};
}

fn object(any: Any) -> Response<rpc::ObjectResponse> {
    Response::new(rpc::ObjectResponse { object: Some(any) })
}

type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<rpc::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ApiServer for ApiService {
    async fn create(
        &self,
        req: Request<rpc::CreateRequest>,
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        let any = dispatch!(info, self.state.clone(), req, rpc::CreateRequest => Any, |s, r| handlers::create::<K>(s, r)).await?;
        Ok(object(any))
    }

    async fn get(&self, req: Request<rpc::GetRequest>) -> Result<Response<rpc::ObjectResponse>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        let any =
            dispatch!(info, self.state.clone(), req, rpc::GetRequest => Any, |s, r| handlers::get::<K>(s, r))
                .await?;
        Ok(object(any))
    }

    async fn list(&self, req: Request<rpc::ListRequest>) -> Result<Response<rpc::ListResponse>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        let out = dispatch!(info, self.state.clone(), req, rpc::ListRequest => rpc::ListResponse, |s, r| handlers::list::<K>(s, r)).await?;
        Ok(Response::new(out))
    }

    async fn update(
        &self,
        req: Request<rpc::UpdateRequest>,
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        let any = dispatch!(info, self.state.clone(), req, rpc::UpdateRequest => Any, |s, r| handlers::update::<K>(s, r, false)).await?;
        Ok(object(any))
    }

    async fn update_status(
        &self,
        req: Request<rpc::UpdateRequest>,
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        if !info.has_status {
            return Err(ApiError::bad_request(format!(
                "{} have no status subresource; use Update",
                info.plural
            ))
            .into());
        }
        let any = dispatch!(info, self.state.clone(), req, rpc::UpdateRequest => Any, |s, r| handlers::update::<K>(s, r, true)).await?;
        Ok(object(any))
    }

    async fn patch(&self, req: Request<rpc::PatchRequest>) -> Result<Response<rpc::ObjectResponse>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        let any = dispatch!(info, self.state.clone(), req, rpc::PatchRequest => Any, |s, r| handlers::patch::<K>(s, r)).await?;
        Ok(object(any))
    }

    async fn delete(
        &self,
        req: Request<rpc::DeleteRequest>,
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        let any = dispatch!(info, self.state.clone(), req, rpc::DeleteRequest => Any, |s, r| handlers::delete::<K>(s, r)).await?;
        Ok(object(any))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<rpc::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let info = resolve(req.resource.as_ref())?;
        let (tx, rx) = mpsc::channel(256);
        dispatch!(info, self.state.clone(), (req, tx), (rpc::WatchRequest, handlers::WatchSender) => (), |s, r| handlers::watch::<K>(s, r.0, r.1)).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn bind(&self, req: Request<rpc::BindRequest>) -> Result<Response<rpc::ObjectResponse>, Status> {
        Ok(object(
            handlers::bind(self.state.clone(), req.into_inner()).await?,
        ))
    }

    type LogsStream = crate::proxy::LogStream;

    async fn logs(
        &self,
        req: Request<rkube_api::kubelet::v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Ok(Response::new(
            crate::proxy::logs(&self.state, req.into_inner()).await?,
        ))
    }

    type ExecStream = crate::proxy::ExecStream;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<rkube_api::kubelet::v1::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Ok(Response::new(
            crate::proxy::exec(&self.state, req.into_inner()).await?,
        ))
    }

    async fn metrics(
        &self,
        req: Request<rpc::MetricsRequest>,
    ) -> Result<Response<rpc::MetricsResponse>, Status> {
        Ok(Response::new(
            crate::proxy::metrics(&self.state, req.into_inner()).await?,
        ))
    }

    async fn discovery(
        &self,
        _req: Request<rpc::DiscoveryRequest>,
    ) -> Result<Response<rpc::DiscoveryResponse>, Status> {
        let resources = KINDS
            .iter()
            .map(|k| rpc::ApiResource {
                group: k.group.into(),
                version: k.version.into(),
                kind: k.kind.into(),
                name: k.plural.into(),
                singular_name: k.singular.into(),
                short_names: k.short_names.iter().map(|s| s.to_string()).collect(),
                namespaced: k.namespaced,
                verbs: ["create", "delete", "get", "list", "patch", "update", "watch"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            })
            .collect();
        Ok(Response::new(rpc::DiscoveryResponse { resources }))
    }

    async fn version(
        &self,
        _req: Request<rpc::VersionRequest>,
    ) -> Result<Response<rpc::VersionResponse>, Status> {
        Ok(Response::new(rpc::VersionResponse {
            git_version: format!("v{}", env!("CARGO_PKG_VERSION")),
            platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }))
    }
}
