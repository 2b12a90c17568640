//! Property tests over everything that parses what users and peers send: manifests (YAML
//! and JSON), objects on the wire (protobuf, including corrupted copies of real ones),
//! label and field selectors, quantities, IntOrString, cron schedules.
//!
//! The property is always the same: no input panics, and every rejection is an error that
//! says what is wrong. Where an input is well formed by construction, the result is
//! checked too (round trips, selector semantics).
//!
//! Bounded in `make test` (proptest's default of 256 cases per property, or
//! `PROPTEST_CASES`); `make fuzz` runs them with many more cases in release mode. A failure
//! prints the smallest input that fails; such inputs become regression cases below.

use proptest::prelude::*;
use rkube_api::codec::decode_manifests;
use rkube_api::intstr::IntOrString;
use rkube_api::quantity::Quantity;
use rkube_api::selector::{FieldSelector, Selector};
use rkube_api::{visit_kind, KindVisitor, Resource, ResourceInfo, KINDS};

/// Real manifests of several kinds: the seeds that corrupted copies start from.
const SEEDS: &[&str] = &[
    include_str!("../../../deploy/examples/web.yaml"),
    include_str!("../../../deploy/examples/ingress.yaml"),
    include_str!("../../../deploy/examples/local-storageclass.yaml"),
    r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup, namespace: ops, labels: {app: backup}}
spec:
  schedule: "*/5 * * * *"
  timeZone: Europe/Berlin
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      completions: 3
      parallelism: 2
      completionMode: Indexed
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: main
            image: busybox
            command: [sh, -c, "echo $JOB_COMPLETION_INDEX"]
            resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}
"#,
    r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 1, maxUnavailable: 25%}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: postgres
        ports: [{name: pg, containerPort: 5432}]
        env:
        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        volumeMounts: [{name: data, mountPath: /var/lib/postgresql}]
        readinessProbe: {tcpSocket: {port: pg}, periodSeconds: 2}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
    r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-app, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{port: 5432}, {port: pg, protocol: TCP}, {port: 8000, endPort: 8100}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {team: ops}}}]
"#,
    r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: app, namespace: shop}]
"#,
];

/// Every object of the seed manifests, on the wire.
fn seed_objects() -> Vec<rkube_api::DynObject> {
    SEEDS
        .iter()
        .flat_map(|text| decode_manifests(text, "seed").expect("the seeds are valid manifests"))
        .collect()
}

/// Decodes `bytes` as a `K` and, when that works, runs everything the apiserver runs on a
/// decoded object: defaulting, validation, validation of an update from the original,
/// JSON, selectors of its fields.
struct Exercise<'a>(&'a [u8]);

impl KindVisitor for Exercise<'_> {
    type Output = ();
    fn visit<K: Resource>(self) -> Self::Output {
        let Ok(mut obj) = <K as prost::Message>::decode(self.0) else {
            return;
        };
        let original = obj.clone();
        obj.apply_defaults();
        let errors = obj.validate();
        for e in &errors {
            assert!(!e.to_string().is_empty(), "an empty validation error");
        }
        let _ = obj.validate_update(&original);
        let any = rkube_api::to_any(&obj);
        if let Ok(json) = rkube_api::codec::any_to_json(K::info(), &any) {
            // what the apiserver wrote as JSON is read back by the JSON path
            let text = serde_json::to_string(&json).expect("a Value serializes");
            if errors.is_empty() {
                let back = decode_manifests(&text, "round trip");
                assert!(
                    back.is_ok(),
                    "valid {} did not decode from its own JSON: {back:?}\n{text}",
                    K::INFO.kind
                );
            }
        }
    }
}

fn info_of(type_url: &str) -> &'static ResourceInfo {
    ResourceInfo::by_type_url(type_url).expect("a served kind")
}

