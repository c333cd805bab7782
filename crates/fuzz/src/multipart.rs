//! The MEMO upload form reader (`multipart/form-data` through multer, streaming, with stratus's
//! bounds on parts and held bytes), fed in chunkings the input chooses.
//!
//! Input: a selector byte (a boundary from [`BOUNDARIES`], or a `Content-Type` line read by
//! `boundary_of`), a flags byte (bit 0: skip the data of every other part), a count and that many
//! frame sizes, then the body.

use bytes::Bytes;
use futures::executor::block_on;
use stratus_api_memo::fuzzing::{boundary_of, Form, FormError, FormPart, MAX_PARTS};

use crate::Input;

/// Boundaries the input picks by number: what browsers, curl and the tests send, and short ones
/// that collide with data.
const BOUNDARIES: &[&str] = &[
    "XyZ",
    "b",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "------------------------d74496d66958873e",
    "a(",
    "--",
    "a b",
];

/// One part as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    part: FormPart,
    /// `None` when the data was skipped, or the body failed in it.
    data: Option<Vec<u8>>,
}

/// The parts whose headers a parser read, and how the body ended (an error's text, or `None`).
type Outcome = (Vec<Read>, Option<String>);

/// Multipart: the same body in the input's frames and in one frame gives the same parts, data
/// and error; no part's data holds the delimiter and each is followed by it in the body; the
/// parts' bytes fit in the body; names and file names fit in the body; at most [`MAX_PARTS`]
/// parts; a closed body holds the closing boundary.
pub fn multipart(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = input.byte() as usize;
    let boundary = match BOUNDARIES.get(selector) {
        Some(b) => (*b).to_string(),
        None => {
            let Some(ctype) = crate::text(input.line()) else {
                return;
            };
            let Some(b) = boundary_of(ctype) else {
                return;
            };
            assert!(!b.is_empty() && b.len() <= ctype.len(), "{b:?}");
            b
        }
    };
    let flags = input.byte();
    let count = input.byte() % 8;
    let sizes: Vec<usize> = input
        .take(count.into())
        .iter()
        .map(|&n| usize::from(n).max(1))
        .collect();
    let body = input.rest();

    let whole = parse(vec![Bytes::copy_from_slice(body)], &boundary, false);
    let framed = parse(frames(body, &sizes), &boundary, false);
    assert_eq!(framed, whole, "the chunking changed the result");
    let skipping = parse(frames(body, &sizes), &boundary, flags & 1 == 1);
    assert_eq!(skipping.1, whole.1, "skipping data changed the outcome");
    for (s, w) in skipping.0.iter().zip(&whole.0) {
        assert_eq!(s.part, w.part);
        if s.data.is_some() {
            assert_eq!(s.data, w.data);
        }
    }
    assert_eq!(skipping.0.len(), whole.0.len());

    // What the parts say about the body.
    let mut virtual_body = b"\r\n".to_vec();
    virtual_body.extend_from_slice(body);
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let (parts, error) = whole;
    assert!(parts.len() <= MAX_PARTS);
    let mut total = 0usize;
    let mut from = 0usize;
    for r in &parts {
        // Lossy UTF-8 may turn one byte into three.
        assert!(r.part.name.len() <= 3 * body.len());
        assert!(r
            .part
            .filename
            .as_ref()
            .is_none_or(|f| f.len() <= 3 * body.len()));
        let Some(data) = r.data.as_ref() else {
            // Only the last part can be cut short, by an error.
            assert!(error.is_some() && std::ptr::eq(r, parts.last().expect("not empty")));
            continue;
        };
        assert!(
            find(data, &delimiter).is_none(),
            "a part's data holds the delimiter"
        );
        // The data sits in the body, right before a delimiter, after the previous part's.
        let mut needle = data.clone();
        needle.extend_from_slice(&delimiter);
        let at = find(&virtual_body[from..], &needle).expect("the data is in the body") + from;
        from = at + data.len() + delimiter.len();
        total += data.len() + delimiter.len();
    }
    assert!(total <= virtual_body.len());
    if error.is_none() {
        // multer finds the first boundary line anywhere in the preamble, so the closing one
        // need not follow a line break when the form has no part.
        let closing = format!("--{boundary}--").into_bytes();
        assert!(find(&virtual_body, &closing).is_some());
    }
}

/// `body` cut into frames of the given sizes, in turn (one frame when there are none).
fn frames(body: &[u8], sizes: &[usize]) -> Vec<Bytes> {
    if sizes.is_empty() {
        return vec![Bytes::copy_from_slice(body)];
    }
    let mut out = Vec::new();
    let mut rest = body;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(n.min(rest.len()));
        out.push(Bytes::copy_from_slice(head));
        rest = tail;
    }
    out
}

fn parse(frames: Vec<Bytes>, boundary: &str, skip_odd: bool) -> Outcome {
    let stream = futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
    let mut form = Form::new(stream, boundary);
    let mut done = Vec::new();
    let result: Result<(), FormError> = block_on(async {
        while let Some(part) = form.next_part().await? {
            let skip = skip_odd && done.len() % 2 == 1;
            done.push(Read { part, data: None });
            if !skip {
                let mut data = Vec::new();
                while let Some(chunk) = form.chunk().await? {
                    data.extend_from_slice(&chunk);
                }
                done.last_mut().expect("just pushed").data = Some(data);
            }
        }
        Ok(())
    });
    (done, result.err().map(|e| e.0))
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
