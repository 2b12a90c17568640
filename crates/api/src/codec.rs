//! Converting objects between their three forms: protobuf bytes inside
//! `google.protobuf.Any` (the wire and the store), Kubernetes JSON, and YAML
//! manifests as users write them. Decoding errors name the file, the object
//! and the field path.

use crate::resource::{visit_kind, KindVisitor, Resource, ResourceInfo};
use prost_types::Any;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot decode {type_url}: {source}")]
    Decode {
        type_url: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("expected a {expected} but the server sent {got}")]
    WrongType { expected: &'static str, got: String },
    #[error("unknown object type {0}; is the client newer than the server?")]
    UnknownType(String),
    #[error("cannot encode object as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Wraps an object for the wire.
pub fn to_any<K: Resource>(obj: &K) -> Any {
    Any {
        type_url: K::INFO.type_url.to_string(),
        value: obj.encode_to_vec(),
    }
}

/// Unwraps an object of a known kind from the wire.
pub fn from_any<K: Resource>(any: &Any) -> Result<K, CodecError> {
    if any.type_url != K::INFO.type_url {
        return Err(CodecError::WrongType {
            expected: K::INFO.kind,
            got: any.type_url.clone(),
        });
    }
    K::decode(any.value.as_slice()).map_err(|source| CodecError::Decode {
        type_url: any.type_url.clone(),
        source,
    })
}

/// Protobuf bytes that, appended to an encoded object, set its
/// `metadata.resourceVersion`: a repeated embedded message field is merged,
/// so `metadata { resource_version: "N" }` after the object overrides only
/// that field. The apiserver uses it to stamp the store's revision on every
/// object it returns without decoding it.
pub fn resource_version_suffix(revision: u64) -> Vec<u8> {
    let rv = revision.to_string();
    let mut inner = Vec::with_capacity(rv.len() + 2);
    inner.push((5 << 3) | 2); // field 5 (resource_version), length-delimited
    prost::encoding::encode_varint(rv.len() as u64, &mut inner);
    inner.extend_from_slice(rv.as_bytes());
    let mut out = Vec::with_capacity(inner.len() + 2);
    out.push((3 << 3) | 2); // field 3 (metadata), length-delimited
    prost::encoding::encode_varint(inner.len() as u64, &mut out);
    out.extend_from_slice(&inner);
    out
}

/// The Kubernetes JSON of a wire object of kind `info`: apiVersion and
/// kind set, and the zero values Kubernetes always writes
/// ([`crate::zero_values`]).
pub fn any_to_json(info: &ResourceInfo, any: &Any) -> Result<serde_json::Value, CodecError> {
    struct Json<'a>(&'a Any);
    impl KindVisitor for Json<'_> {
        type Output = Result<serde_json::Value, CodecError>;
        fn visit<K: Resource>(self) -> Self::Output {
            let mut k: K = from_any(self.0)?;
            k.set_type_meta();
            Ok(serde_json::to_value(&k)?)
        }
    }
    let mut v = visit_kind(info, Json(any))?;
    crate::zero_values::fill(info.kind, &mut v);
    Ok(v)
}

/// An object of any kind, as decoded from a manifest or received from the
/// server: what it is, its identity, and its wire form.
#[derive(Debug, Clone, PartialEq)]
pub struct DynObject {
    pub info: &'static ResourceInfo,
    pub name: String,
    pub generate_name: String,
    pub namespace: String,
    pub any: Any,
}

impl DynObject {
    pub fn from_typed<K: Resource>(obj: &K) -> Self {
        DynObject {
            info: K::info(),
            name: obj.metadata().name.clone(),
            generate_name: obj.metadata().generate_name.clone(),
            namespace: obj.metadata().namespace.clone(),
            any: to_any(obj),
        }
    }

