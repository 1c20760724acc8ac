//! `Retry-After` (RFC 9110 section 10.2.3): delta-seconds or an HTTP-date, turned into a wait.

use std::time::Duration;

use jiff::Timestamp;
use jiff::fmt::rfc2822::DateTimeParser;
use jiff::tz::TimeZone;

static RFC2822: DateTimeParser = DateTimeParser::new();

/// The wait a `Retry-After` value asks for, counted from `now`; `None` if the value is neither
/// a number of seconds nor an HTTP-date. A date in the past asks for no wait. Huge numbers
/// saturate rather than fail, since the caller caps the wait anyway.
///
/// Dates are accepted in all three forms RFC 9110 tells recipients to accept: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37
/// GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) forms.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let date = parse_http_date(value)?;
    Some(
        now.duration_until(date)
            .try_into()
            .unwrap_or(Duration::ZERO),
    )
}

fn parse_http_date(value: &str) -> Option<Timestamp> {
    if let Ok(ts) = RFC2822.parse_timestamp(value) {
        return Some(ts);
    }
    // The obsolete forms differ from IMF-fixdate in separators only, and asctime pads the day
    // with a space, so compare with runs of spaces squeezed to one.
    let squeezed = value.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y"]
        .iter()
        .find_map(|format| {
            let datetime = jiff::fmt::strtime::parse(format, &squeezed)
                .ok()?
                .to_datetime()
                .ok()?;
            TimeZone::UTC.to_timestamp(datetime).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        // 1994-11-06T08:49:00Z: 37 s before the RFC's example date.
        "1994-11-06T08:49:00Z".parse().unwrap()
    }

    fn wait(value: &str) -> Option<Duration> {
        parse_retry_after(value, now())
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(wait("0"), Some(Duration::ZERO));
        assert_eq!(wait("120"), Some(Duration::from_secs(120)));
        assert_eq!(wait(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(wait("007"), Some(Duration::from_secs(7)));
        assert_eq!(
            wait("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn all_three_date_forms() {
        let expected = Some(Duration::from_secs(37));
        assert_eq!(wait("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(wait("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(wait("Sun Nov  6 08:49:37 1994"), expected);
        assert_eq!(wait("Sun Nov 6 08:49:37 1994"), expected);
    }

    #[test]
    fn past_dates_mean_now() {
        assert_eq!(wait("Sun, 06 Nov 1994 08:48:00 GMT"), Some(Duration::ZERO));
        assert_eq!(wait("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
    }

    #[test]
    fn far_dates_are_exact() {
        assert_eq!(
            wait("Mon, 07 Nov 1994 08:49:00 GMT"),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            "   ",
            "-5",
            "1.5",
            "+3",
            "5 s",
            "soon",
            "0x10",
            "Sun, 06 Nov 1994",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "2024-01-01T00:00:00Z",
        ] {
            assert_eq!(wait(bad), None, "{bad:?}");
        }
    }
}
