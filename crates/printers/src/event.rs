//! `get events`: LAST SEEN TYPE REASON OBJECT MESSAGE (wide adds
//! SUBOBJECT SOURCE FIRST SEEN COUNT NAME). Events have no NAME column by
//! default: what happened to which object is what people look for.

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::Event;

/// When the event was first and last seen, falling back as kubectl does
/// for events that set only some of the timestamps.
pub fn event_times(ev: &Event) -> (String, String) {
    let created = ev
        .metadata
        .as_ref()
        .map(|m| m.creation_timestamp.clone())
        .unwrap_or_default();
    let first = [&ev.first_timestamp, &ev.event_time, &created]
        .into_iter()
        .find(|t| !t.is_empty())
        .cloned()
        .unwrap_or_default();
    let last = if ev.last_timestamp.is_empty() {
        first.clone()
    } else {
        ev.last_timestamp.clone()
    };
    (first, last)
}

/// `pod/web-1`, the object an event is about.
pub fn event_object(ev: &Event) -> String {
    let io = ev.involved_object.clone().unwrap_or_default();
    let kind = io.kind.to_ascii_lowercase();
    if io.name.is_empty() {
        kind
    } else {
        format!("{kind}/{}", io.name)
    }
}

/// Who reported the event: `kubelet, node1`, or the reporting controller.
pub fn event_source(ev: &Event) -> String {
    let src = ev.source.clone().unwrap_or_default();
    let component = if src.component.is_empty() {
        ev.reporting_component.clone()
    } else {
        src.component
    };
    let host = if src.host.is_empty() {
        ev.reporting_instance.clone()
    } else {
        src.host
    };
    match (component.is_empty(), host.is_empty()) {
        (_, true) => component,
        (true, false) => host,
        (false, false) => format!("{component}, {host}"),
    }
}

impl TableRow for Event {
    const COLUMNS: &'static [Column] = &[
        Column::string("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
        Column::string("Type", "Type of this event (Normal, Warning)."),
        Column::string("Reason", "A short, machine understandable string that gives the reason for the transition into the object's current status."),
        Column::string("Object", "The object that this event is about."),
        Column::string("Subobject", "The part of the object the event is about.").wide(),
        Column::string("Source", "The component reporting this event.").wide(),
        Column::string("Message", "A human-readable description of the status of this operation."),
        Column::string("First Seen", "The time at which the event was first recorded.").wide(),
        Column::string("Count", "The number of times this event has occurred.").wide(),
        Column { priority: 1, ..Column::NAME },
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let (first, last) = event_times(self);
        let io = self.involved_object.clone().unwrap_or_default();
        vec![
            age(&last, now),
            self.r#type.clone(),
            self.reason.clone(),
            event_object(self),
            io.field_path,
            event_source(self),
            self.message.trim().to_string(),
            age(&first, now),
            self.count.max(1).to_string(),
            self.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_row() {
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let ev: Event = serde_yaml::from_str(
            "metadata: {name: web-1.17a, creationTimestamp: '2024-05-01T11:00:00Z'}\ninvolvedObject: {kind: Pod, name: web-1, namespace: default}\nreason: BackOff\nmessage: 'Back-off restarting failed container '\ntype: Warning\nsource: {component: kubelet, host: node1}\nfirstTimestamp: '2024-05-01T11:50:00Z'\nlastTimestamp: '2024-05-01T11:59:00Z'\ncount: 5\n",
        )
        .unwrap();
        let wide = ev.cells(true, now);
        assert_eq!(
            [&wide[..4], &wide[6..7]].concat(),
            [
                "60s",
                "Warning",
                "BackOff",
                "pod/web-1",
                "Back-off restarting failed container"
            ]
        );
        assert_eq!(wide[5], "kubelet, node1");
        assert_eq!(wide[7], "10m");
        assert_eq!(wide[8], "5");
    }

    #[test]
    fn missing_timestamps_fall_back() {
        let ev: Event =
            serde_yaml::from_str("metadata: {name: e, creationTimestamp: '2024-05-01T11:00:00Z'}\n").unwrap();
        assert_eq!(
            event_times(&ev),
            (
                "2024-05-01T11:00:00Z".to_string(),
                "2024-05-01T11:00:00Z".to_string()
            )
        );
    }
}
