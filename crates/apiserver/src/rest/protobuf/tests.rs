//! The transcoder against hand-encoded protobuf, as kubectl's typed clients
//! (Go's generated marshallers) write it.

use super::*;
use crate::rest::json::{from_json, FieldValidation};
use serde_json::json;

/// A hand-written protobuf encoder: just enough wire format for the tests.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    fn int(mut self, field: u64, v: i64) -> Self {
        varint(&mut self.0, field << 3);
        varint(&mut self.0, v as u64);
        self
    }
    fn bytes(mut self, field: u64, v: &[u8]) -> Self {
        varint(&mut self.0, field << 3 | 2);
        varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    fn str(self, field: u64, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }
    fn msg(self, field: u64, m: Msg) -> Self {
        self.bytes(field, &m.0)
    }
    /// A map<string, T> entry.
    fn entry(self, field: u64, key: &str, value: Msg) -> Self {
        self.msg(field, Msg::default().str(1, key).bytes(2, &value.0))
    }
    fn label(self, field: u64, key: &str, value: &str) -> Self {
        self.msg(field, Msg::default().str(1, key).str(2, value))
    }
}

/// `k8s\0` + runtime.Unknown around an object.
fn envelope(api_version: &str, kind: &str, object: Msg) -> Vec<u8> {
    let unknown = Msg::default()
        .msg(1, Msg::default().str(1, api_version).str(2, kind))
        .msg(2, object)
        .str(3, "")
        .str(4, "");
    [b"k8s\0".as_slice(), &unknown.0].concat()
}

fn quantity(s: &str) -> Msg {
    Msg::default().str(1, s)
}

/// Go's zero time, as a non-pointer metav1.Time that was never set: an
/// empty message.
fn zero_time() -> Msg {
    Msg::default()
}

/// ObjectMeta as Go writes it: every non-pointer field, set or not.
fn meta(name: &str) -> Msg {
    Msg::default()
        .str(1, name)
        .str(2, "")
        .str(3, "")
        .str(4, "")
        .str(5, "")
        .str(6, "")
        .int(7, 0)
        .msg(8, zero_time())
}

/// What `kubectl create deployment web --image=busybox --replicas=2
/// --port=8080` sends, plus resources and a rolling update.
fn deployment() -> Msg {
    let labels = |m: Msg| m.label(11, "app", "web");
    let container = Msg::default()
        .str(1, "busybox")
        .str(2, "busybox")
        .msg(
            6,
            Msg::default()
                .str(1, "")
                .int(2, 0)
                .int(3, 8080)
                .str(4, "TCP")
                .str(5, ""),
        )
        .msg(
            8,
            Msg::default()
                .entry(1, "cpu", quantity("500m"))
                .entry(1, "memory", quantity("128Mi"))
                .entry(2, "cpu", quantity("250m")),
        )
        .str(13, "")
        .str(14, "")
        .int(16, 0);
    // a configMap volume: VolumeSource and LocalObjectReference are embedded
    let volume = Msg::default().str(1, "cfg").msg(
        2,
        Msg::default().msg(
            19,
            Msg::default().msg(1, Msg::default().str(1, "web")).int(3, 0o644),
        ),
    );
    let pod_spec = Msg::default()
        .msg(1, volume)
        .msg(2, container)
        .str(3, "")
        .str(6, "")
        .int(11, 0)
        // runtimeClassName, which rkube does not have: unset
        .str(29, "");
    let spec = Msg::default()
        .int(1, 2)
        .msg(2, Msg::default().label(1, "app", "web"))
        .msg(3, Msg::default().msg(1, labels(meta(""))).msg(2, pod_spec))
        .msg(
            4,
            Msg::default().str(1, "RollingUpdate").msg(
                2,
                Msg::default()
                    .msg(1, Msg::default().int(1, 0).int(2, 1).str(3, ""))
                    .msg(2, Msg::default().int(1, 1).int(2, 0).str(3, "25%")),
            ),
        )
        .int(5, 0);
    Msg::default()
        .msg(1, labels(meta("web")))
        .msg(2, spec)
        .msg(3, Msg::default())
}

