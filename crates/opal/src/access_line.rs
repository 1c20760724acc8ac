//! Access-log lines in the text format, written without the general formatter's machinery.
//!
//! Every `/v1` request logs one `opal::access` event, so its formatting is on the hot path.
//! tracing-subscriber's `Full` format spends most of such an event on styling that a log file
//! never shows (each field name and `=` go through `nu_ansi_term` even with colours off) and on
//! its generic visitors: about 10 % of the instructions of a single-message publish
//! (docs/benchmarks.md). For access-log events outside any span and without colours this writes
//! the very same line directly (a test compares the two byte for byte), with the date and time
//! of day formatted once a second per thread; every other event goes to the `Full` format.

use std::cell::Cell;
use std::fmt;
use std::time::UNIX_EPOCH;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats access-log events itself and hands the rest to `full`.
pub(crate) struct AccessLines<F> {
    full: F,
}

impl<F> AccessLines<F> {
    /// `full` must be tracing-subscriber's `Full` format with its defaults (the system-time
    /// timer, level and target shown, no thread names, files or lines): that is the line this
    /// writes for access-log events.
    pub(crate) fn new(full: F) -> Self {
        AccessLines { full }
    }
}

impl<S, N, F> FormatEvent<S, N> for AccessLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != opal_server::ACCESS_LOG_TARGET
            || writer.has_ansi_escapes()
            || ctx.event_scope().is_some()
        {
            return self.full.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer)?;
        writer.write_char(' ')?;
        writer.write_str(level(meta.level()))?;
        writer.write_char(' ')?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The first second of the year 10000, from which `Full`'s timer writes years differently.
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The last second this thread wrote, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// The time as `Full`'s default timer writes it (`2026-11-27T23:20:49.123456Z`), or as that
/// timer itself writes it for clocks before 1970 or after 9999.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let since_epoch = match std::time::SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => since,
        _ => {
            if SystemTime.format_time(writer).is_err() {
                writer.write_str("<unknown time>")?;
            }
            return Ok(());
        }
    };
    let secs = since_epoch.as_secs();
    let date_time = SECOND.with(|second| match second.get() {
        (cached, text) if cached == secs => text,
        _ => {
            let text = date_time(secs);
            second.set((secs, text));
            text
        }
    });
    let mut fraction = *b".000000Z";
    let mut micros = since_epoch.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    // Both are ASCII digits and separators.
    writer.write_str(std::str::from_utf8(&date_time).map_err(|_| fmt::Error)?)?;
    writer.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a second since 1970 before the year 10000, by the civil-from-days
/// algorithm of Howard Hinnant's `chrono`-compatible date algorithms.
fn date_time(secs: u64) -> [u8; 19] {
    let days = secs / 86_400;
    let second_of_day = secs % 86_400;
    // Days since 0000-03-01, in 400-year eras of 146 097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, second_of_day / 3_600);
    put(14, 2, second_of_day / 60 % 60);
    put(17, 2, second_of_day % 60);
    text
}

/// The level as `Full` pads it: five characters, right-aligned.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// The fields as `Full` writes them without colours: the message alone, the others as
/// `name=value` (values in their `Debug` form, which is `Display` for `%` fields and quoted for
/// strings), separated by spaces. The message is written as it is, without the escaping `Full`
/// applies to messages: access-log messages are string literals.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Writes the separator and `name=` of a field that is not the message; `false` once
    /// writing failed.
    fn name(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        let name = field.name();
        self.result = self
            .result
            .and_then(|()| {
                self.writer
                    .write_str(name.strip_prefix("r#").unwrap_or(name))
            })
            .and_then(|()| self.writer.write_char('='));
        self.result.is_ok()
    }
}

