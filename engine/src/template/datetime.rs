//! Dates and times as Ansible's templates see them: the `now()` global, the
//! `strftime` and `to_datetime` filters, and the datetime object they return.
//!
//! Ansible formats with Python, whose `strftime` is C's (glibc's) plus its own
//! `%f`, `%z` and `%Z`; `to_datetime` is Python's `strptime`, which fills the
//! fields a format leaves out from 1900-01-01 00:00:00. chrono reads and writes
//! most codes the same way; the differences are handled here.
//!
//! A datetime prints like Python's `str()` (`2016-08-14 20:00:12`), turns into
//! JSON as `isoformat()` (`2016-08-14T20:00:12`), compares chronologically and
//! has Python's attributes (`year`, `month`... `microsecond`) and methods
//! (`strftime`, `isoformat`, `timestamp`, `weekday`, `isoweekday`).
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{Datelike, Local, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use minijinja::value::{DynObject, Kwargs, Object, ObjectRepr};
use minijinja::{Environment, Error, ErrorKind, State, Value};

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// A naive (time-zone-less) Python `datetime.datetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PyDateTime(pub NaiveDateTime);

impl PyDateTime {
    /// Python's `isoformat()`.
    pub(crate) fn isoformat(&self) -> String {
        self.python_str('T')
    }

    fn python_str(&self, sep: char) -> String {
        let dt = &self.0;
        let micro = dt.nanosecond() / 1000;
        let base = dt.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string();
        if micro == 0 {
            base
        } else {
            format!("{base}.{micro:06}")
        }
    }
}

impl fmt::Display for PyDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.python_str(' '))
    }
}

