//! Property tests over what the REST face parses from clients: patches of every type
//! against objects, and SPDY frames (kubectl's exec/port-forward transport). No input
//! panics; a refusal is an error with a message. Bounded cases in `make test`, many more
//! in `make fuzz` (`PROPTEST_CASES`).

use proptest::prelude::*;
use rkube_apiserver::rest::patch;
use rkube_apiserver::rest::spdy::Framer;
use serde_json::{json, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z0-9/~$-]{0,8}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("spec".to_string()),
        Just("containers".to_string()),
        Just("name".to_string()),
        Just("image".to_string()),
        Just("ports".to_string()),
        Just("containerPort".to_string()),
        Just("env".to_string()),
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/containers".to_string()),
        Just("$deleteFromPrimitiveList/finalizers".to_string()),
        Just("finalizers".to_string()),
        Just("template".to_string()),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// RFC 6902 operations, some well formed and some not.
fn json_patch_ops() -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        Just("/spec/replicas".to_string()),
        Just("/spec/template/spec/containers/0/image".to_string()),
        Just("/spec/template/spec/containers/-".to_string()),
        Just("/metadata/labels/a~1b".to_string()),
        Just("/metadata/labels/~2".to_string()),
        Just("".to_string()),
        "(/[a-z0-9~-]{0,5}){0,5}",
    ];
    let op = prop_oneof![
        Just("add"),
        Just("remove"),
        Just("replace"),
        Just("move"),
        Just("copy"),
        Just("test"),
        Just("nope"),
    ];
    prop::collection::vec((op, path.clone(), path, json_value()), 0..6).prop_map(|ops| {
        Value::from(
            ops.into_iter()
                .map(|(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}))
                .collect::<Vec<_>>(),
        )
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "busybox"}
            ]}}
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn patches_of_every_type_apply_or_say_why(
        patch_type in prop_oneof![Just("merge"), Just("strategic"), Just("apply"), Just("json"), Just("xml")],
        body in prop_oneof![json_value(), json_patch_ops()],
    ) {
        let mut doc = deployment();
        if let Err(e) = patch::apply(patch_type, "Deployment", &mut doc, &body) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn spdy_frames_parse_or_say_why(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        valid_start in any::<bool>(),
    ) {
        let mut framer = Framer::new();
        if valid_start {
            // a well-formed data frame first, then whatever comes
            framer.push(&rkube_apiserver::rest::spdy::data(1, b"hello", false));
        }
        for chunk in chunks {
            framer.push(&chunk);
            loop {
                match framer.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert!(!e.to_string().is_empty());
                        return Ok(());
                    }
                }
            }
        }
    }
}

mod common;

mod grpc {
    //! The gRPC request path with a real apiserver: raw bytes as every unary call's
    //! message, and well-formed requests carrying random or corrupted objects, random
    //! selectors, names and patches. Each answer is a status naming what is wrong (never
    //! Internal or Unknown: bad input is the client's error), and the server keeps serving.
    use super::common::*;
    use bytes::{Buf as _, BufMut as _};
    use proptest::prelude::*;
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;
    use rkube_api::rpc;
    use rkube_api::{to_any, Resource as _, KINDS};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::Code;