    /// Decodes a server object of any served kind.
    pub fn from_any(any: Any) -> Result<Self, CodecError> {
        let info = ResourceInfo::by_type_url(&any.type_url)
            .ok_or_else(|| CodecError::UnknownType(any.type_url.clone()))?;
        struct Meta<'a>(&'a Any);
        impl KindVisitor for Meta<'_> {
            type Output = Result<(String, String, String), CodecError>;
            fn visit<K: Resource>(self) -> Self::Output {
                let k: K = from_any(self.0)?;
                let m = k.metadata();
                Ok((m.name.clone(), m.generate_name.clone(), m.namespace.clone()))
            }
        }
        let (name, generate_name, namespace) = visit_kind(info, Meta(&any))?;
        Ok(DynObject {
            info,
            name,
            generate_name,
            namespace,
            any,
        })
    }

    pub fn decode<K: Resource>(&self) -> Result<K, CodecError> {
        from_any(&self.any)
    }

    /// The Kubernetes JSON form.
    pub fn to_json(&self) -> Result<serde_json::Value, CodecError> {
        any_to_json(self.info, &self.any)
    }

    /// `kind.group/name` as kubectl prints it (`deployment.apps/web`).
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.info.singular_group(), self.name)
    }
}

/// A manifest that could not be decoded, with where and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestError {
    /// The file (or `-` for standard input).
    pub source: String,
    /// 1-based document number inside a multi-document file.
    pub document: usize,
    /// `Deployment "web"`, or what is known of it.
    pub object: String,
    /// Field path with the kind in front: `Deployment.spec.replicas`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if !self.object.is_empty() {
            write!(f, " ({})", self.object)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ManifestError {}

