//! Container log files in the CRI format Kubernetes uses, one record a line:
//!
//! ```text
//! 2026-11-28T01:02:03.456789012Z stdout F a whole line
//! 2026-11-28T01:02:03.556789012Z stderr P the start of a line that
//! 2026-11-28T01:02:03.656789012Z stderr F  was written in two parts
//! ```
//!
//! `F` ends a line, `P` is a piece of one whose rest follows (a very long line, or output
//! that stopped without a newline). [`log_driver`](crate::log_driver) writes these files;
//! the kubelet's `Logs` service reads them with [`render`].
//!
//! Files written before the log driver existed (or when it could not be used) hold the raw
//! streams; [`Format::detect`] tells them apart and they are served line by line without
//! times.

use std::time::SystemTime;

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// As written (RFC 3339 with nanoseconds); `None` for raw files.
    pub timestamp: Option<&'a str>,
    pub time: Option<SystemTime>,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Formats `t` as the CRI log does (RFC 3339, nanoseconds, UTC).
pub fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// One record line, newline included.
pub fn format_record(time: SystemTime, stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(content.len() + 48);
    line.extend_from_slice(timestamp(time).as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_bytes());
    line.extend_from_slice(if partial { b" P " } else { b" F " });
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// Parses one CRI record (without its newline).
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    // Tags are `:`-separated; the first says full or partial.
    let partial = match tag.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let time = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(Record {
        timestamp: Some(ts),
        time: Some(time.into()),
        stream,
        partial,
        content,
    })
}

/// How a log file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    Raw,
}

impl Format {
    /// CRI when the first complete line is a CRI record, raw when it is not; `None` until
    /// there is a complete line (the driver writes whole records, which end in a newline).
    pub fn detect(data: &[u8]) -> Option<Format> {
        let end = data.iter().position(|b| *b == b'\n')?;
        Some(if parse_record(&data[..end]).is_some() {
            Format::Cri
        } else {
            Format::Raw
        })
    }
}

/// The complete records in `data` and how many bytes they span (a CRI record still being
/// written, without its newline yet, is left for later).
pub fn records(data: &[u8], format: Format) -> (Vec<Record<'_>>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(len) = data[start..].iter().position(|b| *b == b'\n') {
        let line = &data[start..start + len];
        match format {
            Format::Cri => {
                // A line that is not a record (a torn write) is skipped, not fatal.
                if let Some(r) = parse_record(line) {
                    out.push(r);
                }
            }
            Format::Raw => out.push(Record {
                timestamp: None,
                time: None,
                stream: "stdout",
                partial: false,
                content: line,
            }),
        }
        start += len + 1;
    }
    // A raw file's last line may never get its newline; serve it as a partial.
    if format == Format::Raw && start < data.len() {
        out.push(Record {
            timestamp: None,
            time: None,
            stream: "stdout",
            partial: true,
            content: &data[start..],
        });
        start = data.len();
    }
    (out, start)
}

/// What the user asked of `rkubectl logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Prefix each record with its time.
    pub timestamps: bool,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only the last N records.
    pub tail: Option<usize>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<usize>,
}

/// Renders `records` as the user sees them: contents only (P records joined to the next),
/// with `timestamps` the time of a line's first record before it, as Kubernetes' kubelet
/// does. `line_start` says whether the output so far ended a line, and is kept up to date
/// across calls (follow). Applies `since` and `tail`; `limit_bytes` is the caller's (it
/// spans follow reads).
pub fn render(records: &[Record<'_>], options: &LogOptions, line_start: &mut bool) -> Vec<u8> {
    let selected: Vec<&Record<'_>> = records
        .iter()
        .filter(|r| match (options.since, r.time) {
            (Some(since), Some(t)) => t >= since,
            _ => true,
        })
        .collect();
    let skip = options
        .tail
        .map(|n| selected.len().saturating_sub(n))
        .unwrap_or(0);
    let mut out = Vec::new();
    for r in &selected[skip..] {
        if options.timestamps && *line_start {
            if let Some(ts) = r.timestamp {
                out.extend_from_slice(ts.as_bytes());
                out.push(b' ');
            }
        }
        out.extend_from_slice(r.content);
        if !r.partial {
            out.push(b'\n');
        }
        *line_start = !r.partial;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000 + secs, 5)
    }

    fn file() -> Vec<u8> {
        let mut data = Vec::new();
        data.extend(format_record(at(0), "stdout", false, b"one"));
        data.extend(format_record(at(1), "stderr", true, b"tw"));
        data.extend(format_record(at(2), "stderr", false, b"o"));
        data.extend(format_record(at(3), "stdout", false, b""));
        data.extend(format_record(at(4), "stdout", false, b"four has  spaces"));
        data
    }

    #[test]
    fn records_round_trip_and_render_like_kubectl() {
        let data = file();
        assert_eq!(Format::detect(&data), Some(Format::Cri));
        let (recs, used) = records(&data, Format::Cri);
        assert_eq!(used, data.len());
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[1].stream, "stderr");
        assert!(recs[1].partial);
        assert_eq!(recs[0].time, Some(at(0)));
        let all = render(&recs, &LogOptions::default(), &mut true);
        assert_eq!(all, b"one\ntwo\n\nfour has  spaces\n");
        let tail = render(
            &recs,
            &LogOptions {
                tail: Some(2),
                ..Default::default()
            },
            &mut true,
        );
        assert_eq!(tail, b"\nfour has  spaces\n");
        let since = render(
            &recs,
            &LogOptions {
                since: Some(at(2)),
                ..Default::default()
            },
            &mut true,
        );
        assert_eq!(since, b"o\n\nfour has  spaces\n");
        let stamped = String::from_utf8(render(
            &recs,
            &LogOptions {
                timestamps: true,
                tail: Some(1),
                ..Default::default()
            },
            &mut true,
        ))
        .unwrap();
        assert_eq!(stamped, format!("{} four has  spaces\n", timestamp(at(4))));
        assert!(
            stamped.starts_with("2027-01-15T08:00:04.000000005Z "),
            "{stamped}"
        );
        // A line in two records has one time, its first record's.
        let mut line_start = true;
        let both = String::from_utf8(render(
            &recs[..3],
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
            &mut line_start,
        ))
        .unwrap();
        assert_eq!(
            both,
            format!("{} one\n{} two\n", timestamp(at(0)), timestamp(at(1)))
        );
        assert!(line_start);
        let first_half = render(
            &recs[1..2],
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
            &mut line_start,
        );
        assert!(!line_start && first_half.ends_with(b" tw"));
    }

    #[test]
    fn a_record_being_written_waits_and_raw_files_are_lines() {
        let mut data = file();
        let complete = data.len();
        data.extend_from_slice(b"2027-01-15T08:00:09.000000005Z stdout F half");
        let (recs, used) = records(&data, Format::Cri);
        assert_eq!((recs.len(), used), (5, complete));

        let raw = b"hello\nworld\nno newline";
        assert_eq!(Format::detect(raw), Some(Format::Raw));
        assert_eq!(Format::detect(b"no newline yet"), None);
        let (recs, used) = records(raw, Format::Raw);
        assert_eq!(used, raw.len());
        let out = render(
            &recs,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
            &mut true,
        );
        assert_eq!(out, raw);
        assert_eq!(parse_record(b"2027-01-15T08:00:09Z stdin F x"), None);
        assert_eq!(parse_record(b"yesterday stdout F x"), None);
        assert!(parse_record(b"2027-01-15T08:00:09Z stdout F").is_some_and(|r| r.content.is_empty()));
    }
}
