//! Hearing dates are meant in Copenhagen; transitions are computed in UTC.

use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::Copenhagen;

/// The instant a Copenhagen calendar day begins.
pub fn start_of_day(date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    match Copenhagen.from_local_datetime(&midnight) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        // Denmark never skips or repeats midnight today, but a future rule might.
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => Copenhagen.from_utc_datetime(&midnight).with_timezone(&Utc),
    }
}

/// A hearing becomes active when its start date begins.
pub fn opens_at(start_date: NaiveDate) -> DateTime<Utc> {
    start_of_day(start_date)
}

/// Responses are accepted through the whole deadline day; it closes when the next day begins.
pub fn closes_at(deadline: NaiveDate) -> DateTime<Utc> {
    start_of_day(deadline.checked_add_days(Days::new(1)).unwrap_or(deadline))
}

/// Today's date in Copenhagen.
pub fn today(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&Copenhagen).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn winter_and_summer_time() {
        assert_eq!(opens_at(date("2026-01-15")).to_rfc3339(), "2026-01-14T23:00:00+00:00");
        assert_eq!(opens_at(date("2026-07-15")).to_rfc3339(), "2026-07-14T22:00:00+00:00");
    }

    #[test]
    fn the_deadline_day_is_included_across_a_dst_change() {
        // Summer time ends in the night to 2026-10-25: that day is 25 hours long.
        assert_eq!(closes_at(date("2026-10-24")).to_rfc3339(), "2026-10-24T22:00:00+00:00");
        assert_eq!(closes_at(date("2026-10-25")).to_rfc3339(), "2026-10-25T23:00:00+00:00");
    }

    #[test]
    fn today_is_copenhagen_today() {
        let late_utc = DateTime::parse_from_rfc3339("2026-06-30T22:30:00Z").expect("t").with_timezone(&Utc);
        assert_eq!(today(late_utc), date("2026-07-01"));
    }
}