/// Decodes every object in a (multi-document) YAML or JSON text. Each
/// document is one object, or a `kind: List` whose `items` are objects.
/// All errors are returned, so a user fixes a file in one pass; callers must
/// write nothing when any is returned.
pub fn decode_manifests(text: &str, source: &str) -> Result<Vec<DynObject>, Vec<ManifestError>> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in documents(text).enumerate() {
        let document = i + 1;
        let value = match doc {
            Ok(v) => v,
            Err(message) => {
                errors.push(ManifestError {
                    source: source.into(),
                    document,
                    object: String::new(),
                    field: String::new(),
                    message,
                });
                // a syntax error ends the stream: later documents cannot be found
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let is_list = value.get("kind").and_then(|k| k.as_str()) == Some("List");
        let items = if is_list {
            match value.get("items").and_then(|i| i.as_sequence()) {
                Some(items) => items.clone(),
                None => Vec::new(),
            }
        } else {
            vec![value]
        };
        for item in items {
            match decode_value(item) {
                Ok(obj) => objects.push(obj),
                Err(mut e) => {
                    e.source = source.into();
                    e.document = document;
                    errors.push(e);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// The documents of a manifest file. A text of JSON objects (one, or several one after
/// the other) is read as JSON: YAML would refuse characters JSON allows unescaped in
/// strings (DEL, C1 controls), and JSON is what programs write. Anything else, flow-style
/// YAML such as `{kind: Pod}` too, is read as YAML.
fn documents(text: &str) -> Box<dyn Iterator<Item = Result<serde_yaml::Value, String>> + '_> {
    if text.trim_start().starts_with('{') {
        let json: Result<Vec<serde_yaml::Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter::<serde_json::Value>()
            .map(|doc| doc.ok().and_then(|d| serde_yaml::to_value(d).ok()).ok_or(()))
            .collect();
        if let Ok(docs) = json {
            return Box::new(docs.into_iter().map(Ok));
        }
    }
    Box::new(
        serde_yaml::Deserializer::from_str(text)
            .map(|doc| serde_yaml::Value::deserialize_from(doc).map_err(|e| format!("not valid YAML: {e}"))),
    )
}

trait DeserializeFrom: Sized {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error>;
}

impl DeserializeFrom for serde_yaml::Value {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error> {
        serde::Deserialize::deserialize(d)
    }
}

fn decode_value(value: serde_yaml::Value) -> Result<DynObject, ManifestError> {
    let err = |object: String, field: String, message: String| ManifestError {
        source: String::new(),
        document: 0,
        object,
        field,
        message,
    };
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    let (api_version, kind) = match (api_version, kind) {
        (Some(a), Some(k)) => (a, k),
        (None, _) => {
            return Err(err(
                String::new(),
                "apiVersion".into(),
                "Required value: every object needs apiVersion and kind".into(),
            ))
        }
        (_, None) => {
            return Err(err(
                String::new(),
                "kind".into(),
                "Required value: every object needs apiVersion and kind".into(),
            ))
        }
    };
    let object = if name.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {name:?}")
    };
    let Some(info) = ResourceInfo::by_kind(api_version, kind) else {
        let hint = crate::resource::KINDS
            .iter()
            .find(|k| k.kind == kind)
            .map(|k| format!("; {kind} is served as apiVersion {}", k.api_version()))
            .unwrap_or_else(|| "; `rkubectl api-resources` lists the kinds this server knows".into());
        return Err(err(
            object,
            String::new(),
            format!("no kind {kind:?} in apiVersion {api_version:?}{hint}"),
        ));
    };
    struct Decode(serde_yaml::Value);
    impl KindVisitor for Decode {
        type Output = Result<Any, (String, String)>;
        fn visit<K: Resource>(self) -> Self::Output {
            match serde_path_to_error::deserialize::<_, K>(self.0) {
                Ok(obj) => Ok(to_any(&obj)),
                Err(e) => {
                    let path = e.path().to_string();
                    let inner = e.inner().to_string();
                    let message = match crate::unsupported::reason(&path) {
                        Some(why) if inner.starts_with("unknown field") => {
                            format!("unsupported field: {why}")
                        }
                        _ => friendly(&inner),
                    };
                    Err((path, message))
                }
            }
        }
    }
    let any = visit_kind(info, Decode(value)).map_err(|(path, message)| {
        let field = if path == "." {
            info.kind.to_string()
        } else {
            format!("{}.{}", info.kind, path)
        };
        err(object.clone(), field, message)
    })?;
    DynObject::from_any(any).map_err(|e| err(object, String::new(), e.to_string()))
}

/// Rewrites serde's wording into Kubernetes' (`unknown field`, `Invalid
/// value`), with a suggestion for misspelt field names.
fn friendly(inner: &str) -> String {
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|c| !c.contains('_'))
            .collect();
        let best = candidates
            .iter()
            .map(|c| {
                (
                    edit_distance(&field.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                    *c,
                )
            })
            .min();
        return match best {
            Some((d, c)) if d <= 3 => format!("unknown field (did you mean {c:?}?)"),
            _ if !candidates.is_empty() => {
                format!("unknown field; expected one of: {}", candidates.join(", "))
            }
            _ => "unknown field".to_string(),
        };
    }
    if inner.contains("invalid digit") || inner.contains("cannot parse integer") {
        return "Invalid value: expected an integer".into();
    }
    if let Some(rest) = inner.strip_prefix("invalid type: ") {
        return format!("Invalid value: {rest}");
    }
    inner.to_string()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The YAML form of a JSON value, as `-o yaml` prints it.
pub fn json_to_yaml(v: &serde_json::Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::v1::Deployment;

    const NGINX: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
        resources:
          limits:
            cpu: 1
            memory: "128Mi"
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"#;

    #[test]
    fn documentation_manifests_decode_unchanged() {
        let objs = decode_manifests(NGINX, "nginx.yaml").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].display_name(), "deployment.apps/nginx-deployment");
        assert_eq!(objs[1].display_name(), "service/my-service");
        let d: Deployment = objs[0].decode().unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let ru = spec.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(ru.max_surge.unwrap().as_str(), Some("25%"));
        assert_eq!(ru.max_unavailable.unwrap().as_int(), Some(1));
        let c = &spec.template.unwrap().spec.unwrap().containers[0];
        assert_eq!(
            c.resources.as_ref().unwrap().limits["cpu"].millis().unwrap(),
            1000
        );
        assert_eq!(c.ports[0].container_port, 80);
    }

    #[test]
    fn json_round_trips_through_yaml() {
        let objs = decode_manifests(NGINX, "nginx.yaml").unwrap();
        let yaml = json_to_yaml(&objs[0].to_json().unwrap());
        let again = decode_manifests(&yaml, "out.yaml").unwrap();
        assert_eq!(again[0].any, objs[0].any);
        assert!(yaml.contains("maxSurge: 25%"), "{yaml}");
        assert!(yaml.contains("replicas: 3"), "{yaml}");
    }

    #[test]
    fn json_files_are_read_as_json_and_flow_yaml_as_yaml() {
        // DEL and a C1 control are valid unescaped in JSON strings, not in YAML
        let json = "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}, \"data\": {\"k\": \"x\u{7f}\u{85}y\"}}\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"b\"}}";
        let objs = decode_manifests(json, "two.json").unwrap();
        assert_eq!(
            objs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let cm: crate::core::v1::ConfigMap = objs[0].decode().unwrap();
        assert_eq!(cm.data["k"], "x\u{7f}\u{85}y");
        let flow = decode_manifests(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}",
            "flow.yaml",
        )
        .unwrap();
        assert_eq!(flow[0].name, "c");
        let broken = decode_manifests("{\"kind\": ", "broken.json").unwrap_err();
        assert!(
            broken[0]
                .to_string()
                .starts_with("broken.json: document 1: not valid YAML"),
            "{}",
            broken[0]
        );
    }

    #[test]
    fn errors_name_file_object_and_path() {
        let bad = NGINX.replace("image: nginx", "imagePullPolice: Always\n        image: nginx");
        let errs = decode_manifests(&bad, "web.yaml").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "web.yaml: document 1 (Deployment \"nginx-deployment\"): Deployment.spec.template.spec.containers[0].imagePullPolice: unknown field (did you mean \"imagePullPolicy\"?)"
        );
        let bad = NGINX
            .replace("replicas: 3", "replicas: three")
            .replace("port: 80\n", "port: [80]\n");
        let errs = decode_manifests(&bad, "web.yaml").unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].field, "Deployment.spec.replicas");
        assert_eq!(errs[1].field, "Service.spec.ports[0].port");
        assert_eq!(errs[1].document, 2);
    }

    #[test]
    fn kubernetes_fields_rkube_leaves_out_are_named_with_the_reason() {
        let bad = NGINX.replace(
            "image: nginx",
            "volumeDevices: [{name: d, devicePath: /dev/xvda}]\n        image: nginx",
        );
        let errs = decode_manifests(&bad, "web.yaml").unwrap_err();
        assert_eq!(
            errs[0].field,
            "Deployment.spec.template.spec.containers[0].volumeDevices"
        );
        assert!(
            errs[0]
                .message
                .starts_with("unsupported field: raw block volumes are not supported"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn unknown_kinds_say_what_exists() {
        let errs = decode_manifests(
            "apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n",
            "f.yaml",
        )
        .unwrap_err();
        assert!(
            errs[0].message.contains("served as apiVersion apps/v1"),
            "{}",
            errs[0]
        );
        let errs = decode_manifests("kind: Pod\n", "f.yaml").unwrap_err();
        assert_eq!(errs[0].field, "apiVersion");
    }

    #[test]
    fn acronyms_keep_kubernetes_spelling() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 10.96.0.10\n  externalIPs: [1.2.3.4]\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n  ports: [{port: 53}]\n";
        let objs = decode_manifests(text, "svc.yaml").unwrap();
        let json = objs[0].to_json().unwrap();
        assert_eq!(json["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(json["spec"]["externalIPs"][0], "1.2.3.4");
        let pod = crate::core::v1::Pod {
            status: Some(crate::core::v1::PodStatus {
                pod_ip: "10.244.0.5".into(),
                host_ip: "10.0.0.1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&pod).unwrap();
        assert_eq!(json["status"]["podIP"], "10.244.0.5");
        assert_eq!(json["status"]["hostIP"], "10.0.0.1");
        let node: crate::core::v1::Node =
            serde_yaml::from_str("spec: {podCIDR: 10.244.1.0/24, providerID: local://n1}").unwrap();
        assert_eq!(node.spec.unwrap().pod_cidr, "10.244.1.0/24");
        // The one key Kubernetes capitalises, which the official clients insist on.
        let node: crate::core::v1::Node =
            serde_yaml::from_str("status: {daemonEndpoints: {kubeletEndpoint: {Port: 10250}}}").unwrap();
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(
            json["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
    }

    #[test]
    fn list_documents_expand() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n  data: {k: v}\n";
        let objs = decode_manifests(text, "l.yaml").unwrap();
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].info.kind, "ConfigMap");
    }
}