    /// Messages as they are: bytes in, bytes out.
    #[derive(Default, Clone)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let out = src.chunk().to_vec();
            src.advance(out.len());
            Ok(Some(out))
        }
    }

    const UNARY: &[&str] = &[
        "Create",
        "Get",
        "List",
        "Update",
        "UpdateStatus",
        "Patch",
        "Delete",
        "Bind",
        "Evict",
        "Metrics",
        "Discovery",
        "Version",
        "AccessReview",
        "IssueNodeCertificate",
        "IssueKubeletServingCertificate",
        "CreateToken",
    ];

    /// How many inputs each kind of request gets: proptest's `PROPTEST_CASES` (as
    /// `make fuzz` sets it), 64 otherwise.
    fn cases() -> usize {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    }

    fn sample<S: Strategy>(runner: &mut TestRunner, s: &S) -> S::Value {
        s.new_tree(runner).expect("a value").current()
    }

    fn check(what: &str, result: Result<impl std::fmt::Debug, tonic::Status>) {
        if let Err(status) = result {
            assert!(
                !matches!(status.code(), Code::Internal | Code::Unknown),
                "{what}: bad input must be the client's error: {status:?}"
            );
            assert!(!status.message().is_empty(), "{what}: {status:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_requests_are_refused_with_reasons_and_the_server_keeps_serving() {
        let mut h = Harness::start().await;
        let channel = tonic::transport::Endpoint::from_shared(h.api.url().to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut raw = tonic::client::Grpc::new(channel);
        let mut runner = TestRunner::deterministic();
        let bytes = prop::collection::vec(any::<u8>(), 0..300);
        for i in 0..cases() {
            let method = UNARY[i % UNARY.len()];
            let body = sample(&mut runner, &bytes);
            raw.ready().await.unwrap();
            let path =
                http::uri::PathAndQuery::from_maybe_shared(format!("/rkube.api.v1.ApiServer/{method}"))
                    .unwrap();
            let answer = raw.unary(tonic::Request::new(body.clone()), path, Raw).await;
            // A message that is not protobuf at all is refused by tonic's codec with
            // Internal "failed to decode Protobuf message", as grpc-go answers it; anything
            // that decodes is the apiserver's to judge.
            match answer {
                Err(s)
                    if s.code() == Code::Internal
                        && s.message().starts_with("failed to decode Protobuf message") => {}
                other => check(&format!("{method} with {body:?}"), other),
            }
        }

        // Well-formed requests around corrupted real objects of every kind.
        let seed = rkube_api::core::v1::ConfigMap {
            metadata: Some(rkube_api::meta::v1::ObjectMeta {
                name: "seed".into(),
                namespace: "default".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let seed_bytes = to_any(&seed).value;
        // patches and updates meet an object that exists
        create(&mut h.client, &seed).await.unwrap();
        let edit = (any::<usize>(), any::<u8>());
        let input = (
            0usize..KINDS.len(),
            0usize..KINDS.len(),
            prop::collection::vec(edit, 0..4),
            "[a-z0-9.-]{0,10}|\\PC{0,12}",
            "[a-z!=,() .:/-]{0,20}",
            prop_oneof![
                Just("merge".to_string()),
                Just("json".to_string()),
                Just("strategic".to_string()),
                Just("apply".to_string()),
                "[a-z]{0,5}",
            ],
            prop::collection::vec(any::<u8>(), 0..64),
        );
        for _ in 0..cases() {
            let (kind, claimed, edits, name, selector, patch_type, patch) = sample(&mut runner, &input);
            let info = &KINDS[kind];
            let resource = Some(rpc::ResourceId {
                group: info.group.into(),
                resource: info.plural.into(),
            });
            let mut value = seed_bytes.clone();
            for (at, byte) in edits {
                if !value.is_empty() {
                    let at = at % value.len();
                    value[at] = byte;
                }
            }
            let object = Some(prost_types::Any {
                type_url: KINDS[claimed].type_url.into(),
                value,
            });
            let ns = if info.namespaced { "default" } else { "" };
            let what = format!("{} {name:?} {selector:?} {patch_type:?}", info.plural);
            check(
                &format!("create {what}"),
                h.client
                    .create(rpc::CreateRequest {
                        resource: resource.clone(),
                        namespace: ns.into(),
                        object: object.clone(),
                        dry_run: true,
                    })
                    .await,
            );
            check(
                &format!("update {what}"),
                h.client
                    .update(rpc::UpdateRequest {
                        resource: resource.clone(),
                        object,
                        dry_run: true,
                    })
                    .await,
            );
            check(
                &format!("list {what}"),
                h.client
                    .list(rpc::ListRequest {
                        resource: resource.clone(),
                        namespace: ns.into(),
                        label_selector: selector.clone(),
                        field_selector: selector.clone(),
                        limit: name.len() as i32 - 3,
                        r#continue: name.clone(),
                    })
                    .await,
            );
            check(
                &format!("patch {what}"),
                h.client
                    .patch(rpc::PatchRequest {
                        resource: resource.clone(),
                        namespace: "default".into(),
                        name: "seed".into(),
                        patch_type,
                        patch,
                        ..Default::default()
                    })
                    .await,
            );
            check(
                &format!("get {what}"),
                h.client
                    .get(rpc::GetRequest {
                        resource,
                        namespace: ns.into(),
                        name,
                    })
                    .await,
            );
        }
        // Still serving: the seed reads back, and a new object is taken.
        let read: rkube_api::core::v1::ConfigMap = get(&mut h.client, "default", "seed").await.unwrap();
        assert_eq!(read.metadata().labels.get("app").map(String::as_str), Some("web"));
        let mut another = seed.clone();
        another.metadata_mut().name = "after".into();
        assert_eq!(create(&mut h.client, &another).await.unwrap().name(), "after");
        h.stop().await;
    }
}
