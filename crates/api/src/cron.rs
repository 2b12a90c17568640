//! CronJob schedules: the standard five cron fields (minute, hour, day of month, month, day
//! of week) with lists, ranges, steps and month and weekday names, `?` for "any" in the day
//! fields, and the `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight` and
//! `@hourly` macros, as Kubernetes' CronJob controller reads them. When both day fields are
//! restricted, a day matches if either does (cron's rule, and Kubernetes').
//!
//! Times are wall-clock times (`NaiveDateTime`) in the schedule's time zone; turning them
//! into instants is the caller's business.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use std::str::FromStr;

/// A parsed schedule. Each field is a bit set of the values it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Whether the day-of-month and day-of-week fields were `*` (or `?`): then the other
    /// alone decides.
    dom_any: bool,
    dow_any: bool,
}

/// Why a schedule cannot be read; says which field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 7 is Sunday too, folded onto 0.
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, ScheduleError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            // Month names count from 1 (jan), weekday names from 0 (sun): from `min`.
            return Ok(i as u32 + self.min);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| ScheduleError(format!("{} {s:?} is not a number{}", self.name, self.hint())))?;
        if v < self.min || v > self.max {
            return Err(ScheduleError(format!(
                "{} {v} is out of range {}-{}",
                self.name, self.min, self.max
            )));
        }
        Ok(v)
    }

    fn hint(&self) -> String {
        if self.names.is_empty() {
            String::new()
        } else {
            format!(" or a name ({})", self.names.join(", "))
        }
    }

    /// `*`, `?`, `a`, `a-b`, `*/n`, `a-b/n`, `a/n`, and lists of them.
    fn parse(&self, spec: &str) -> Result<(u64, bool), ScheduleError> {
        let mut bits = 0u64;
        let any = spec == "*" || spec == "?";
        for part in spec.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        ScheduleError(format!("{} step {s:?} must be a positive number", self.name))
                    })?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (lo, hi) = if range == "*" || range == "?" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(ScheduleError(format!(
                        "{} range {range:?} ends before it starts",
                        self.name
                    )));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `a/n` means from a to the end, every n.
                (a, if part.contains('/') { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, any))
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let s = s.trim();
        let expanded = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(ScheduleError(format!(
                    "unknown macro {other:?}; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
                )))
            }
            other => other,
        };
        if expanded.contains("TZ=") {
            return Err(ScheduleError(
                "TZ= in the schedule is not supported; use spec.timeZone".into(),
            ));
        }
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(ScheduleError(format!(
                "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        };
        let (minutes, _) = MINUTE.parse(minute)?;
        let (hours, _) = HOUR.parse(hour)?;
        let (days_of_month, dom_any) = DAY_OF_MONTH.parse(dom)?;
        let (months, _) = MONTH.parse(month)?;
        let (mut days_of_week, dow_any) = DAY_OF_WEEK.parse(dow)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_any,
            dow_any,
        })
    }
}

impl Schedule {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.days_of_month & (1 << d.day()) != 0;
        let dow = self.days_of_week & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.dom_any, self.dow_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first time after `t` (strictly later, on a whole minute) that the schedule
    /// fires; `None` if it never does within five years (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = t.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let limit = t + Duration::days(5 * 366);
        while t < limit {
            if self.months & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_time(NaiveTime::MIN);
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn next(schedule: &str, from: &str) -> String {
        let s: Schedule = schedule.parse().unwrap();
        s.next_after(at(from))
            .unwrap()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        assert_eq!(next("*/15 * * * *", "2026-12-06 21:07"), "2026-12-06 21:15");
        assert_eq!(next("5 4 * * *", "2026-12-06 21:07"), "2026-12-07 04:05");
        assert_eq!(next("0 22 * * 1-5", "2026-12-05 12:00"), "2026-12-07 22:00"); // Sat -> Mon
        assert_eq!(next("0 0 1 jan,jul *", "2026-12-06 00:00"), "2027-01-01 00:00");
        assert_eq!(next("0 9 * * SUN", "2026-12-06 09:00"), "2026-12-13 09:00");
        assert_eq!(next("0 9 * * 7", "2026-12-06 08:00"), "2026-12-06 09:00"); // 7 is Sunday
        assert_eq!(next("10/20 * * * *", "2026-12-06 21:31"), "2026-12-06 21:50");
        assert_eq!(next("* * * * *", "2026-12-31 23:59"), "2027-01-01 00:00");
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 1st of the month or any Friday.
        assert_eq!(next("0 0 1 * 5", "2026-12-06 00:00"), "2026-12-11 00:00");
        assert_eq!(next("0 0 1 * 5", "2026-12-26 00:00"), "2027-01-01 00:00");
        // `?` is "any", so the other field alone decides.
        assert_eq!(next("0 0 ? * 5", "2026-12-06 00:00"), "2026-12-11 00:00");
    }

    #[test]
    fn macros() {
        assert_eq!(next("@hourly", "2026-12-06 21:07"), "2026-12-06 22:00");
        assert_eq!(next("@daily", "2026-12-06 21:07"), "2026-12-07 00:00");
        assert_eq!(next("@weekly", "2026-12-06 21:07"), "2026-12-13 00:00");
        assert_eq!(next("@monthly", "2026-12-06 21:07"), "2027-01-01 00:00");
        assert_eq!(next("@yearly", "2026-12-06 21:07"), "2027-01-01 00:00");
    }

    #[test]
    fn impossible_dates_never_fire() {
        let s: Schedule = "0 0 31 2 *".parse().unwrap();
        assert_eq!(s.next_after(at("2026-01-01 00:00")), None);
        // Leap days do.
        assert_eq!(next("0 0 29 2 *", "2026-01-01 00:00"), "2028-02-29 00:00");
    }

    #[test]
    fn errors_name_the_field() {
        for (bad, says) in [
            ("* * * *", "exactly 5 fields"),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("* 24 * * *", "hour 24 is out of range 0-23"),
            ("* * 0 * *", "day of month 0 is out of range 1-31"),
            ("* * * foo *", "month \"foo\" is not a number or a name"),
            ("*/0 * * * *", "step \"0\" must be a positive number"),
            ("5-1 * * * *", "ends before it starts"),
            ("@fortnightly", "unknown macro"),
            ("TZ=UTC 0 * * * *", "use spec.timeZone"),
        ] {
            let err = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
