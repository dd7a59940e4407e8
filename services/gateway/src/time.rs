//! Dates and times as a Dane reads them: in Europe/Copenhagen, whatever the server's zone.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Europe::Copenhagen;

use crate::i18n::Lang;

const MONTHS_DA: [&str; 12] = [
    "januar",
    "februar",
    "marts",
    "april",
    "maj",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "december",
];
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `2026-12-15` (a date meant in Copenhagen) as `15. december 2026` / `15 December 2026`.
pub fn date(lang: Lang, iso: &str) -> String {
    match NaiveDate::parse_from_str(iso, "%Y-%m-%d") {
        Ok(d) => long_date(lang, d.day(), d.month0() as usize, d.year()),
        Err(_) => iso.to_string(),
    }
}

/// An RFC 3339 instant as a Copenhagen date and time: `15. december 2026 kl. 14.05`.
pub fn instant(lang: Lang, rfc3339: &str) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(rfc3339) else { return rfc3339.to_string() };
    let local = at.with_timezone(&Utc).with_timezone(&Copenhagen);
    let day = long_date(lang, local.day(), local.month0() as usize, local.year());
    match lang {
        Lang::Da => format!("{day} kl. {:02}.{:02}", local.hour(), local.minute()),
        Lang::En => format!("{day} at {:02}:{:02}", local.hour(), local.minute()),
    }
}

fn long_date(lang: Lang, day: u32, month0: usize, year: i32) -> String {
    match lang {
        Lang::Da => format!("{day}. {} {year}", MONTHS_DA[month0 % 12]),
        Lang::En => format!("{day} {} {year}", MONTHS_EN[month0 % 12]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_in_danish_and_english() {
        assert_eq!(date(Lang::Da, "2026-12-15"), "15. december 2026");
        assert_eq!(date(Lang::En, "2026-12-15"), "15 December 2026");
        assert_eq!(date(Lang::Da, "someday"), "someday");
    }

    #[test]
    fn instants_are_shown_in_copenhagen_summer_and_winter() {
        assert_eq!(instant(Lang::Da, "2026-07-01T10:05:00Z"), "1. juli 2026 kl. 12.05");
        assert_eq!(instant(Lang::En, "2026-12-31T23:30:00Z"), "1 January 2027 at 00:30");
    }
}
