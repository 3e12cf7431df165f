//! The package changelog, read from `rpm/changelog` in spec-file syntax.
//!
//! `* Mon Nov 23 2026 Name <email> - VERSION-RELEASE` starts an entry, the lines under it are
//! its text. Dates are checked as rpmbuild checks them (a wrong weekday is an error) and stored
//! at noon UTC, so the header is the same wherever the package is built.

use std::path::Path;

use crate::{Error, error::read_text};

/// One changelog entry, newest first in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Seconds since the epoch, noon UTC of the entry's date.
    pub time: u32,
    /// `Name <email> - VERSION-RELEASE`.
    pub author: String,
    pub text: String,
}

/// Reads and parses the changelog file.
pub fn load(path: &Path) -> Result<Vec<Entry>, Error> {
    parse(&read_text(path)?).map_err(|(line, reason)| Error::Syntax {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// Parses changelog text; an error carries its 1-based line number.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(header) = line.strip_prefix("* ") {
            let words: Vec<&str> = header.splitn(5, ' ').collect();
            let [weekday, month, day, year, author] = words[..] else {
                return Err((
                    number,
                    "expected `* Www Mmm DD YYYY Name <email> - V-R`".into(),
                ));
            };
            let time = noon_utc(weekday, month, day, year).map_err(|e| (number, e))?;
            if !author.contains('<') || !author.contains("> - ") {
                return Err((
                    number,
                    "the author needs `<email> - VERSION-RELEASE`".into(),
                ));
            }
            entries.push(Entry {
                time,
                author: author.to_owned(),
                text: String::new(),
            });
        } else if let Some(entry) = entries.last_mut() {
            if !line.trim().is_empty() {
                if !entry.text.is_empty() {
                    entry.text.push('\n');
                }
                entry.text.push_str(line.trim_end());
            }
        } else if !line.trim().is_empty() {
            return Err((number, "text before the first `* ` entry".into()));
        }
    }
    if entries.is_empty() {
        return Err((1, "no entry".into()));
    }
    if let Some(empty) = entries.iter().position(|e| e.text.is_empty()) {
        return Err((1, format!("entry {} has no text", empty + 1)));
    }
    Ok(entries)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

fn noon_utc(weekday: &str, month: &str, day: &str, year: &str) -> Result<u32, String> {
    let month = MONTHS
        .iter()
        .position(|m| *m == month)
        .ok_or(format!("unknown month {month:?}"))?;
    let day: u32 = day.parse().map_err(|_| format!("bad day {day:?}"))?;
    let year: i64 = year.parse().map_err(|_| format!("bad year {year:?}"))?;
    let month = month as u32 + 1;
    let days = days_from_civil(year, month, day);
    if !(1..=31).contains(&day) || civil_from_days(days) != (year, month, day) {
        return Err(format!(
            "no such date: {day} {} {year}",
            MONTHS[month as usize - 1]
        ));
    }
    let expected = WEEKDAYS[days.rem_euclid(7) as usize];
    if weekday != expected {
        return Err(format!("{weekday} is wrong: that day is a {expected}"));
    }
    u32::try_from(days * 86_400 + 43_200).map_err(|_| format!("year {year} is out of range"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`], to reject dates such as 31 Feb.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_their_text() {
        let text = "* Mon Nov 23 2026 A B <a@example.com> - 0.2.0-1\n- two\n  more\n\n\
                    * Thu Jan 01 1970 A B <a@example.com> - 0.1.0-1\n- one\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].author, "A B <a@example.com> - 0.2.0-1");
        assert_eq!(entries[0].text, "- two\n  more");
        assert_eq!(entries[0].time, 1_795_435_200);
        assert_eq!(entries[1].time, 43_200);
    }

    #[test]
    fn dates_are_checked_like_rpmbuild() {
        assert_eq!(noon_utc("Mon", "Nov", "23", "2026"), Ok(1_795_435_200));
        let wrong = noon_utc("Tue", "Nov", "23", "2026").unwrap_err();
        assert!(wrong.contains("that day is a Mon"), "{wrong}");
        assert!(noon_utc("Mon", "Feb", "30", "2026").is_err());
        assert!(noon_utc("Mon", "Nox", "23", "2026").is_err());
        assert_eq!(noon_utc("Thu", "Feb", "29", "2024"), Ok(1_709_208_000));
    }

    #[test]
    fn malformed_changelogs_name_the_line() {
        assert_eq!(parse("").unwrap_err().0, 1);
        assert_eq!(parse("- text first\n").unwrap_err().0, 1);
        assert_eq!(parse("* Mon Nov 23 2026 nobody\n- x\n").unwrap_err().0, 1);
        assert_eq!(parse("\n* Mon Nov 23 2026\n").unwrap_err().0, 2);
        assert!(
            parse("* Mon Nov 23 2026 A <a@b> - 1-1\n").is_err(),
            "an entry needs text"
        );
    }

    #[test]
    fn the_shipped_changelog_parses_and_its_newest_entry_is_this_version() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rpm/changelog");
        let entries = load(&path).unwrap();
        let version = crate::metadata::VERSION;
        assert!(
            entries[0].author.ends_with(&format!("- {version}-1")),
            "{}",
            entries[0].author
        );
    }
}