// Integers and plain strings are written directly: through `write!` they cost most of a line.
impl Visit for Fields<'_, '_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.name(field) {
            let mut digits = [0_u8; 20];
            let mut at = digits.len();
            let mut rest = value;
            loop {
                at -= 1;
                digits[at] = b'0' + (rest % 10) as u8;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            // ASCII digits.
            let text = std::str::from_utf8(&digits[at..]).unwrap_or("0");
            self.result = self.writer.write_str(text);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            // What `Debug` writes for a string that needs no escape.
            if self.name(field) {
                self.result = self
                    .writer
                    .write_char('"')
                    .and_then(|()| self.writer.write_str(value))
                    .and_then(|()| self.writer.write_char('"'));
            }
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            if self.result.is_ok() {
                if !std::mem::take(&mut self.first) {
                    self.result = self.writer.write_char(' ');
                }
                self.result = self.result.and_then(|()| write!(self.writer, "{value:?}"));
            }
        } else if self.name(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opal_server::ACCESS_LOG_TARGET;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::Format;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// Access-log events as `access_log` emits them (both levels, optional fields present and
    /// absent, a string that needs quoting), an event of another target and one inside a span.
    fn emit_all() {
        let cn: Option<&str> = Some("a \"quoted\"\ncn");
        let none: Option<&str> = None;
        let latency_ms = 1.234_f64;
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method = %"POST",
            path = %"/v1/topics/orders/messages",
            status = 200_u16,
            latency_ms,
            request_id = %"0192f0e2-7d4c-7b1e-8f00-000000000001",
            principal = %"admin",
            client_cert = none.map(tracing::field::display),
            client_cn = none,
            "request"
        );
        tracing::error!(
            target: ACCESS_LOG_TARGET,
            method = %"GET",
            path = %"/v1/topics",
            status = 503_u16,
            latency_ms = 0.5_f64,
            request_id = %"-",
            principal = %"-",
            client_cert = Some(tracing::field::display("ab12")),
            client_cn = cn,
            "request failed"
        );
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            status = 0_u16,
            big = u64::MAX,
            client_cn = Some("Acme's CA (test) ~ 1"),
            unicode = Some("Zürich"),
            empty = "",
            "request"
        );
        tracing::info!(target: "opal::other", answer = 42, "something else");
        let span = tracing::info_span!(target: ACCESS_LOG_TARGET, "http", method = "PUT");
        span.in_scope(|| tracing::info!(target: ACCESS_LOG_TARGET, status = 204_u16, "request"));
    }

    fn lines_with<F>(format: F) -> Vec<String>
    where
        F: FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::DefaultFields,
            > + Send
            + Sync
            + 'static,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .with_writer(out.clone())
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit_all);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        // The timestamps differ (two runs); everything after them must not.
        text.lines()
            .map(|line| line.split_once(' ').unwrap().1.to_owned())
            .collect()
    }

    #[test]
    fn dates_and_times_are_those_of_the_calendar() {
        // Expected values from Python's `datetime` (UTC).
        let cases = [
            (0, "1970-01-01T00:00:00"),
            (68_169_600, "1972-02-29T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_164_800, "2024-02-29T00:00:00"),
            (1_798_761_599, "2026-12-31T23:59:59"),
            (1_798_761_600, "2027-01-01T00:00:00"),
            (4_107_542_400, "2100-03-01T00:00:00"),
            (YEAR_10000 - 1, "9999-12-31T23:59:59"),
        ];
        for (secs, expected) in cases {
            assert_eq!(
                std::str::from_utf8(&date_time(secs)).unwrap(),
                expected,
                "{secs}"
            );
        }
    }

    #[test]
    fn timestamps_have_the_full_formats_shape_and_follow_the_clock() {
        let mut full = String::new();
        SystemTime.format_time(&mut Writer::new(&mut full)).unwrap();
        let mut lean = String::new();
        write_timestamp(&mut Writer::new(&mut lean)).unwrap();
        let mut later = String::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        write_timestamp(&mut Writer::new(&mut later)).unwrap();
        assert_eq!(lean.len(), full.len(), "{lean} / {full}");
        let shape = |t: &str| t.bytes().map(|b| b.is_ascii_digit()).collect::<Vec<_>>();
        assert_eq!(shape(&lean), shape(&full), "{lean} / {full}");
        assert_eq!(
            lean.replace(char::is_numeric, "0"),
            full.replace(char::is_numeric, "0")
        );
        // Read just after the full format's clock, and just before another reading.
        assert!(lean >= full, "{full} then {lean}");
        assert!(later > lean, "{lean} then {later}");
        let second_of_day = |t: &str| {
            let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
            n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
        };
        let apart = (second_of_day(&lean) - second_of_day(&full)).rem_euclid(86_400);
        assert!(apart <= 1, "{full} then {lean}");
    }

    #[test]
    fn access_lines_are_byte_for_byte_those_of_the_full_format() {
        let full = lines_with(Format::default());
        let lean = lines_with(AccessLines::new(Format::default()));
        assert_eq!(full.len(), 5, "{full:#?}");
        assert_eq!(lean, full);
        assert!(
            full[0].starts_with(" INFO opal::access: request method=POST"),
            "{}",
            full[0]
        );
        assert!(
            full[1].contains(r#"client_cn="a \"quoted\"\ncn""#),
            "{}",
            full[1]
        );
    }
}
