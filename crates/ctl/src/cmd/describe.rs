//! `rkubectl describe KIND [NAME...]`: an object for people to read, then
//! the Events that involve it (`Type Reason Age From Message`), which is
//! usually where the answer to "why is it not running" is.
//!
//! Every kind is shown by one describer, kubectl's generic one: identity
//! first, then metadata, spec and status as indented `Field Name: value`
//! lines. Kind-specific describers can replace it per kind later without
//! touching the Events part.

use crate::args::parse_targets;
use crate::cmd::Context;
use crate::error::CtlError;
use crate::printers::{age, human_duration, parse_time};
use crate::server::ApiServer;
use chrono::{DateTime, Utc};
use rkube_api::core::v1::Event;
use rkube_api::DynObject;
use serde_json::Value;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// `KIND [NAME...]` or `KIND/NAME...`; without names, every object of
    /// the kind in the namespace.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Describe the objects matching this label selector.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Describe objects in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

pub async fn run(ctx: &Context, args: &DescribeArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let targets = parse_targets(&args.targets)?;
    let server = ctx.connect().await?;
    let namespace = if args.all_namespaces {
        String::new()
    } else {
        ctx.namespace.clone()
    };
    let mut objects = Vec::new();
    let mut failed = false;
    for t in &targets {
        if t.names.is_empty() {
            let selector = args.selector.clone().unwrap_or_default();
            objects.extend(server.list(t.info, &namespace, &selector, "").await?.items);
        } else {
            for name in &t.names {
                match server.get(t.info, &ctx.namespace, name).await {
                    Ok(obj) => objects.push(obj),
                    Err(e @ CtlError::Connect { .. }) => return Err(e),
                    Err(e) => {
                        failed = true;
                        eprintln!("{e}");
                    }
                }
            }
        }
    }
    if objects.is_empty() && !failed {
        if targets.iter().any(|t| t.info.namespaced) && !args.all_namespaces {
            eprintln!("No resources found in {} namespace.", ctx.namespace);
        } else {
            eprintln!("No resources found");
        }
    }
    let now = Utc::now();
    for (i, obj) in objects.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
            writeln!(out)?;
        }
        let events = match events_for(&server, obj).await {
            Ok(events) => Some(events),
            Err(e @ CtlError::Connect { .. }) => return Err(e),
            Err(e) => {
                // the object is still worth showing without its events
                eprintln!("warning: cannot list events of {}: {e}", obj.display_name());
                None
            }
        };
        let json = obj.to_json().map_err(CtlError::usage)?;
        write!(out, "{}", describe(&json, events.as_deref(), now))?;
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}

/// The events about an object, oldest first.
async fn events_for(server: &ApiServer, obj: &DynObject) -> Result<Vec<Event>, CtlError> {
    let events_info = rkube_api::ResourceInfo::lookup("events")
        .ok_or_else(|| CtlError::usage("this client has no Event kind"))?;
    let mut selector = format!(
        "involvedObject.name={},involvedObject.kind={}",
        obj.name, obj.info.kind
    );
    // events about cluster-scoped objects live in any namespace
    let namespace = if obj.info.namespaced {
        selector.push_str(&format!(",involvedObject.namespace={}", obj.namespace));
        obj.namespace.as_str()
    } else {
        ""
    };
    let list = server.list(events_info, namespace, "", &selector).await?;
    let mut events: Vec<Event> = list.items.iter().filter_map(|o| o.decode().ok()).collect();
    events.sort_by_key(|e| {
        let (_, last) = crate::printers::event_times(e);
        parse_time(&last)
    });
    Ok(events)
}