#[test]
fn the_table_parses_and_covers_every_served_kind() {
    let schema = schema();
    for info in rkube_api::KINDS {
        assert!(
            message_of(&info.api_version(), info.kind).is_some(),
            "{} {} is not in protobuf/fields.txt",
            info.api_version(),
            info.kind
        );
    }
    for (api_version, kind) in [
        ("policy/v1", "Eviction"),
        ("autoscaling/v1", "Scale"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("apps/v1", "DeleteOptions"),
    ] {
        assert!(message_of(api_version, kind).is_some(), "{kind}");
    }
    assert_eq!(schema["core.v1.Container"][&2].json, "image");
}

#[test]
fn a_deployment_becomes_kubernetes_json() {
    let v = to_json(&envelope("apps/v1", "Deployment", deployment())).unwrap();
    let container = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(v["apiVersion"], "apps/v1");
    assert_eq!(v["kind"], "Deployment");
    assert_eq!(v["metadata"]["name"], "web");
    assert_eq!(v["metadata"]["labels"], json!({"app": "web"}));
    // Go's zero time is JSON's null, which the JSON path drops
    assert_eq!(v["metadata"]["creationTimestamp"], Value::Null);
    assert_eq!(v["spec"]["replicas"], 2);
    assert_eq!(v["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
    assert_eq!(container["image"], "busybox");
    assert_eq!(
        container["ports"],
        json!([{"name": "", "hostPort": 0, "containerPort": 8080, "protocol": "TCP", "hostIP": ""}])
    );
    assert_eq!(
        container["resources"],
        json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}})
    );
    assert_eq!(
        v["spec"]["strategy"]["rollingUpdate"],
        json!({"maxUnavailable": 1, "maxSurge": "25%"})
    );
    assert_eq!(
        v["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "web", "defaultMode": 0o644}}])
    );
    // an unset field rkube does not have is dropped, as JSON's omitempty does
    assert!(v["spec"]["template"]["spec"].get("runtimeClassName").is_none());
    // and the JSON path takes the object strictly
    let info = rkube_api::ResourceInfo::by_kind("apps/v1", "Deployment").unwrap();
    let (_, warnings) = from_json(info, v, FieldValidation::Strict).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_set_field_rkube_lacks_is_named_for_field_validation() {
    // a runtimeClassName, which rkube refuses whatever fieldValidation says
    let pod_spec = Msg::default()
        .msg(2, Msg::default().str(1, "c").str(2, "busybox"))
        .str(29, "gvisor");
    let d = deployment().msg(2, Msg::default().msg(3, Msg::default().msg(2, pod_spec)));
    let v = to_json(&envelope("apps/v1", "Deployment", d)).unwrap();
    let info = rkube_api::ResourceInfo::by_kind("apps/v1", "Deployment").unwrap();
    let err = from_json(info, v, FieldValidation::Ignore).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.template.spec.runtimeClassName: unsupported field"),
        "{err}"
    );

    // spec.trafficDistribution: refused, or dropped with a warning
    let service = Msg::default()
        .msg(1, meta("s"))
        .msg(2, Msg::default().str(23, "PreferClose"));
    let v = to_json(&envelope("v1", "Service", service)).unwrap();
    let info = rkube_api::ResourceInfo::by_kind("v1", "Service").unwrap();
    let err = from_json(info, v.clone(), FieldValidation::Strict).unwrap_err();
    assert!(
        err.to_string()
            .contains("Service.spec.trafficDistribution: unknown field"),
        "{err}"
    );
    let (_, warnings) = from_json(info, v, FieldValidation::Warn).unwrap();
    assert_eq!(warnings, ["unknown field \"spec.trafficDistribution\""]);
}

#[test]
fn secret_data_is_base64_and_times_are_rfc3339() {
    let secret = Msg::default()
        .msg(
            1,
            meta("s").msg(9, Msg::default().int(1, 1_700_000_000).int(2, 0)),
        )
        .entry(2, "password", Msg(b"s3cr\xffet".to_vec()))
        .str(3, "Opaque")
        .int(5, 0);
    let v = to_json(&envelope("v1", "Secret", secret)).unwrap();
    assert_eq!(v["data"], json!({"password": "czNjcv9ldA=="}));
    assert_eq!(v["type"], "Opaque");
    assert_eq!(v["metadata"]["deletionTimestamp"], "2023-11-14T22:13:20Z");

    let lease = Msg::default().msg(1, meta("l")).msg(
        2,
        Msg::default()
            .str(1, "me")
            .int(2, -1)
            .msg(3, Msg::default().int(1, 1_700_000_000).int(2, 123_456_000)),
    );
    let v = to_json(&envelope("coordination.k8s.io/v1", "Lease", lease)).unwrap();
    assert_eq!(v["spec"]["acquireTime"], "2023-11-14T22:13:20.123456Z");
    // negative int32s are ten-byte varints
    assert_eq!(v["spec"]["leaseDurationSeconds"], -1);
}

#[test]
fn the_bodies_the_rest_face_reads_itself_transcode_too() {
    let review = Msg::default().msg(1, meta("")).msg(
        2,
        Msg::default().msg(1, Msg::default().str(1, "ns1").str(2, "create").str(5, "pods")),
    );
    let v = to_json(&envelope(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        review,
    ))
    .unwrap();
    assert_eq!(v["spec"]["resourceAttributes"]["verb"], "create");
    assert_eq!(v["spec"]["resourceAttributes"]["namespace"], "ns1");

    let token = Msg::default().msg(1, meta("")).msg(
        2,
        Msg::default()
            .str(1, "api")
            .str(1, "vault")
            .msg(3, Msg::default().str(1, "Pod").str(2, "v1").str(3, "p"))
            .int(4, 600),
    );
    let v = to_json(&envelope("authentication.k8s.io/v1", "TokenRequest", token)).unwrap();
    assert_eq!(v["spec"]["audiences"], json!(["api", "vault"]));
    assert_eq!(v["spec"]["expirationSeconds"], 600);
    assert_eq!(v["spec"]["boundObjectRef"]["name"], "p");

    let eviction = Msg::default()
        .msg(1, meta("p"))
        .msg(2, Msg::default().int(1, 30).str(4, "Foreground"));
    let v = to_json(&envelope("policy/v1", "Eviction", eviction)).unwrap();
    assert_eq!(v["deleteOptions"]["gracePeriodSeconds"], 30);
    assert_eq!(v["deleteOptions"]["propagationPolicy"], "Foreground");
}

#[test]
fn what_cannot_be_read_is_named() {
    let err = |body: &[u8]| to_json(body).unwrap_err().to_string();
    assert!(err(b"{\"kind\": \"Pod\"}").contains("magic"));
    let e = err(&envelope(
        "v1",
        "ConfigMap",
        Msg::default().msg(1, meta("c")).str(99, "x"),
    ));
    assert!(e.contains("core.v1.ConfigMap has no field number 99"), "{e}");
    // unset, as a newer kubectl sends its non-pointer fields, it is dropped
    let unset = Msg::default().msg(1, meta("c")).str(99, "");
    assert!(to_json(&envelope("v1", "ConfigMap", unset)).is_ok());
    let e = err(&envelope("example.com/v1", "Widget", Msg::default()));
    assert!(
        e.contains("Widget of apiVersion \"example.com/v1\"") && e.contains("application/json"),
        "{e}"
    );
    let e = err(&envelope(
        "v1",
        "ConfigMap",
        Msg::default().bytes(1, &[0x0a, 0x05, b'a']),
    ));
    assert!(e.contains("ConfigMap"), "{e}");
    // a string field sent as a number
    let name = Msg::default().msg(1, Msg::default().int(1, 7));
    let e = err(&envelope("v1", "ConfigMap", name));
    assert!(
        e.contains("meta.v1.ObjectMeta.name: a String field cannot be a varint"),
        "{e}"
    );
}

mod fuzz {
    //! No protobuf body panics the transcoder: corrupted copies of a real one and random
    //! bytes behind the magic are transcoded or refused with a message (bounded cases in
    //! `make test`, many in `make fuzz`).
    use super::*;
    use proptest::prelude::*;

    proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn corrupted_bodies_transcode_or_say_why(
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        ) {
            let mut body = envelope("apps/v1", "Deployment", deployment());
            for (at, op, value) in edits {
                // the magic stays, so what is fuzzed is the message inside
                let at = 4 + at % (body.len() - 4);
                match op % 3 {
                    0 => body[at] = value,
                    1 => body[at] ^= 1 << (value % 8),
                    _ => body.truncate(at.max(4)),
                }
                if body.len() <= 4 {
                    break;
                }
            }
            if let Err(e) = to_json(&body) {
                prop_assert!(e.to_string().contains("protobuf"), "{e}");
            }
        }

        #[test]
        fn random_bodies_transcode_or_say_why(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let body = [b"k8s\0".as_slice(), &bytes].concat();
            let _ = to_json(&body);
            let _ = to_json(&bytes);
        }
    }
}
