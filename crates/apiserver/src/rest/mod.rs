//! The Kubernetes REST face of the apiserver, served beside gRPC on the
//! same port (see [`listener`]). It is a face, not a second apiserver: it
//! routes Kubernetes URLs, converts Kubernetes JSON to and from the wire
//! objects, and calls the very `ApiServer` methods the gRPC face calls, so
//! authentication, RBAC, node restriction, admission, validation, audit,
//! the store and watch are decided once, there. What is REST's own: URL
//! routing, query parameters, `Status` errors ([`status`]), discovery and
//! OpenAPI ([`discovery`]), the patch formats ([`patch`]), the `scale`
//! subresource's `Scale` object, watch events as JSON lines, Table renderings
//! of gets, lists and watches for `kubectl get` ([`table`]), and the
//! WebSocket (and SPDY) framing of exec and port-forward ([`streams`]),
//! and the resource metrics API `kubectl top` reads ([`metrics`]).

pub mod discovery;
mod encoder;
mod field_manager;
pub mod json;
pub mod listener;
mod metadata;
mod metrics;
mod objects;
pub mod openapi;
pub mod patch;
mod protobuf;
pub mod spdy;
pub mod status;
mod streams;
mod table;
pub mod warm;

use crate::error::ApiError;
use crate::service::ApiService;
use crate::State;
use bytes::Bytes;
use http_body_util::BodyExt;
use rkube_api::ResourceInfo;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::body::Body;

/// The REST face: the gRPC service it calls, and its body limit.
pub struct Rest {
    api: ApiService,
    max_body: usize,
}