/// The whole description of one object; `events` None when they could
/// not be listed.
pub fn describe(obj: &Value, events: Option<&[Event]>, now: DateTime<Utc>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    lines.push(format!("Name:\t{}", text(meta.get("name"))));
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
        lines.push(format!("Namespace:\t{ns}"));
    }
    push_map_lines(&mut lines, "Labels:", meta.get("labels"));
    push_map_lines(&mut lines, "Annotations:", meta.get("annotations"));
    lines.push(format!("API Version:\t{}", text(obj.get("apiVersion"))));
    lines.push(format!("Kind:\t{}", text(obj.get("kind"))));

    if let Value::Object(map) = obj {
        let mut rest_meta = meta.as_object().cloned().unwrap_or_default();
        for k in ["name", "namespace", "labels", "annotations"] {
            rest_meta.remove(k);
        }
        let mut fields: Vec<(String, Value)> = map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rest_meta.is_empty() {
            fields.push(("metadata".into(), Value::Object(rest_meta)));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &fields {
            push_field(&mut lines, 0, k, v, false);
        }
    }

    let mut text = lines.join("\n");
    text.push('\n');
    // the events are a table of their own, aligned apart from the fields
    let mut lines: Vec<String> = Vec::new();
    match events {
        None => lines.push("Events:\t<unknown>".into()),
        Some([]) => lines.push("Events:\t<none>".into()),
        Some(events) => {
            lines.push("Events:".into());
            lines.push("  Type\tReason\tAge\tFrom\tMessage".into());
            lines.push("  ----\t------\t----\t----\t-------".into());
            for e in events {
                lines.push(format!(
                    "  {}\t{}\t{}\t{}\t{}",
                    e.r#type,
                    e.reason,
                    event_age(e, now),
                    crate::printers::event_source(e),
                    e.message.trim()
                ));
            }
        }
    }
    let mut events_text = lines.join("\n");
    events_text.push('\n');
    tabwrite(&text, 2) + &tabwrite(&events_text, 2)
}

/// `10s`, or `3m (x5 over 10m)` for an event seen several times.
fn event_age(e: &Event, now: DateTime<Utc>) -> String {
    let (first, last) = crate::printers::event_times(e);
    let last_age = age(&last, now);
    if e.count > 1 {
        let over = parse_time(&first)
            .map(|t| human_duration((now - t).num_seconds()))
            .unwrap_or_else(|| "<unknown>".into());
        format!("{last_age} (x{} over {over})", e.count)
    } else {
        last_age
    }
}

/// `Labels:  a=b` with further pairs aligned under the first, or `<none>`.
fn push_map_lines(lines: &mut Vec<String>, title: &str, map: Option<&Value>) {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        lines.push(format!("{title}\t<none>"));
    }
    for (i, p) in pairs.iter().enumerate() {
        if i == 0 {
            lines.push(format!("{title}\t{p}"));
        } else {
            lines.push(format!("\t{p}"));
        }
    }
}

/// Fields whose keys are data (label keys, config keys, resource names),
/// printed verbatim instead of as field names.
const DATA_MAPS: &[&str] = &[
    "labels",
    "annotations",
    "matchLabels",
    "selector",
    "nodeSelector",
    "data",
    "binaryData",
    "stringData",
    "limits",
    "requests",
    "capacity",
    "allocatable",
];

