//! Where a pod's startup time goes: a tracing layer that records the steps every daemon on
//! the path marks with the target `rkube_api::POD_STARTUP_TRACE` (spans named after the
//! step, events for deliveries, each with the field `pod_uid`), and the breakdown of those
//! steps per pod, relative to the moment the client sent the create.
//!
//! The daemons run in this process in the pods suite, so one clock serves them all; with
//! the daemons as processes the same steps are in their logs
//! (`RUST_LOG=rkube::pod_startup=debug`), to be matched by uid and timestamp.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;

/// One step of one pod: when it began and ended (the same instant for a delivery).
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    pub start: Instant,
    pub end: Instant,
}

/// Every step recorded so far, by pod uid.
#[derive(Debug, Default, Clone)]
pub struct Steps(Arc<Mutex<HashMap<String, Vec<Step>>>>);

impl Steps {
    fn push(&self, uid: String, step: Step) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid)
            .or_default()
            .push(step);
    }

    /// The steps of pod `uid`, each step's first occurrence only (a later sync of the same
    /// pod repeats some of them), in the order they began.
    pub fn of(&self, uid: &str) -> Vec<Step> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut firsts: Vec<Step> = Vec::new();
        let mut steps = all.get(uid).cloned().unwrap_or_default();
        steps.sort_by_key(|s| s.start);
        for s in steps {
            if !firsts.iter().any(|f| f.name == s.name) {
                firsts.push(s);
            }
        }
        firsts
    }
}

/// The steps recorded in this process from now on (the layer is installed once, as the
/// process's tracing subscriber; later calls return the same recorder).
pub fn recorder() -> Steps {
    static STEPS: OnceLock<Steps> = OnceLock::new();
    STEPS
        .get_or_init(|| {
            let steps = Steps::default();
            let layer =
                StepLayer { steps: steps.clone() }.with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.target() == rkube_api::POD_STARTUP_TRACE
                }));
            // another subscriber already set would only lose the breakdown, not the run
            if tracing_subscriber::registry().with(layer).try_init().is_err() {
                eprintln!("a tracing subscriber is already set: no startup breakdown");
            }
            steps
        })
        .clone()
}

struct StepLayer {
    steps: Steps,
}

/// What a span of a step knows until it closes.
struct Open {
    uid: String,
    start: Instant,
}

#[derive(Default)]
struct Uid(String);

impl Visit for Uid {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "pod_uid" {
            self.0 = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "pod_uid" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StepLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut uid = Uid::default();
        attrs.record(&mut uid);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Open {
                uid: uid.0,
                start: Instant::now(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut uid = Uid::default();
        values.record(&mut uid);
        if uid.0.is_empty() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<Open>() {
                open.uid = uid.0;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let name = span.name();
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        if !open.uid.is_empty() {
            let step = Step {
                name,
                start: open.start,
                end: Instant::now(),
            };
            self.steps.push(open.uid, step);
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // a delivery: the event's message is the step's name
        let mut uid = Uid::default();
        event.record(&mut uid);
        let mut message = Message::default();
        event.record(&mut message);
        let Some((name, _)) = STEPS.iter().find(|(n, _)| *n == message.0) else {
            return;
        };
        if uid.0.is_empty() {
            return;
        }
        let now = Instant::now();
        let step = Step {
            name,
            start: now,
            end: now,
        };
        self.steps.push(uid.0, step);
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// The steps of a pod's startup, in the order they happen, with what each one is (the
/// events are deliveries; `status_seen` is recorded by the benchmark's own watch).
pub const STEPS: &[(&str, &str)] = &[
    (
        "apiserver_write",
        "apiserver: create (admission, store write, fsync)",
    ),
    ("scheduler_received", "watch delivery to the scheduler"),
    ("schedule", "scheduler: filter and score"),
    ("bind", "scheduler: Bind call"),
    ("kubelet_received", "watch delivery to the kubelet"),
    ("adopt", "kubelet: worker start (lists containerd's containers)"),
    ("sandbox", "kubelet: sandbox (network, volumes, /etc files)"),
    ("netns_create", "network namespace created"),
    ("cni_add", "CNI ADD"),
    ("image_check", "kubelet: image check (pull policy)"),
    (
        "container_config",
        "kubelet: environment (Service list, env sources)",
    ),
    ("image_read", "runtime: image config read"),
    ("snapshot", "containerd: snapshot prepare"),
    ("container_create", "containerd: container create"),
    ("task_start", "containerd: task create + start"),
    ("status_write", "kubelet: status write"),
    ("status_seen", "Running seen by a watcher"),
];