/// What a URL names.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Root,
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1`, `/apis/GROUP/VERSION`
    Resources {
        group: String,
        version: String,
    },
    OpenApiRoot,
    OpenApiGroupVersion {
        group: String,
        version: String,
    },
    SelfSubjectAccessReview,
    /// `metrics.k8s.io/v1beta1` node and pod metrics (`kubectl top`)
    Metrics(metrics::MetricsTarget),
    Object(Target),
    NotFound,
}

/// A resource URL: a collection, or one object, or its subresource.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    info: &'static ResourceInfo,
    namespace: String,
    name: String,
    subresource: String,
    /// `/watch/` in the path (the legacy form of `?watch=true`).
    watch: bool,
}

/// Percent-decoding of a URL component (`+` is a space in queries).
fn decode_component(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of a request (the last value of a repeated name).
#[derive(Debug, Default, Clone)]
struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode_component(k, true), decode_component(v, true))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), "true" | "1")
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            "" => Ok(None),
            v => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("query parameter {name}={v:?} is not an integer"))
            }),
        }
    }
}

fn route(path: &str, custom: &crate::custom::CustomKinds) -> Route {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode_component(s, false))
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (group, version, rest) = match s.as_slice() {
        [] => return Route::Root,
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz", ..] => return Route::Health,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["openapi", "v3"] => return Route::OpenApiRoot,
        ["openapi", "v3", "api", v] => {
            return Route::OpenApiGroupVersion {
                group: String::new(),
                version: v.to_string(),
            }
        }
        ["openapi", "v3", "apis", g, v] => {
            return Route::OpenApiGroupVersion {
                group: g.to_string(),
                version: v.to_string(),
            }
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return Route::Resources {
            group: group.into(),
            version: version.into(),
        };
    }
    if group == "authorization.k8s.io" && version == "v1" && rest == ["selfsubjectaccessreviews"] {
        return Route::SelfSubjectAccessReview;
    }
    if group == metrics::GROUP && version == metrics::VERSION {
        return metrics::route(rest).map_or(Route::NotFound, Route::Metrics);
    }
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    // namespaces/NS/PLURAL... is inside a namespace; namespaces/NS and
    // namespaces/NS/status|finalize are the Namespace itself
    let (namespace, rest): (String, Vec<&str>) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(tail.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            (ns.to_string(), rest[2..].to_vec())
        }
        _ => (String::new(), rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [p] => (*p, "", ""),
        [p, n] => (*p, *n, ""),
        [p, n, sub] => (*p, *n, *sub),
        _ => return Route::NotFound,
    };
    let info = ResourceInfo::by_group_resource(group, plural)
        .or_else(|| custom.find(group, plural, Some(version)).map(|k| k.info));
    match info {
        Some(info) if info.version == version && (info.namespaced || namespace.is_empty()) => {
            Route::Object(Target {
                info,
                namespace,
                name: name.into(),
                subresource: subresource.into(),
                watch,
            })
        }
        _ => Route::NotFound,
    }
}

/// A JSON answer.
pub(crate) fn json_response(code: u16, body: &Value) -> http::Response<Body> {
    json_bytes_response(code, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON answer already serialized.
pub(crate) fn json_bytes_response(code: u16, bytes: Vec<u8>) -> http::Response<Body> {
    json_body_response(code, listener::full(bytes))
}

/// A JSON answer serialized in parts, sent one after the other.
pub(crate) fn json_parts_response(code: u16, parts: Vec<Bytes>) -> http::Response<Body> {
    json_body_response(code, listener::parts(parts))
}

fn json_body_response(code: u16, body: Body) -> http::Response<Body> {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text_response(code: u16, text: &'static str) -> http::Response<Body> {
    let mut resp = http::Response::new(listener::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// One REST request being served: who sent it (headers and connection
/// info, for the authenticator) and what it asks.
struct Call {
    parts: http::request::Parts,
    query: Query,
}

/// Who sent a request, as the authenticator reads it: the authorization
/// header and the connection's TLS client certificates. Streams keep it to
/// make gRPC calls as the same caller after the request itself is answered.
#[derive(Clone)]
struct Caller {
    authorization: Option<http::HeaderValue>,
    tls: Option<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>,
    tcp: Option<tonic::transport::server::TcpConnectInfo>,
}

impl Caller {
    /// `msg` as a gRPC request from this caller.
    fn grpc<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = http::Request::new(msg);
        if let Some(auth) = &self.authorization {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
        }
        if let Some(tls) = &self.tls {
            req.extensions_mut().insert(tls.clone());
        }
        if let Some(tcp) = &self.tcp {
            req.extensions_mut().insert(tcp.clone());
        }
        tonic::Request::from_http(req)
    }
}

impl Call {
    fn caller(&self) -> Caller {
        Caller {
            authorization: self.parts.headers.get(http::header::AUTHORIZATION).cloned(),
            tls: self.parts.extensions.get().cloned(),
            tcp: self.parts.extensions.get().cloned(),
        }
    }

    /// `msg` as a gRPC request from the same caller: the authorization
    /// header and the connection's TLS client certificates come along.
    fn grpc<T>(&self, msg: T) -> tonic::Request<T> {
        self.caller().grpc(msg)
    }

    /// Every value of a repeated query parameter (`command=sh&command=-c`).
    fn query_all(&self, name: &str) -> Vec<String> {
        self.parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode_component(k, true) == name).then(|| decode_component(v, true))
            })
            .collect()
    }

    fn accept(&self) -> &str {
        self.parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn content_type(&self) -> &str {
        self.parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Rest {
    pub fn new(state: Arc<State>, max_body: usize) -> Rest {
        Rest {
            api: ApiService { state },
            max_body,
        }
    }

    /// Serves one REST request.
    pub async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
        let (mut parts, body) = req.into_parts();
        // exec and port-forward take the connection over (WebSocket, SPDY)
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let call = Call {
            query: Query::parse(parts.uri.query()),
            parts,
        };
        let body = match http_body_util::Limited::new(body, self.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let too_large = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
                let status = if too_large {
                    tonic::Status::resource_exhausted(format!(
                        "the request is too large: the apiserver accepts at most {} bytes per request (--max-request-bytes)",
                        self.max_body
                    ))
                } else {
                    tonic::Status::invalid_argument(format!("cannot read the request body: {e}"))
                };
                let mut resp = status::response(&status, None);
                if too_large {
                    *resp.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                    resp.headers_mut().remove(http::header::RETRY_AFTER);
                }
                return resp;
            }
        };
        // acting as someone else must never silently act as the caller
        if call
            .parts
            .headers
            .keys()
            .any(|h| h.as_str().starts_with("impersonate-"))
        {
            return status::error_response(
                ApiError::bad_request(
                    "impersonation (Impersonate-* headers, kubectl --as) is not supported by rkube's REST API yet; \
                     `rkubectl auth can-i --as USER` answers access questions",
                ),
                None,
            );
        }
        let method = call.parts.method.clone();
        let custom = self.api.state.custom.all();
        match route(call.parts.uri.path(), &self.api.state.custom) {
            Route::Health => text_response(200, "ok"),
            Route::Version => json_response(200, &discovery::version()),
            Route::Root => json_response(200, &discovery::root_paths(&custom)),
            Route::CoreVersions | Route::Groups | Route::Resources { .. } if method != http::Method::GET => {
                method_not_allowed(&method)
            }
            Route::CoreVersions | Route::Groups if discovery::wants_aggregated(call.accept()) => {
                let mut resp = self.discovered(&call, discovery::aggregated(route_is_core(&call), &custom));
                if resp.status().is_success() {
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(discovery::AGGREGATED),
                    );
                }
                resp
            }
            Route::CoreVersions => self.discovered(&call, discovery::core_versions(&call.parts)),
            Route::Groups => self.discovered(&call, discovery::groups(&custom)),
            Route::Resources { group, version } => match discovery::resources(&group, &version, &custom) {
                Some(list) => self.discovered(&call, list),
                None => not_found(),
            },
            Route::OpenApiRoot => self.discovered(&call, discovery::openapi_root(&custom)),
            Route::OpenApiGroupVersion { group, version } => {
                match discovery::openapi_group_version(&group, &version, &custom) {
                    Some(doc) => self.discovered(&call, doc),
                    None => not_found(),
                }
            }
            Route::SelfSubjectAccessReview if method == http::Method::POST => {
                objects::self_subject_access_review(&self.api, &call, &body).await
            }
            Route::SelfSubjectAccessReview => method_not_allowed(&method),
            Route::Metrics(target) => metrics::serve(&self.api, &call, target).await,
            Route::Object(target) if streams::is_stream(&target) => {
                streams::serve(&self.api, &call, &target, upgrade).await
            }
            Route::Object(target) => objects::serve(&self.api, &call, target, body).await,
            Route::NotFound => not_found(),
        }
    }

    /// Discovery documents are for any authenticated caller (Kubernetes'
    /// `system:discovery`), as the gRPC Discovery call.
    fn discovered(&self, call: &Call, doc: Value) -> http::Response<Body> {
        match self.api.state.authn.authenticate(&call.grpc(())) {
            Ok(_) => json_response(200, &doc),
            Err(s) => status::response(&s, None),
        }
    }
}

/// Whether the request is for `/api` (the core group) rather than `/apis`.
fn route_is_core(call: &Call) -> bool {
    call.parts.uri.path().trim_end_matches('/') == "/api"
}

fn not_found() -> http::Response<Body> {
    status::response(
        &tonic::Status::not_found("the server could not find the requested resource"),
        None,
    )
}

fn method_not_allowed(method: &http::Method) -> http::Response<Body> {
    status::response(
        &tonic::Status::unimplemented(format!(
            "the server does not allow this method on the requested resource ({method})"
        )),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_static(path: &str) -> Route {
        route(path, &crate::custom::CustomKinds::default())
    }

    fn object(path: &str) -> Target {
        match route(path, &crate::custom::CustomKinds::default()) {
            Route::Object(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn urls_route_as_kubernetes_lays_them_out() {
        let t = object("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                t.info.plural,
                t.namespace.as_str(),
                t.name.as_str(),
                t.subresource.as_str(),
                t.watch
            ),
            ("pods", "default", "web", "status", false)
        );
        let t = object("/api/v1/pods");
        assert_eq!(
            (t.info.plural, t.namespace.as_str(), t.name.as_str()),
            ("pods", "", "")
        );
        let t = object("/apis/apps/v1/namespaces/ns/deployments/web/scale");
        assert_eq!((t.info.kind, t.subresource.as_str()), ("Deployment", "scale"));
        let t = object("/api/v1/watch/namespaces/ns/pods");
        assert!(t.watch);
        assert_eq!(t.namespace, "ns");
        // the Namespace itself and its status
        let t = object("/api/v1/namespaces/ns");
        assert_eq!(
            (t.info.kind, t.name.as_str(), t.namespace.as_str()),
            ("Namespace", "ns", "")
        );
        let t = object("/api/v1/namespaces/ns/status");
        assert_eq!(
            (t.info.kind, t.name.as_str(), t.subresource.as_str()),
            ("Namespace", "ns", "status")
        );
        let t = object("/api/v1/nodes/n%3A1");
        assert_eq!(t.name, "n:1");
        assert_eq!(route_static("/apis/apps/v2/deployments"), Route::NotFound);
        assert_eq!(
            route_static("/api/v1/namespaces/ns/nodes"),
            Route::NotFound,
            "nodes are cluster-scoped"
        );
        assert_eq!(route_static("/apis/apps/v1/nothing"), Route::NotFound);
        assert_eq!(route_static("/version"), Route::Version);
        assert_eq!(route_static("/readyz/ping"), Route::Health);
        assert_eq!(
            route_static("/apis/apps/v1"),
            Route::Resources {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(
            route_static("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Route::SelfSubjectAccessReview
        );
    }

    #[test]
    fn queries_are_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&limit=5"));
        assert_eq!(q.get("labelSelector"), "app=web,tier in (a)");
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert!(Query::parse(Some("limit=x")).int("limit").is_err());
        assert_eq!(decode_component("100%", false), "100%");
    }
}