fn push_field(lines: &mut Vec<String>, level: usize, key: &str, value: &Value, verbatim: bool) {
    let indent = "  ".repeat(level);
    let label = if verbatim {
        key.to_string()
    } else {
        field_label(key)
    };
    match value {
        Value::Object(map) => {
            lines.push(format!("{indent}{label}:"));
            // `selector` is a plain map on a Service but a structure on a
            // Deployment: only maps of plain values hold data keys
            let data = DATA_MAPS.contains(&key) && map.values().all(|v| !v.is_object() && !v.is_array());
            for (k, v) in map {
                push_field(lines, level + 1, k, v, data);
            }
        }
        Value::Array(items) => {
            lines.push(format!("{indent}{label}:"));
            let child_indent = "  ".repeat(level + 1);
            for item in items {
                match item {
                    Value::Object(map) => {
                        for (k, v) in map {
                            push_field(lines, level + 1, k, v, false);
                        }
                    }
                    other => lines.push(format!("{child_indent}{}", scalar(other))),
                }
            }
        }
        other => lines.push(format!("{indent}{label}:\t{}", scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `creationTimestamp` → `Creation Timestamp`, `podIP` → `Pod IP`,
/// `apiVersion` → `API Version`, as kubectl labels fields.
pub fn field_label(field: &str) -> String {
    if field.chars().any(|c| !c.is_ascii_alphabetic() && c != '-') {
        return field.to_string();
    }
    const ACRONYMS: &[&str] = &[
        "API", "URL", "UID", "IP", "CIDR", "DNS", "TCP", "UDP", "HTTP", "ID",
    ];
    let chars: Vec<char> = field.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
        // a word starts at lower→Upper, and at the last capital of an
        // acronym followed by lowercase (`HTTPGet` → HTTP Get)
        // (but `IPs` stays one word: a plural acronym)
        let plural_tail = i + 2 == chars.len() && chars[i + 1] == 's';
        if c.is_ascii_uppercase()
            && !current.is_empty()
            && (prev_lower || (prev_upper && next_lower && !plural_tail))
        {
            words.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
        .into_iter()
        .map(|w| {
            let upper = w.to_ascii_uppercase();
            let singular = w.strip_suffix('s').map(str::to_ascii_uppercase);
            if ACRONYMS.contains(&upper.as_str()) {
                upper
            } else if let Some(acronym) = singular.filter(|s| ACRONYMS.contains(&s.as_str())) {
                // `podIPs` reads as `Pod IPs`
                format!("{acronym}s")
            } else {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Aligns tab-separated cells the way Go's tabwriter does: a column is
/// aligned across each run of consecutive lines that have a cell in it.
pub fn tabwrite(text: &str, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|l| vec![0; l.len()]).collect();
    fn format(
        lines: &[Vec<&str>],
        widths: &mut [Vec<usize>],
        start: usize,
        end: usize,
        col: usize,
        padding: usize,
    ) {
        let mut i = start;
        while i < end {
            if lines[i].len() > col + 1 {
                let mut j = i;
                let mut w = 0;
                while j < end && lines[j].len() > col + 1 {
                    w = w.max(lines[j][col].chars().count());
                    j += 1;
                }
                for row in widths.iter_mut().take(j).skip(i) {
                    row[col] = w + padding;
                }
                format(lines, widths, i, j, col + 1, padding);
                i = j;
            } else {
                i += 1;
            }
        }
    }
    format(&lines, &mut widths, 0, lines.len(), 0, padding);
    let mut out = String::new();
    for (cells, ws) in lines.iter().zip(&widths) {
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.extend(std::iter::repeat_n(
                    ' ',
                    ws[i].saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_read_like_kubectl() {
        assert_eq!(field_label("creationTimestamp"), "Creation Timestamp");
        assert_eq!(field_label("podIP"), "Pod IP");
        assert_eq!(field_label("podIPs"), "Pod IPs");
        assert_eq!(field_label("apiVersion"), "API Version");
        assert_eq!(field_label("httpGet"), "HTTP Get");
        assert_eq!(field_label("clusterIP"), "Cluster IP");
        assert_eq!(field_label("replicas"), "Replicas");
        assert_eq!(field_label("dnsPolicy"), "DNS Policy");
        assert_eq!(field_label("hostIPs"), "Host IPs");
        assert_eq!(field_label("app.kubernetes.io/name"), "app.kubernetes.io/name");
    }

    #[test]
    fn tabwriter_aligns_runs_of_lines() {
        assert_eq!(
            tabwrite("a:\tx\nlonger:\ty\nBlock:\n  c:\tz\n", 2),
            "a:       x\nlonger:  y\nBlock:\n  c:  z\n"
        );
    }

    #[test]
    fn description_with_events() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u1",
                         "labels": {"app": "web", "tier": "fe"}, "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5"}
        });
        let ev: Event = serde_yaml::from_str(
            "metadata: {name: e1}\ninvolvedObject: {kind: Pod, name: web-1, namespace: default}\nreason: BackOff\nmessage: Back-off restarting failed container\ntype: Warning\nsource: {component: kubelet, host: n1}\nfirstTimestamp: '2024-05-01T11:50:00Z'\nlastTimestamp: '2024-05-01T11:59:00Z'\ncount: 5\n",
        )
        .unwrap();
        let text = describe(&obj, Some(&[ev]), now);
        let expected = "\
Name:         web-1
Namespace:    default
Labels:       app=web
              tier=fe
Annotations:  <none>
API Version:  v1
Kind:         Pod
Metadata:
  Creation Timestamp:  2024-05-01T11:00:00Z
  UID:                 u1
Spec:
  Containers:
    Image:    nginx:1.25
    Name:     nginx
  Node Name:  n1
Status:
  Phase:   Running
  Pod IP:  10.244.1.5
Events:
  Type     Reason   Age                From         Message
  ----     ------   ----               ----         -------
  Warning  BackOff  60s (x5 over 10m)  kubelet, n1  Back-off restarting failed container
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn no_events_says_none() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
        let text = describe(&obj, Some(&[]), now);
        assert!(text.ends_with("Kind:         Node\nEvents:  <none>\n"), "{text}");
        assert!(!text.contains("Namespace:"), "{text}");
    }
}