impl Object for PyDateTime {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let d = &self.0;
        Some(Value::from(match key.as_str()? {
            "year" => d.year() as i64,
            "month" => d.month() as i64,
            "day" => d.day() as i64,
            "hour" => d.hour() as i64,
            "minute" => d.minute() as i64,
            "second" => d.second() as i64,
            "microsecond" => (d.nanosecond() / 1000) as i64,
            _ => return None,
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let d = &self.0;
        match method {
            "strftime" => {
                let fmt = args
                    .first()
                    .and_then(Value::as_str)
                    .ok_or_else(|| err("strftime() needs a format string"))?;
                Ok(Value::from(py_strftime(d, fmt, None)))
            }
            "isoformat" => Ok(Value::from(self.isoformat())),
            // A naive datetime is local time to Python.
            "timestamp" => {
                let local = Local
                    .from_local_datetime(d)
                    .earliest()
                    .ok_or_else(|| err("the datetime does not exist in local time"))?;
                Ok(Value::from(
                    local.timestamp() as f64 + f64::from(d.nanosecond() / 1000) / 1e6,
                ))
            }
            "weekday" => Ok(Value::from(d.weekday().num_days_from_monday())),
            "isoweekday" => Ok(Value::from(d.weekday().number_from_monday())),
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("datetime has no method named {method}"),
            )),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        Self: Sized + 'static,
    {
        fmt::Display::fmt(&**self, f)
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<std::cmp::Ordering> {
        other.downcast_ref::<PyDateTime>().map(|o| self.0.cmp(&o.0))
    }
}

/// The datetime inside `v`, if it is one.
pub(crate) fn as_datetime(v: &Value) -> Option<PyDateTime> {
    v.downcast_object_ref::<PyDateTime>().copied()
}

/// Python's `strftime` of `dt`. `zone` is the UTC offset in seconds and the
/// zone name for `%z`/`%Z`; a naive datetime (None) prints both as nothing.
pub(crate) fn py_strftime(dt: &NaiveDateTime, fmt: &str, zone: Option<(i32, &str)>) -> String {
    let mut out = String::new();
    let mut chars = fmt.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // A directive: `%`, optional glibc flags (`-`, `_`, `0`, `^`, `#`),
        // optional width, then the code.
        let mut end = i + 1;
        while let Some(&(j, f)) = chars.peek() {
            if "-_0^#".contains(f) || f.is_ascii_digit() {
                chars.next();
                end = j + f.len_utf8();
            } else {
                break;
            }
        }
        let Some((j, code)) = chars.next() else {
            out.push_str(&fmt[i..]);
            break;
        };
        let spec = &fmt[i..j + code.len_utf8()];
        let flags = &fmt[i + 1..end];
        match code {
            '%' => out.push('%'),
            'f' => out.push_str(&format!("{:06}", dt.nanosecond() / 1000)),
            'z' => {
                if let Some((off, _)) = zone {
                    let sign = if off < 0 { '-' } else { '+' };
                    let a = off.abs();
                    out.push_str(&format!("{sign}{:02}{:02}", a / 3600, a % 3600 / 60));
                }
            }
            'Z' => {
                if let Some((_, name)) = zone {
                    out.push_str(name);
                }
            }
            // `%s` is glibc's seconds since the epoch, of local time.
            's' => {
                let off = zone.map_or(0, |(o, _)| o as i64);
                out.push_str(&(dt.and_utc().timestamp() - off).to_string());
            }
            // Codes chrono writes as glibc does.
            'a' | 'A' | 'b' | 'B' | 'c' | 'C' | 'd' | 'D' | 'e' | 'F' | 'g' | 'G' | 'h' | 'H'
            | 'I' | 'j' | 'k' | 'l' | 'm' | 'M' | 'n' | 'p' | 'P' | 'r' | 'R' | 'S' | 't' | 'T'
            | 'u' | 'U' | 'V' | 'w' | 'W' | 'x' | 'X' | 'y' | 'Y' => {
                // chrono knows the `-`, `_` and `0` padding flags only.
                let chrono_spec = if flags.chars().all(|f| "-_0".contains(f)) && flags.len() <= 1 {
                    spec.to_string()
                } else {
                    format!("%{code}")
                };
                // chrono refuses a flag on its composite codes (`%_r`,
                // `%-D`: found by the template fuzz target, which made its
                // Display fail and `to_string` panic); glibc ignores it.
                let plain = format!("%{code}");
                let mut items: Vec<_> = StrftimeItems::new(&chrono_spec).collect();
                if items.iter().any(|i| matches!(i, Item::Error)) {
                    items = StrftimeItems::new(&plain).collect();
                }
                let mut piece = String::new();
                if write!(piece, "{}", dt.format_with_items(items.into_iter())).is_err() {
                    piece = spec.to_string();
                }
                if flags.contains('^') {
                    piece = piece.to_uppercase();
                }
                out.push_str(&piece);
            }
            // glibc prints what it does not know as it is.
            _ => out.push_str(spec),
        }
    }
    out
}

/// Python's `datetime.strptime(s, fmt)`.
pub(crate) fn py_strptime(s: &str, fmt: &str) -> Result<NaiveDateTime, Error> {
    let fail = || err(format!("time data {s:?} does not match format {fmt:?}"));
    // Python's `%f` reads one to six digits of microseconds. chrono reads
    // a variable-length fraction only together with its dot (`%.f`).
    let chrono_fmt = fmt.replace(".%f", "%.f").replace("%f", "%6f");
    let mut p = Parsed::new();
    chrono::format::parse(&mut p, s, StrftimeItems::new(&chrono_fmt)).map_err(|_| fail())?;
    if p.year.is_none()
        && p.year_div_100.is_none()
        && p.year_mod_100.is_none()
        && p.isoyear.is_none()
    {
        p.set_year(1900).map_err(|_| fail())?;
    }
    let dated_by_week =
        p.week_from_mon.is_some() || p.week_from_sun.is_some() || p.isoweek.is_some();
    if p.ordinal.is_none() && !dated_by_week {
        if p.month.is_none() {
            p.set_month(1).map_err(|_| fail())?;
        }
        if p.day.is_none() {
            p.set_day(1).map_err(|_| fail())?;
        }
    }
    if p.hour_div_12.is_none() && p.hour_mod_12.is_none() {
        p.set_hour(0).map_err(|_| fail())?;
    } else if p.hour_div_12.is_none() {
        // `%I` without `%p` is a morning hour.
        p.set_ampm(false).map_err(|_| fail())?;
    }
    if p.minute.is_none() {
        p.set_minute(0).map_err(|_| fail())?;
    }
    if p.second.is_none() {
        p.set_second(0).map_err(|_| fail())?;
    }
    let date = p.to_naive_date().map_err(|_| fail())?;
    let time = p.to_naive_time().map_err(|_| fail())?;
    Ok(date.and_time(time))
}

/// `now(utc=False, fmt=None)`: the current local (or UTC) time as a naive
/// datetime, or formatted with `fmt`.
fn now(utc: Option<bool>, fmt: Option<&str>, kw: Kwargs) -> Result<Value, Error> {
    let utc = kw.get::<Option<bool>>("utc")?.or(utc).unwrap_or(false);
    let fmt = kw.get::<Option<String>>("fmt")?.or(fmt.map(str::to_string));
    kw.assert_all_used()?;
    let dt = if utc {
        Utc::now().naive_utc()
    } else {
        Local::now().naive_local()
    };
    Ok(match fmt.filter(|f| !f.is_empty()) {
        Some(f) => Value::from(py_strftime(&dt, &f, None)),
        None => Value::from_object(PyDateTime(dt)),
    })
}

/// The `strftime` filter: `time.strftime(fmt, time.localtime(second))`, or
/// `gmtime` with `utc=True`; without `second`, now.
fn strftime(fmt: &str, second: Option<Value>, kw: Kwargs) -> Result<String, Error> {
    let utc = kw.get::<Option<bool>>("utc")?.unwrap_or(false);
    let second = match kw.get::<Option<Value>>("second")? {
        Some(s) => Some(s),
        None => second,
    };
    kw.assert_all_used()?;
    let epoch = match second.filter(|s| !s.is_none() && !s.is_undefined()) {
        None => None,
        Some(s) => {
            let f = match s.as_str() {
                Some(t) => t.trim().parse::<f64>().ok(),
                None => f64::try_from(s.clone()).ok(),
            };
            match f {
                Some(f) if f.is_finite() => Some(f),
                _ => return Err(err(format!("Invalid value for epoch value ({s})"))),
            }
        }
    };
    let at = match epoch {
        // time.localtime() truncates the fraction.
        Some(f) => chrono::DateTime::from_timestamp(f.trunc() as i64, 0)
            .ok_or_else(|| err(format!("Invalid value for epoch value ({f})")))?,
        None => Utc::now(),
    };
    Ok(if utc {
        py_strftime(&at.naive_utc(), fmt, Some((0, "GMT")))
    } else {
        let local = at.with_timezone(&Local);
        let off = local.offset().fix().local_minus_utc();
        let name = local.format("%Z").to_string();
        let name = if name.starts_with(['+', '-']) && off == 0 {
            "UTC".to_string()
        } else {
            name
        };
        py_strftime(&local.naive_local(), fmt, Some((off, &name)))
    })
}

/// The `to_datetime` filter: `datetime.strptime(string, format)`.
fn to_datetime(s: &Value, fmt: Option<&str>, kw: Kwargs) -> Result<Value, Error> {
    let fmt = kw
        .get::<Option<String>>("format")?
        .or(fmt.map(str::to_string))
        .unwrap_or_else(|| "%Y-%m-%d %H:%M:%S".to_string());
    kw.assert_all_used()?;
    let text = s
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| s.to_string());
    Ok(Value::from_object(PyDateTime(py_strptime(&text, &fmt)?)))
}

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("now", now);
    for prefix in ["", "ansible.builtin."] {
        env.add_filter(format!("{prefix}strftime"), strftime);
        env.add_filter(format!("{prefix}to_datetime"), to_datetime);
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn strftime_follows_python_codes() {
        let d = dt("2020-03-06 01:02:03.000450");
        assert_eq!(
            py_strftime(&d, "%Y-%m-%d %H:%M:%S.%f", None),
            "2020-03-06 01:02:03.000450"
        );
        assert_eq!(py_strftime(&d, "%j|%z|%Z|%-d|%%|%q", None), "066|||6|%|%q");
        assert_eq!(py_strftime(&d, "%z %Z", Some((-5400, "X"))), "-0130 X");
        assert_eq!(
            py_strftime(&d, "%^a %s", Some((0, "UTC"))),
            "FRI 1583456523"
        );
    }

    #[test]
    fn strptime_fills_missing_fields_like_python() {
        assert_eq!(
            py_strptime("2016", "%Y").unwrap(),
            dt("2016-01-01 00:00:00")
        );
        assert_eq!(
            py_strptime("10:11", "%H:%M").unwrap(),
            dt("1900-01-01 10:11:00")
        );
        assert_eq!(
            py_strptime("2020-02-03 04:05:06.7", "%Y-%m-%d %H:%M:%S.%f").unwrap(),
            dt("2020-02-03 04:05:06.7")
        );
        assert!(py_strptime("2020-13-01", "%Y-%m-%d").is_err());
    }
}
