//! The gRPC service: resolves which kind a call is about and hands it to
//! the generic handler for that kind.

use crate::admission::Notes;
use crate::authn::UserInfo;
use crate::authz::{Attributes, RBAC_GROUP};
use crate::custom::objects as custom;
use crate::error::{ApiError, ApiResult};
use crate::handlers;
use crate::managed_fields::Writer;
use crate::State;
use futures::future::BoxFuture;
use prost_types::Any;
use rkube_api::kubelet::v1 as kv1;
use rkube_api::rpc::{self, api_server_server::ApiServer};
use rkube_api::{visit_kind, KindVisitor, Resource, ResourceInfo, KINDS};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The gRPC response metadata carrying admission's warnings, one entry each
/// (the REST face turns them into `Warning: 299 - "..."` headers).
pub const WARNING_METADATA: &str = "warning";

pub struct ApiService {
    pub state: Arc<State>,
}

/// The kind a call names: a built-in one, or one a CustomResourceDefinition
/// added (in its storage version, as gRPC calls name no version).
fn resolve(state: &State, id: Option<&rpc::ResourceId>) -> ApiResult<&'static ResourceInfo> {
    let id = id.ok_or_else(|| {
        ApiError::bad_request("the request does not say which resource (group and plural name)")
    })?;
    let custom = || state.custom.find(&id.group, &id.resource, None).map(|k| k.info);
    ResourceInfo::by_group_resource(&id.group, &id.resource)
        .or_else(custom)
        .ok_or_else(|| {
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

/// Any kind's metadata: every kind carries it as field 3, so the name and
/// namespace of an object inside an `Any` can be read without knowing its
/// type (for authorization and audit).
#[derive(Clone, PartialEq, prost::Message)]
struct MetadataOnly {
    #[prost(message, optional, tag = "3")]
    metadata: Option<rkube_api::meta::v1::ObjectMeta>,
}

fn object_meta(any: Option<&Any>) -> (String, String) {
    any.and_then(|a| <MetadataOnly as prost::Message>::decode(a.value.as_slice()).ok())
        .and_then(|m| m.metadata)
        .map(|m| (m.namespace, m.name))
        .unwrap_or_default()
}

fn attrs(verb: &str, info: &ResourceInfo, namespace: &str, name: &str) -> Attributes {
    let namespace = if info.namespaced { namespace } else { "" };
    Attributes::new(verb, info.group, info.plural, namespace, name)
}

/// The namespace a create or update will write to, as the handlers decide
/// it (the request's, else the object's, else `default`), so that what is
/// authorized is where the object lands. A mismatch is refused by the
/// handler; the request's namespace is checked until then.
fn write_namespace(request: &str, object: &str) -> String {
    match (request, object) {
        ("", "") => "default".into(),
        ("", o) => o.into(),
        (r, _) => r.into(),
    }
}

impl ApiService {
    /// Authenticates the caller of `req` (before anything else is looked at).
    pub(crate) fn authenticate<T>(&self, req: &Request<T>) -> Result<UserInfo, Status> {
        self.state.authn.authenticate(req)
    }

    /// Authorizes `attrs` for the caller; a refusal (401 or 403) of a
    /// mutating request is audited.
    pub(crate) fn admit(
        &self,
        user: Result<UserInfo, Status>,
        attrs: &Attributes,
    ) -> Result<UserInfo, Status> {
        let result = user.and_then(|u| match self.state.authz.authorize(&u, attrs) {
            Ok(()) => Ok(u),
            Err(e) => {
                tracing::debug!(user = %u.name, "{}", e.message);
                self.audit(&u, attrs, tonic::Code::PermissionDenied);
                Err(e.into())
            }
        });
        if let Err(s) = &result {
            if s.code() == tonic::Code::Unauthenticated {
                self.audit(&UserInfo::anonymous(), attrs, s.code());
            }
        }
        result
    }

    /// pods/exec and pods/attach, for both faces: authorized as `create` on
    /// `pods/exec` (`pods/attach` when the start asks to attach), as
    /// Kubernetes does whatever the HTTP verb, once the first message names
    /// the pod, then proxied to the pod's kubelet.
    pub(crate) async fn exec_stream<S>(&self, req: Request<S>) -> Result<crate::proxy::ExecStream, Status>
    where
        S: futures::Stream<Item = Result<kv1::ExecInput, Status>> + Send + Unpin + 'static,
    {
        let user = self.authenticate(&req);
        let admit = |start: &kv1::ExecStart| -> Result<(), Status> {
            let subresource = if start.attach { "attach" } else { "exec" };
            let a = Attributes::new("create", "", "pods", &start.namespace, &start.pod)
                .with_subresource(subresource);
            self.admit(user, &a).map(|_| ())
        };
        crate::proxy::exec(&self.state, req.into_inner(), admit).await
    }

    /// pods/portforward, for both faces: one connection to a pod's port,
    /// authorized as `create` on `pods/portforward`.
    pub(crate) async fn port_forward_stream<S>(
        &self,
        req: Request<S>,
    ) -> Result<crate::proxy::PortForwardStream, Status>
    where
        S: futures::Stream<Item = Result<kv1::PortForwardInput, Status>> + Send + Unpin + 'static,
    {
        let user = self.authenticate(&req);
        let admit = |start: &kv1::PortForwardStart| -> Result<(), Status> {
            let a = Attributes::new("create", "", "pods", &start.namespace, &start.pod)
                .with_subresource("portforward");
            self.admit(user, &a).map(|_| ())
        };
        crate::proxy::port_forward(&self.state, req.into_inner(), admit).await
    }

    /// Whether the caller of `req` may open a `pods/SUBRESOURCE` stream
    /// (`create`, as Kubernetes authorizes exec, attach and portforward)
    /// and the pod runs on a node: the REST face asks before it upgrades
    /// the connection, so a refusal is an ordinary HTTP answer.
    pub(crate) fn check_pod_stream<T>(
        &self,
        req: &Request<T>,
        namespace: &str,
        pod: &str,
        subresource: &str,
    ) -> Result<(), Status> {
        let user = self.authenticate(req);
        let a = Attributes::new("create", "", "pods", namespace, pod).with_subresource(subresource);
        self.admit(user, &a)?;
        crate::proxy::check_pod_reachable(&self.state, namespace, pod)
    }

    /// NodeRestriction admission of a node's write, after `admit`
    /// (nothing for other callers); a refusal is audited.
    fn admit_node_write(&self, user: &UserInfo, attrs: &Attributes, object_name: &str) -> Result<(), Status> {
        self.state
            .authz
            .admit_node_write(user, attrs, object_name)
            .map_err(|e| {
                tracing::debug!(user = %user.name, "{}", e.message);
                self.audit(user, attrs, tonic::Code::PermissionDenied);
                e.into()
            })
    }

    fn audit(&self, user: &UserInfo, attrs: &Attributes, code: tonic::Code) {
        self.audit_annotated(user, attrs, code, &Default::default());
    }

    fn audit_annotated(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        code: tonic::Code,
        annotations: &std::collections::BTreeMap<String, String>,
    ) {
        if let Some(log) = &self.state.audit {
            if crate::audit::audited(attrs) {
                log.record(user, attrs, code, annotations);
            }
        }
    }

    /// Audits a certificate call with its outcome and answers it.
    fn audited<T>(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = result
            .as_ref()
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code());
        self.audit(user, attrs, code);
        result.map(Response::new)
    }

    /// After a mutating call: audits it and, for RBAC kinds, drops the
    /// authorizer's snapshot so the change applies to the next request.
    fn finish<T>(&self, user: &UserInfo, attrs: &Attributes, result: ApiResult<T>) -> Result<T, Status> {
        self.finish_noted(user, attrs, result, &Notes::default())
    }

    fn finish_noted<T>(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        result: ApiResult<T>,
        notes: &Notes,
    ) -> Result<T, Status> {
        if attrs.group == RBAC_GROUP && result.is_ok() {
            self.state.authz.invalidate();
        }
        let result = result.map_err(Status::from);
        let code = result
            .as_ref()
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code());
        self.audit_annotated(user, attrs, code, &notes.audit_annotations);
        result
    }

    /// A write that admission may note on: audited with admission's
    /// annotations, answered with its warnings.
    fn finish_write(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        (result, notes): (ApiResult<Any>, Notes),
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let mut resp = object(self.finish_noted(user, attrs, result, &notes)?);
        for w in &notes.warnings {
            match tonic::metadata::MetadataValue::try_from(w.as_str()) {
                Ok(v) => {
                    resp.metadata_mut().append(WARNING_METADATA, v);
                }
                Err(_) => tracing::debug!("a warning that is not ASCII is not sent: {w}"),
            }
        }
        Ok(resp)
    }
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
        let user = self.authenticate(&req);
        let writer = Writer::of(&req);
        let mut req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        let (obj_ns, obj_name) = object_meta(req.object.as_ref());
        let a = attrs("create", info, &write_namespace(&req.namespace, &obj_ns), "");
        let user = self.admit(user, &a)?;
        self.admit_node_write(&user, &a, &obj_name)?;
        if info.kind == "CertificateSigningRequest" {
            crate::certificates::stamp_requester(&mut req.object, &user)?;
        }
        let res = match self.state.custom.of(info) {
            Some(kind) => crate::admission::collecting(custom::create(self.state.clone(), kind, req)).await,
            None => crate::admission::collecting(dispatch!(info, self.state.clone(), (req, writer), (rpc::CreateRequest, Writer) => Any, |s, r| handlers::create::<K>(s, r.0, &r.1))).await,
        };
        self.finish_write(&user, &a, res)
    }

    async fn get(&self, req: Request<rpc::GetRequest>) -> Result<Response<rpc::ObjectResponse>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        self.admit(
            user,
            &attrs("get", info, &write_namespace(&req.namespace, ""), &req.name),
        )?;
        let any = match self.state.custom.of(info) {
            Some(kind) => custom::get(self.state.clone(), kind, req).await?,
            None => {
                dispatch!(info, self.state.clone(), req, rpc::GetRequest => Any, |s, r| handlers::get::<K>(s, r))
                    .await?
            }
        };
        Ok(object(any))
    }

    async fn list(&self, req: Request<rpc::ListRequest>) -> Result<Response<rpc::ListResponse>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        self.admit(user, &attrs("list", info, &req.namespace, ""))?;
        let out = match self.state.custom.of(info) {
            Some(kind) => custom::list(self.state.clone(), kind, req).await?,
            None => dispatch!(info, self.state.clone(), req, rpc::ListRequest => rpc::ListResponse, |s, r| handlers::list::<K>(s, r)).await?,
        };
        Ok(Response::new(out))
    }

    async fn update(
        &self,
        req: Request<rpc::UpdateRequest>,
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let user = self.authenticate(&req);
        let writer = Writer::of(&req);
        let req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        let (ns, name) = object_meta(req.object.as_ref());
        let a = attrs("update", info, &write_namespace("", &ns), &name);
        let user = self.admit(user, &a)?;
        self.admit_node_write(&user, &a, &name)?;
        let res = match self.state.custom.of(info) {
            Some(kind) => crate::admission::collecting(custom::update(self.state.clone(), kind, req, false)).await,
            None => crate::admission::collecting(dispatch!(info, self.state.clone(), (req, writer), (rpc::UpdateRequest, Writer) => Any, |s, r| handlers::update::<K>(s, r.0, false, &r.1))).await,
        };
        self.finish_write(&user, &a, res)
    }

    async fn update_status(
        &self,
        req: Request<rpc::UpdateRequest>,
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let user = self.authenticate(&req);
        let writer = Writer::of(&req);
        let req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        let (ns, name) = object_meta(req.object.as_ref());
        let a = attrs("update", info, &write_namespace("", &ns), &name).with_subresource("status");
        let user = self.admit(user, &a)?;
        self.admit_node_write(&user, &a, &name)?;
        if !info.has_status {
            return Err(ApiError::bad_request(format!(
                "{} have no status subresource; use Update",
                info.plural
            ))
            .into());
        }
        let res = match self.state.custom.of(info) {
            Some(kind) => crate::admission::collecting(custom::update(self.state.clone(), kind, req, true)).await,
            None => crate::admission::collecting(dispatch!(info, self.state.clone(), (req, writer), (rpc::UpdateRequest, Writer) => Any, |s, r| handlers::update::<K>(s, r.0, true, &r.1))).await,
        };
        self.finish_write(&user, &a, res)
    }

    async fn patch(&self, req: Request<rpc::PatchRequest>) -> Result<Response<rpc::ObjectResponse>, Status> {
        let user = self.authenticate(&req);
        let writer = Writer::of(&req);
        let req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        let a = attrs("patch", info, &write_namespace(&req.namespace, ""), &req.name)
            .with_subresource(&req.subresource);
        let user = self.admit(user, &a)?;
        self.admit_node_write(&user, &a, &req.name)?;
        let res = match self.state.custom.of(info) {
            Some(kind) => {
                crate::admission::collecting(custom::patch(self.state.clone(), kind, req, &writer)).await
            }
            None => crate::admission::collecting(dispatch!(info, self.state.clone(), (req, writer), (rpc::PatchRequest, Writer) => Any, |s, r| handlers::patch::<K>(s, r.0, &r.1))).await,
        };
        self.finish_write(&user, &a, res)
    }

    async fn delete(
        &self,
        req: Request<rpc::DeleteRequest>,
    ) -> Result<Response<rpc::ObjectResponse>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        let a = attrs("delete", info, &write_namespace(&req.namespace, ""), &req.name);
        let user = self.admit(user, &a)?;
        self.admit_node_write(&user, &a, &req.name)?;
        let res = match self.state.custom.of(info) {
            Some(kind) => custom::delete(self.state.clone(), kind, req).await,
            None => dispatch!(info, self.state.clone(), req, rpc::DeleteRequest => Any, |s, r| handlers::delete::<K>(s, r)).await,
        };
        Ok(object(self.finish(&user, &a, res)?))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<rpc::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        let info = resolve(&self.state, req.resource.as_ref())?;
        self.admit(user, &attrs("watch", info, &req.namespace, ""))?;
        let (tx, rx) = mpsc::channel(256);
        match self.state.custom.of(info) {
            Some(kind) => custom::watch(self.state.clone(), kind, req, tx).await?,
            None => dispatch!(info, self.state.clone(), (req, tx), (rpc::WatchRequest, handlers::WatchSender) => (), |s, r| handlers::watch::<K>(s, r.0, r.1)).await?,
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn bind(&self, req: Request<rpc::BindRequest>) -> Result<Response<rpc::ObjectResponse>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        let a = Attributes::new("create", "", "pods", &req.namespace, &req.name).with_subresource("binding");
        let user = self.admit(user, &a)?;
        let res = handlers::bind(self.state.clone(), req).await;
        Ok(object(self.finish(&user, &a, res)?))
    }

    async fn evict(&self, req: Request<rpc::EvictRequest>) -> Result<Response<rpc::EvictResponse>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        let namespace = write_namespace(&req.namespace, "");
        let a = Attributes::new("create", "", "pods", &namespace, &req.name).with_subresource("eviction");
        let user = self.admit(user, &a)?;
        let res = crate::eviction::evict(self.state.clone(), req).await;
        self.finish(&user, &a, res)?;
        Ok(Response::new(rpc::EvictResponse {}))
    }

    type LogsStream = crate::proxy::LogStream;

    async fn logs(
        &self,
        req: Request<rkube_api::kubelet::v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        self.admit(
            user,
            &Attributes::new("get", "", "pods", &req.namespace, &req.pod).with_subresource("log"),
        )?;
        Ok(Response::new(crate::proxy::logs(&self.state, req).await?))
    }

    type ExecStream = crate::proxy::ExecStream;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<kv1::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Ok(Response::new(self.exec_stream(req).await?))
    }

    type PortForwardStream = crate::proxy::PortForwardStream;

    async fn port_forward(
        &self,
        req: Request<tonic::Streaming<kv1::PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        Ok(Response::new(self.port_forward_stream(req).await?))
    }

    async fn metrics(
        &self,
        req: Request<rpc::MetricsRequest>,
    ) -> Result<Response<rpc::MetricsResponse>, Status> {
        let user = self.authenticate(&req);
        let req = req.into_inner();
        // Metrics come from the kubelets through the apiserver's proxy.
        let user = self.admit(
            user,
            &Attributes::new("get", "", "pods", &req.namespace, "").with_subresource("proxy"),
        )?;
        if req.nodes {
            self.admit(
                Ok(user),
                &Attributes::new("get", "", "nodes", "", "").with_subresource("proxy"),
            )?;
        }
        Ok(Response::new(crate::proxy::metrics(&self.state, req).await?))
    }

    async fn discovery(
        &self,
        req: Request<rpc::DiscoveryRequest>,
    ) -> Result<Response<rpc::DiscoveryResponse>, Status> {
        // Any authenticated user may discover (system:discovery).
        self.authenticate(&req)?;
        let custom = self.state.custom.all();
        let served = custom.iter().filter(|k| k.served).map(|k| k.info);
        let resources = KINDS
            .iter()
            .chain(served)
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

    async fn access_review(
        &self,
        req: Request<rpc::AccessReviewRequest>,
    ) -> Result<Response<rpc::AccessReviewResponse>, Status> {
        let caller = self.authenticate(&req)?;
        let req = req.into_inner();
        let subject = if req.user.is_empty() && req.groups.is_empty() {
            caller
        } else {
            // Impersonation, as Kubernetes: `impersonate` on users/NAME and
            // groups/NAME.
            let mut wanted = vec![Attributes::new("impersonate", "", "users", "", &req.user)];
            wanted.extend(
                req.groups
                    .iter()
                    .map(|g| Attributes::new("impersonate", "", "groups", "", g)),
            );
            for a in wanted.iter().filter(|a| !a.name.is_empty()) {
                self.state.authz.authorize(&caller, a)?;
            }
            let mut groups = req.groups.clone();
            groups.push(crate::authn::AUTHENTICATED_GROUP.into());
            UserInfo {
                name: if req.user.is_empty() {
                    caller.name
                } else {
                    req.user.clone()
                },
                uid: String::new(),
                groups,
            }
        };
        let a = Attributes::new(&req.verb, &req.group, &req.resource, &req.namespace, &req.name)
            .with_subresource(&req.subresource);
        let allowed = self.state.authz.allowed(&subject, &a)?;
        Ok(Response::new(rpc::AccessReviewResponse {
            allowed,
            reason: if allowed {
                String::new()
            } else {
                a.forbidden_message(&subject)
            },
            user: subject.name,
        }))
    }

    async fn issue_node_certificate(
        &self,
        req: Request<rpc::IssueNodeCertificateRequest>,
    ) -> Result<Response<rpc::IssueNodeCertificateResponse>, Status> {
        let user = self.authenticate(&req);
        // the token is consumed by the call, so it is kept from the request
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let req = req.into_inner();
        let a = crate::authz::node_client_attributes(&req.node_name);
        let user = self.admit(user, &a)?;
        let result = crate::certificates::issue(
            self.state.node_signer.as_ref(),
            self.state.store.as_ref(),
            &user,
            token.as_deref(),
            &req,
        )
        .await;
        self.audited(&user, &a, result)
    }

    async fn issue_kubelet_serving_certificate(
        &self,
        req: Request<rpc::IssueKubeletServingCertificateRequest>,
    ) -> Result<Response<rpc::IssueKubeletServingCertificateResponse>, Status> {
        // The node-only rule is the authorization: see
        // `certificates::issue_serving`; RBAC cannot widen it.
        let user = match self.authenticate(&req) {
            Ok(u) => u,
            Err(s) => {
                let a = crate::authz::kubelet_serving_attributes("");
                self.audit(&UserInfo::anonymous(), &a, s.code());
                return Err(s);
            }
        };
        let a = crate::authz::kubelet_serving_attributes(&user.name);
        let result =
            crate::certificates::issue_serving(self.state.node_signer.as_ref(), &user, req.get_ref());
        self.audited(&user, &a, result)
    }

    async fn create_token(
        &self,
        req: Request<rpc::CreateTokenRequest>,
    ) -> Result<Response<rpc::CreateTokenResponse>, Status> {
        let user = self.authenticate(&req);
        let mut req = req.into_inner();
        if req.namespace.is_empty() {
            req.namespace = "default".into();
        }
        let a = Attributes::new("create", "", "serviceaccounts", &req.namespace, &req.name)
            .with_subresource("token");
        let user = self.admit(user, &a)?;
        let result = self
            .state
            .authz
            .admit_node_token_request(&user, &a, req.bound_object_ref.as_ref())
            .and_then(|()| match &self.state.token_signer {
                Some(signer) => signer.create_token(self.state.store.as_ref(), &req),
                // UNIMPLEMENTED: kubelets then run pods without a token volume
                None => Err(ApiError {
                    code: tonic::Code::Unimplemented,
                    reason: "MethodNotAllowed",
                    message: "this apiserver does not issue ServiceAccount tokens: start it with --service-account-signing-key-file (or --cert-dir, which creates sa.key)".into(),
                    kind: "ServiceAccount".into(),
                    name: req.name.clone(),
                    causes: Vec::new(),
                }),
            })
            .map_err(Status::from);
        self.audited(&user, &a, result)
    }

    async fn version(
        &self,
        req: Request<rpc::VersionRequest>,
    ) -> Result<Response<rpc::VersionResponse>, Status> {
        self.authenticate(&req)?;
        Ok(Response::new(rpc::VersionResponse {
            git_version: format!("v{}", env!("CARGO_PKG_VERSION")),
            platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }))
    }
}
