//! Reading how long a server asked us to wait.
//!
//! `Retry-After` is either delta-seconds (`120`) or an HTTP date
//! (`Wed, 21 Oct 2015 07:28:00 GMT`); several APIs also send `retry-after-ms`. Provider
//! specific headers (OpenAI's `x-ratelimit-reset-*`) are read by `brace_llm`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Parses a `Retry-After` value: delta-seconds (fractions accepted) or an HTTP date, judged
/// against `now`. A date in the past means "now" (zero). Garbage gives `None`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use brace_core::retry_after::parse_retry_after;
///
/// assert_eq!(parse_retry_after("30", SystemTime::now()), Some(Duration::from_secs(30)));
/// let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
///     Some(Duration::from_secs(60)),
/// );
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(delay) = parse_seconds(value) {
        return Some(delay);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a non-negative, finite number of seconds, possibly fractional.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// Reads the wait a response asked for: `retry-after-ms` first (it is the more precise),
/// then `Retry-After` in either form.
pub fn from_headers(headers: &HeaderMap) -> Option<Duration> {
    from_headers_at(headers, SystemTime::now())
}

/// [`from_headers`] judged against a given `now`, for tests.
pub fn from_headers_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|ms| ms.trim().parse::<f64>().ok())
        && let Ok(delay) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(delay);
    }
    text("retry-after").and_then(|value| parse_retry_after(value, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    #[test]
    fn reads_seconds_dates_and_milliseconds() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);

        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("10"));
        assert_eq!(
            from_headers_at(&headers, now),
            Some(Duration::from_secs(10))
        );
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(
            from_headers_at(&headers, now),
            Some(Duration::from_millis(250))
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(value in ".*") {
            let _ = parse_retry_after(&value, SystemTime::now());
        }
    }
}