/// A corrupted copy of `bytes`: some bytes replaced, a piece cut out, or a tail dropped.
fn corrupt(bytes: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(at, op, value) in edits {
        if out.is_empty() {
            break;
        }
        let at = at % out.len();
        match op % 4 {
            0 => out[at] = value,
            1 => out[at] ^= 1 << (value % 8),
            2 => {
                let end = (at + value as usize % 16).min(out.len());
                out.drain(at..end);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// A YAML-ish document built from pieces users write, with the odd stray character.
fn manifest_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("apiVersion: v1\n".to_string()),
        Just("apiVersion: apps/v1\n".to_string()),
        Just("kind: Pod\n".to_string()),
        Just("kind: Deployment\n".to_string()),
        Just("kind: List\nitems:\n- kind: Pod\n".to_string()),
        Just("metadata:\n  name: x\n".to_string()),
        Just("spec:\n  containers:\n  - name: c\n    image: i\n".to_string()),
        Just("  replicas: 3\n".to_string()),
        Just("  replicas: -1\n".to_string()),
        Just("  ports: [{containerPort: 99999}]\n".to_string()),
        Just("---\n".to_string()),
        Just("a: &x [1, *x]\n".to_string()),
        Just("{\"kind\": \"Pod\", \"spec\": null}\n".to_string()),
        Just("resources: {limits: {cpu: 1e400}}\n".to_string()),
        "[ -~]{0,20}\n",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[a-zA-Z0-9%./:-]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("apiVersion".to_string()),
                    Just("kind".to_string()),
                    Just("metadata".to_string()),
                    Just("name".to_string()),
                    Just("spec".to_string()),
                    Just("containers".to_string()),
                    Just("replicas".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{1,6}", "[a-z]{1,4}\\.io/[a-z]{1,6}"]
}

proptest! {
    // Failures are not written to files beside the tests: a failing input found once is
    // added to `regressions` below by hand.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn manifests_never_panic_and_errors_name_the_source(text in manifest_text()) {
        if let Err(errors) = decode_manifests(&text, "fuzz.yaml") {
            for e in errors {
                let shown = e.to_string();
                prop_assert!(shown.contains("fuzz.yaml"), "{shown}");
            }
        }
    }

    #[test]
    fn json_documents_of_every_kind_decode_or_say_why(
        index in 0usize..KINDS.len(),
        mut body in json_value(),
    ) {
        let info = &KINDS[index];
        if let serde_json::Value::Object(map) = &mut body {
            map.insert("apiVersion".into(), info.api_version().into());
            map.insert("kind".into(), info.kind.into());
        }
        let text = serde_json::to_string(&body).unwrap();
        if let Ok(objects) = decode_manifests(&text, "fuzz.json") {
            for o in objects {
                visit_kind(o.info, Exercise(&o.any.value));
            }
        }
    }

    #[test]
    fn corrupted_wire_objects_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let seeds = seed_objects();
        let object = seed.get(&seeds);
        let bytes = corrupt(&object.any.value, &edits);
        visit_kind(info_of(&object.any.type_url), Exercise(&bytes));
    }

    #[test]
    fn random_bytes_as_any_kind_never_panic(
        index in 0usize..KINDS.len(),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        visit_kind(&KINDS[index], Exercise(&bytes));
    }

    #[test]
    fn quantities_parse_or_say_why(s in "[-+]?[0-9.eE]{0,24}(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?") {
        let q = Quantity::new(s.clone());
        match q.nanos() {
            Ok(_) => {
                let _ = q.millis();
                let _ = q.value();
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn any_string_as_a_quantity_never_panics(s in "\\PC{0,40}") {
        let q = Quantity::new(s);
        let _ = (q.nanos(), q.millis(), q.value());
    }

    #[test]
    fn quantities_written_by_rkube_read_back(b in 0i64..(1 << 50), m in 0i64..(1 << 40)) {
        prop_assert_eq!(Quantity::from_bytes(b).value().unwrap(), b);
        prop_assert_eq!(Quantity::from_millis(m).millis().unwrap(), m);
    }

    #[test]
    fn percentages_scale_without_overflow(
        s in prop_oneof!["-?[0-9]{1,25}%", "[0-9]{1,12}", "\\PC{0,12}"],
        total in any::<i32>(),
        up in any::<bool>(),
    ) {
        let v = IntOrString::string(s);
        let _ = v.scaled_value(total, up);
    }

    #[test]
    fn label_selectors_parse_or_say_why(s in "[a-z!=,() .:/-]{0,40}|\\PC{0,40}") {
        if let Err(e) = Selector::parse(&s) {
            prop_assert!(!e.to_string().is_empty());
        }
        if let Err(e) = FieldSelector::parse(&s) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn label_selectors_mean_what_they_say(
        labels in prop::collection::btree_map(label_key(), "[a-z0-9]{0,4}", 0..5),
        key in label_key(),
        value in "[a-z0-9]{1,4}",
    ) {
        let has = labels.get(&key).cloned();
        let check = |text: String, expected: bool| -> Result<(), TestCaseError> {
            let sel = Selector::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(sel.matches(&labels), expected, "{} on {:?}", text, labels);
            Ok(())
        };
        check(format!("{key}={value}"), has.as_deref() == Some(value.as_str()))?;
        check(format!("{key}!={value}"), has.as_deref() != Some(value.as_str()))?;
        check(key.clone(), has.is_some())?;
        check(format!("!{key}"), has.is_none())?;
        check(format!("{key} in ({value},zz)"), has.as_deref().is_some_and(|h| h == value || h == "zz"))?;
        check(format!("{key} notin ({value})"), has.as_deref() != Some(value.as_str()))?;
        check(String::new(), true)?;
    }

    #[test]
    fn cron_schedules_parse_or_say_why(s in "([0-9*/,-]{1,6} ){4}[0-9*/,-]{1,6}|@[a-z]{0,8}|\\PC{0,30}") {
        match s.parse::<rkube_api::cron::Schedule>() {
            Ok(schedule) => {
                let start = chrono::NaiveDate::from_ymd_opt(2026, 2, 28)
                    .unwrap()
                    .and_hms_opt(23, 59, 0)
                    .unwrap();
                let _ = schedule.next_after(start);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn the_seeds_cover_several_kinds() {
    let kinds: std::collections::BTreeSet<_> = seed_objects().iter().map(|o| o.info.kind).collect();
    assert!(kinds.len() >= 8, "{kinds:?}");
}

/// Inputs the properties above once failed on.
#[test]
fn regressions() {
    // `10000000000%` of a large total overflowed i64 in `scaled_value` (a panic in debug
    // builds, a wrapped count in release ones)
    let huge = IntOrString::string("10000000000%");
    let err = huge.scaled_value(922_337_204, false).unwrap_err();
    assert!(err.contains("out of range"), "{err}");
    assert_eq!(IntOrString::string("25%").scaled_value(10, true), Ok(3));
    assert_eq!(IntOrString::string("25%").scaled_value(10, false), Ok(2));
}
