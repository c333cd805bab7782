//! The header and query parsers of the download path: `Range` with `If-Range`, `If-None-Match`,
//! `Accept` with `?format=`, `?filename=`, and the names put in `Content-Disposition`.
//!
//! Input: 8 bytes of file length and a shift byte (so small lengths are common), then lines:
//! `Range`, `If-Range`, `If-None-Match`, `Accept`, the query string, a file name.

use http::header::{ACCEPT, IF_NONE_MATCH, IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue};
use stratus_api_memo::fuzzing::{self as memo, Range};

use crate::Input;

const ETAG: &str = "\"bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4\"";

/// Download headers: a partial answer lies within the file; `If-Range` with another tag answers
/// the whole file; a plain `bytes=a-b` or `bytes=-n` is answered as RFC 9110 says; the tag itself
/// and `*` always match `If-None-Match`; the format follows `?format=` over `Accept`; names
/// become valid `Content-Disposition` values that keep them (`filename*`) and stored names are
/// single, bounded path components.
pub fn range(data: &[u8]) {
    let mut input = Input::new(data);
    let len = u64::from_le_bytes(input.take(8).try_into().unwrap_or_default());
    let len = len >> (input.byte() % 64);
    let range = input.line();
    let if_range = input.line();
    let if_none_match = input.line();
    let accept = input.line();
    let query = input.line();
    let name = input.rest();

    let mut headers = HeaderMap::new();
    let set = |h: &mut HeaderMap, name, v: &[u8]| {
        if !v.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.insert(name, v);
            }
        }
    };
    set(&mut headers, RANGE, range);
    set(&mut headers, IF_RANGE, if_range);
    set(&mut headers, IF_NONE_MATCH, if_none_match);
    set(&mut headers, ACCEPT, accept);

    let answer = memo::range(&headers, len, ETAG);
    match answer {
        Range::Partial(s, e) => assert!(s <= e && e < len, "{s}-{e} of {len}"),
        Range::Full | Range::Unsatisfiable => {}
    }
    let sent = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    if sent(IF_RANGE).is_some_and(|ir| ir.trim() != ETAG) {
        assert_eq!(answer, Range::Full);
    }
    if sent(IF_RANGE).is_none() || sent(IF_RANGE).is_some_and(|ir| ir.trim() == ETAG) {
        if let Some(expected) = sent(RANGE).and_then(|r| plain_range(r, len)) {
            assert_eq!(answer, expected, "{:?} of {len}", sent(RANGE));
        }
    }

    assert_eq!(
        memo::if_none_match(&headers, ETAG),
        sent(IF_NONE_MATCH).is_some_and(|v| v
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == ETAG))
    );
    for tag in [ETAG.to_string(), format!("W/{ETAG}"), "*".to_string()] {
        let mut h = HeaderMap::new();
        let v = match sent(IF_NONE_MATCH) {
            Some(v) => format!("{v}, {tag}"),
            None => tag,
        };
        h.insert(
            IF_NONE_MATCH,
            HeaderValue::from_str(&v).expect("visible ASCII"),
        );
        assert!(memo::if_none_match(&h, ETAG), "{v}");
    }

    if let Some(query) = crate::text(query) {
        match memo::download(query, &headers) {
            Ok(d) => {
                assert!(["file", "raw", "car"].contains(&d.format));
                if let Ok(q) = memo::download(query, &HeaderMap::new()) {
                    // Accept only matters when the query does not say.
                    if q.format != "file" {
                        assert_eq!(d.format, q.format);
                    }
                }
            }
            // Not a URI at all is refused by the HTTP server before any handler.
            Err(description) => assert!(
                description.starts_with("400 ") || description.starts_with("not a URI"),
                "{description}"
            ),
        }
    }

    if let Some(name) = crate::text(name) {
        disposition_keeps(name);
        if let Some(stored) = memo::clean_name(Some(name)) {
            assert!(!stored.is_empty() && stored.chars().count() <= 255);
            assert!(!stored.contains(['/', '\\']) && !stored.chars().any(char::is_control));
            assert!(stored != "." && stored != "..");
            assert!(name.contains(stored.as_str()) || name.chars().any(char::is_control));
        }
    }
}

/// The answer RFC 9110 gives to a single well-formed range (digits only, no spaces).
fn plain_range(value: &str, len: u64) -> Option<Range> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() && digits(b) {
        let n: u64 = b.parse().ok()?;
        return Some(if n == 0 || len == 0 {
            Range::Unsatisfiable
        } else {
            Range::Partial(len - n.min(len), len - 1)
        });
    }
    if !digits(a) || !(b.is_empty() || digits(b)) {
        return None;
    }
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().ok()?
    };
    if end < start {
        return None;
    }
    Some(if start >= len {
        Range::Unsatisfiable
    } else {
        Range::Partial(start, end.min(len - 1))
    })
}

/// The `Content-Disposition` of a name is a valid header value that names the file: `filename`
/// is the name with `"`, `\`, control and non-ASCII characters replaced by `_`, and a name that
/// is not ASCII also has a `filename*` that decodes back to it.
fn disposition_keeps(name: &str) {
    let value = memo::disposition(name);
    let text = value.to_str().expect("visible ASCII");
    let ascii: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '_',
        })
        .collect();
    let plain = format!("attachment; filename=\"{ascii}\"");
    if name.is_ascii() {
        assert_eq!(text, plain);
    } else {
        // The encoded form has no `'`, so the last marker is the real one.
        let (head, encoded) = text
            .rsplit_once("; filename*=UTF-8''")
            .expect("a filename* for a name that is not ASCII");
        assert_eq!(head, plain);
        assert_eq!(
            String::from_utf8(percent_decode(encoded)).as_deref(),
            Ok(name)
        );
    }
}

/// RFC 3986 percent-decoding (`+` is a plus sign).
fn percent_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: Vec<u8> = bytes.by_ref().take(2).collect();
            let hex = std::str::from_utf8(&hex).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
        } else {
            out.push(b);
        }
    }
    out
}
