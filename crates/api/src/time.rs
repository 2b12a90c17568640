//! Times as Kubernetes writes them in objects (`metav1.Time`): RFC 3339 in
//! UTC with whole seconds, e.g. `2026-11-27T22:25:46Z`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, as an object field.
pub fn now() -> String {
    format(Utc::now())
}

/// `t` as an object field.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn whole_seconds_in_utc() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-27T23:25:46.789+01:00").unwrap();
        assert_eq!(super::format(t.into()), "2026-11-27T22:25:46Z");
    }
}
