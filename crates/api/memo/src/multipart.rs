//! `multipart/form-data` bodies (RFC 7578 framing over RFC 2046), parsed as they stream in.
//!
//! A part's bytes come out as slices of the body's own frames: nothing is copied except the part
//! headers and, at a frame's end, the few bytes that could begin a delimiter split across two
//! frames (fewer than the delimiter's length). This module owns the framing and nothing else:
//! what a field means, and how large it may be, is the caller's business; only the headers
//! (≤ 8 KiB a part), the number of parts (≤ 100) and what precedes the first boundary (≤ 64 KiB)
//! are bounded here, since they are what the parser itself keeps or walks over. A part's data
//! ends only where its delimiter was seen: a body cut at any byte is an error, never a short part.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Largest header block of one part.
pub const MAX_HEADER_BYTES: usize = 8 << 10;
/// Most parts in one body.
pub const MAX_PARTS: usize = 100;
/// Most bytes before the first boundary line (the preamble, ignored).
const MAX_PREAMBLE_BYTES: u64 = 64 << 10;
/// Longest boundary accepted in a Content-Type (RFC 2046 says 70; some clients go further).
const MAX_BOUNDARY_LEN: usize = 200;

/// What the headers of a part say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The `name` of its Content-Disposition.
    pub name: String,
    /// `filename*` (RFC 5987) if present, else `filename`.
    pub filename: Option<String>,
    /// The Content-Type header, as sent.
    pub content_type: Option<String>,
}

/// Why a body is not a well-formed `multipart/form-data` body.
#[derive(Debug)]
pub enum MultipartError {
    /// The body ended before any boundary line.
    NoBoundary { boundary: String },
    /// Too much came before the first boundary line.
    PreambleTooLong { boundary: String },
    /// The body ended in the data of a part.
    EndedInData { part: String },
    /// The body ended on a boundary line.
    EndedOnBoundaryLine,
    /// The body ended in the headers of the part with this (1-based) number.
    EndedInHeaders { number: usize },
    /// A boundary line went on with something else than `--`, padding and CRLF.
    BadBoundaryLine { boundary: String, found: u8 },
    /// The headers of a part exceed [`MAX_HEADER_BYTES`].
    HeadersTooLong { number: usize },
    /// A header line that cannot be read.
    BadHeader { number: usize, why: String },
    /// A part without Content-Disposition.
    NoDisposition { number: usize },
    /// A Content-Disposition that cannot be read.
    BadDisposition { number: usize, why: String },
    /// A Content-Disposition without `name`.
    NoName { number: usize },
    /// More than [`MAX_PARTS`] parts.
    TooManyParts,
    /// The body stream failed.
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// Called again after an error.
    AlreadyFailed,
}

impl fmt::Display for MultipartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MultipartError::*;
        match self {
            NoBoundary { boundary } => write!(
                f,
                "no boundary: the body has no line \"--{boundary}\" (the boundary of its Content-Type)"
            ),
            PreambleTooLong { boundary } => write!(
                f,
                "more than {} KiB before the first boundary line \"--{boundary}\"",
                MAX_PREAMBLE_BYTES >> 10
            ),
            EndedInData { part } => write!(
                f,
                "no closing boundary: the body ended in the middle of part {part:?}"
            ),
            EndedOnBoundaryLine => {
                write!(f, "no closing boundary: the body ended on a boundary line")
            }
            EndedInHeaders { number } => write!(
                f,
                "no closing boundary: the body ended in the headers of part {number}"
            ),
            BadBoundaryLine { boundary, found } => write!(
                f,
                "a boundary line \"--{boundary}\" must be followed by CRLF or \"--\", not {:?}",
                char::from(*found)
            ),
            HeadersTooLong { number } => write!(
                f,
                "the headers of part {number} are longer than {} KiB",
                MAX_HEADER_BYTES >> 10
            ),
            BadHeader { number, why } => write!(f, "bad header in part {number}: {why}"),
            NoDisposition { number } => {
                write!(f, "part {number} has no Content-Disposition header")
            }
            BadDisposition { number, why } => {
                write!(f, "bad Content-Disposition in part {number}: {why}")
            }
            NoName { number } => write!(f, "the Content-Disposition of part {number} has no name"),
            TooManyParts => write!(f, "more than {MAX_PARTS} parts"),
            Body(e) => write!(f, "reading the body failed: {e}"),
            AlreadyFailed => write!(f, "the body could not be parsed"),
        }
    }
}

impl std::error::Error for MultipartError {}

type Result<T> = std::result::Result<T, MultipartError>;

/// The boundary of a `multipart/form-data` Content-Type, or `None` when the type is another one
/// or has no usable boundary.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = split_header_value(content_type).ok()?;
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))?
        .1;
    let fine = !boundary.is_empty()
        && boundary.len() <= MAX_BOUNDARY_LEN
        && boundary.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !boundary.ends_with(' ');
    fine.then_some(boundary)
}

/// Where the parser is.
enum State {
    /// Before the first boundary line; `seen` bytes were skipped.
    Preamble { seen: u64 },
    /// In the data of the current part.
    Data,
    /// Right after a delimiter.
    BoundaryLine(Line),
    /// In the headers of the next part; the block starts with the CRLF that ended the boundary
    /// line, so an empty block is `CRLF CRLF`.
    Headers(Vec<u8>),
    /// After the closing delimiter.
    Closed,
    /// After an error.
    Failed,
}

/// Progress through the rest of a boundary line.
#[derive(Clone, Copy)]
enum Line {
    Start,
    Dash,
    Padding(usize),
    Cr,
}

/// A `multipart/form-data` body being read. Call [`next_part`](Multipart::next_part) for each
/// part's headers and [`chunk`](Multipart::chunk) for its data; data left unread is skipped by
/// the next `next_part`.
pub struct Multipart<S> {
    body: S,
    body_ended: bool,
    boundary: String,
    /// CRLF `--` boundary.
    delimiter: Box<[u8]>,
    /// The unread rest of the last frame.
    input: Bytes,
    /// Bytes at the end of earlier frames that may begin a delimiter (shorter than it).
    held: BytesMut,
    state: State,
    /// Parts whose headers were read.
    parts: usize,
    /// The name of the current part.
    current: String,
}

impl<S, E> Multipart<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Reads `body`, whose Content-Type has this `boundary` (see [`boundary_of`]).
    pub fn new(body: S, boundary: &str) -> Self {
        let mut delimiter = Vec::with_capacity(4 + boundary.len());
        delimiter.extend_from_slice(b"\r\n--");
        delimiter.extend_from_slice(boundary.as_bytes());
        Multipart {
            body,
            body_ended: false,
            boundary: boundary.to_string(),
            delimiter: delimiter.into_boxed_slice(),
            input: Bytes::new(),
            // The first boundary line may open the body: it is read as if a CRLF came before.
            held: BytesMut::from(&b"\r\n"[..]),
            state: State::Preamble { seen: 0 },
            parts: 0,
            current: String::new(),
        }
    }

    /// The headers of the next part (skipping what is left of the current one), or `None` after
    /// the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<Part>> {
        let result = self.next_part_inner().await;
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// The next piece of the current part's data, or `None` at its end (its delimiter was seen).
    /// Pieces are never empty.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        let result = self.chunk_inner().await;
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    async fn next_part_inner(&mut self) -> Result<Option<Part>> {
        loop {
            match &mut self.state {
                State::Preamble { seen } => {
                    let seen = *seen;
                    if self.input.is_empty() && !self.pull().await? {
                        return Err(MultipartError::NoBoundary {
                            boundary: self.boundary.clone(),
                        });
                    }
                    let (skipped, ended) = self.scan();
                    // The CRLF put before the body is not counted.
                    let seen = seen + skipped.len() as u64;
                    if seen > MAX_PREAMBLE_BYTES + 2 {
                        return Err(MultipartError::PreambleTooLong {
                            boundary: self.boundary.clone(),
                        });
                    }
                    self.state = if ended {
                        State::BoundaryLine(Line::Start)
                    } else {
                        State::Preamble { seen }
                    };
                }
                State::Data => while self.chunk_inner().await?.is_some() {},
                State::BoundaryLine(_) => self.boundary_line().await?,
                State::Headers(_) => return self.headers().await.map(Some),
                State::Closed => return Ok(None),
                State::Failed => return Err(MultipartError::AlreadyFailed),
            }
        }
    }

    async fn chunk_inner(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.state {
                State::Data => {}
                State::Failed => return Err(MultipartError::AlreadyFailed),
                _ => return Ok(None),
            }
            if self.input.is_empty() && !self.pull().await? {
                return Err(MultipartError::EndedInData {
                    part: self.current.clone(),
                });
            }
            let (data, ended) = self.scan();
            if ended {
                self.state = State::BoundaryLine(Line::Start);
            }
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }

    /// Makes `input` the next non-empty frame; `false` at the end of the body.
    async fn pull(&mut self) -> Result<bool> {
        while !self.body_ended {
            match self.body.next().await {
                Some(Ok(frame)) if frame.is_empty() => {}
                Some(Ok(frame)) => {
                    self.input = frame;
                    return Ok(true);
                }
                Some(Err(e)) => return Err(MultipartError::Body(e.into())),
                None => self.body_ended = true,
            }
        }
        Ok(false)
    }

    /// One step through section data (`input` is not empty): the bytes that are surely data
    /// (maybe none), and whether a delimiter, now consumed, ended the section.
    fn scan(&mut self) -> (Bytes, bool) {
        let m = self.delimiter.len();
        if !self.held.is_empty() {
            // Does a delimiter start in the held bytes? Look at them with the frame's first bytes.
            let old = self.held.len();
            let take = self.input.len().min(m);
            self.held.extend_from_slice(&self.input[..take]);
            if let Some(p) = find(&self.held, &self.delimiter) {
                // `held` holds no whole delimiter, so this one ends inside the frame.
                let data = self.held.split_to(p).freeze();
                self.held.clear();
                self.input.advance(p + m - old);
                return (data, true);
            }
            if take == self.input.len() {
                // The whole (short) frame is held now: let go of what cannot begin a delimiter.
                self.input = Bytes::new();
                let keep = holdback(&self.held, &self.delimiter);
                return (self.held.split_to(keep).freeze(), false);
            }
            // No delimiter starts in the held bytes (it would have ended within `take`).
            self.held.truncate(old);
            return (self.held.split().freeze(), false);
        }
        if let Some(p) = find(&self.input, &self.delimiter) {
            let data = self.input.split_to(p);
            self.input.advance(m);
            return (data, true);
        }
        let keep = holdback(&self.input, &self.delimiter);
        let data = self.input.split_to(keep);
        self.held.extend_from_slice(&self.input);
        self.input = Bytes::new();
        (data, false)
    }

    /// Reads the rest of a boundary line: `--` (the end) or padding and CRLF (a part follows).
    async fn boundary_line(&mut self) -> Result<()> {
        let State::BoundaryLine(mut line) = self.state else {
            unreachable!("called on a boundary line")
        };
        loop {
            if self.input.is_empty() && !self.pull().await? {
                return Err(MultipartError::EndedOnBoundaryLine);
            }
            let b = self.input[0];
            self.input.advance(1);
            line = match (line, b) {
                (Line::Start, b'-') => Line::Dash,
                (Line::Dash, b'-') => {
                    self.state = State::Closed;
                    return Ok(());
                }
                (Line::Start, b' ' | b'\t') => Line::Padding(1),
                (Line::Padding(n), b' ' | b'\t') if n < MAX_HEADER_BYTES => Line::Padding(n + 1),
                (Line::Start | Line::Padding(_), b'\r') => Line::Cr,
                (Line::Cr, b'\n') => {
                    self.state = State::Headers(b"\r\n".to_vec());
                    return Ok(());
                }
                _ => {
                    return Err(MultipartError::BadBoundaryLine {
                        boundary: self.boundary.clone(),
                        found: b,
                    })
                }
            };
            self.state = State::BoundaryLine(line);
        }
    }

    /// Reads and interprets the header block of the next part.
    async fn headers(&mut self) -> Result<Part> {
        let number = self.parts + 1;
        if number > MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        let State::Headers(head) = &mut self.state else {
            unreachable!("called in the headers")
        };
        let mut head = std::mem::take(head);
        // The CRLF of the boundary line, the headers, the empty line.
        let most = 2 + MAX_HEADER_BYTES + 2;
        let end = loop {
            if self.input.is_empty() && !self.pull().await? {
                return Err(MultipartError::EndedInHeaders { number });
            }
            let before = head.len();
            let take = self.input.len().min(most + 1 - before);
            head.extend_from_slice(&self.input[..take]);
            let from = before.saturating_sub(3);
            if let Some(i) = find_plain(&head[from..], b"\r\n\r\n") {
                let end = from + i + 4;
                self.input.advance(end - before);
                break end;
            }
            self.input.advance(take);
            if head.len() > most {
                return Err(MultipartError::HeadersTooLong { number });
            }
        };
        // The header lines, each with its CRLF.
        let part = interpret(&head[2..end - 2], number)?;
        self.parts = number;
        self.current.clone_from(&part.name);
        self.state = State::Data;
        Ok(part)
    }
}

/// The first position of `needle` (a delimiter) in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // `memmem` passes over the bytes with vector instructions, testing two of the needle's rarest
    // bytes at once; on random data that is about 10 GB/s on one core.
    memchr::memmem::find(hay, needle)
}

/// The first position of `needle` in a short `hay`.
fn find_plain(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where the longest end of `hay` that could begin `delimiter` starts (`hay.len()` if none).
fn holdback(hay: &[u8], delimiter: &[u8]) -> usize {
    let start = hay.len().saturating_sub(delimiter.len() - 1);
    (start..hay.len())
        .find(|&j| delimiter.starts_with(&hay[j..]))
        .unwrap_or(hay.len())
}

/// The part described by a header block (lines, each ending with CRLF).
fn interpret(block: &[u8], number: usize) -> Result<Part> {
    let bad = |why: String| MultipartError::BadHeader { number, why };
    // Unfold the lines: a line starting with a space or a tab continues the previous one.
    let mut headers: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in block.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(bad(format!("a line ends without CRLF: {:?}", lossy(line))));
        };
        if let Some(&b) = line.iter().find(|&&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(bad(format!(
                "{:?} in the line {:?}",
                char::from(b),
                lossy(line)
            )));
        }
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            let Some((_, value)) = headers.last_mut() else {
                return Err(bad(format!(
                    "the first line is a continuation: {:?}",
                    lossy(line)
                )));
            };
            if !value.is_empty() {
                value.push(b' ');
            }
            value.extend_from_slice(line.trim_ascii());
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(bad(format!("no colon in {:?}", lossy(line))));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(bad(format!("bad header name {:?}", lossy(name))));
        }
        headers.push((name, line[colon + 1..].trim_ascii().to_vec()));
    }
    let mut disposition = None;
    let mut content_type = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if disposition.is_some() {
                return Err(bad("two Content-Disposition headers".into()));
            }
            disposition = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-type") {
            if content_type.is_some() {
                return Err(bad("two Content-Type headers".into()));
            }
            content_type = Some(String::from_utf8_lossy(&value).into_owned());
        }
    }
    let disposition = disposition.ok_or(MultipartError::NoDisposition { number })?;
    let bad = |why: String| MultipartError::BadDisposition { number, why };
    let text = std::str::from_utf8(&disposition)
        .map_err(|_| bad(format!("not UTF-8: {:?}", lossy(&disposition))))?;
    let (_kind, params) =
        split_header_value(text).map_err(|why| bad(format!("{why} in {text:?}")))?;
    let mut name = None;
    let mut filename = None;
    let mut filename_ext = None;
    for (key, value) in params {
        let slot = if key.eq_ignore_ascii_case("name") {
            &mut name
        } else if key.eq_ignore_ascii_case("filename") {
            &mut filename
        } else if key.eq_ignore_ascii_case("filename*") {
            &mut filename_ext
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(bad(format!("two {key} parameters in {text:?}")));
        }
        *slot = Some(value);
    }
    let name = name.ok_or(MultipartError::NoName { number })?;
    let filename = match filename_ext {
        Some(ext) => Some(decode_ext_value(&ext).map_err(|why| bad(format!("filename*: {why}")))?),
        None => filename,
    };
    Ok(Part {
        name,
        filename,
        content_type,
    })
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Header parameters: keys as sent, values unquoted.
type Params<'a> = Vec<(&'a str, String)>;

/// `value *( ";" key "=" ( token / quoted-string ) )`, with spaces allowed around the
/// separators. Keys come out as sent; values unquoted. In a quoted string `\"` and `\\` stand for
/// `"` and `\`; any other backslash is kept (browsers send Windows paths unescaped).
fn split_header_value(text: &str) -> std::result::Result<(&str, Params<'_>), String> {
    let (kind, mut rest) = text.split_once(';').unwrap_or((text, ""));
    let kind = kind.trim_matches([' ', '\t']);
    if kind.is_empty() {
        return Err("no value before the parameters".into());
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Ok((kind, params));
        }
        let Some((key, after)) = rest.split_once('=') else {
            return Err(format!("a parameter without '=' ({rest:?})"));
        };
        let key = key.trim_matches([' ', '\t']);
        if key.is_empty() || !key.bytes().all(is_token_byte) {
            return Err(format!("bad parameter name {key:?}"));
        }
        let after = after.trim_start_matches([' ', '\t']);
        if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("an unterminated quoted string ({after:?})")),
                    Some((i, '"')) => break i + 1,
                    Some((_, '\\')) => match chars.clone().next() {
                        Some((_, c @ ('"' | '\\'))) => {
                            chars.next();
                            value.push(c);
                        }
                        _ => value.push('\\'),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            rest = quoted[end..].trim_start_matches([' ', '\t']);
            if !rest.is_empty() && !rest.starts_with(';') {
                return Err(format!("text after a quoted string ({rest:?})"));
            }
            params.push((key, value));
        } else {
            let (value, after) = after.split_once(';').unwrap_or((after, ""));
            params.push((key, value.trim_matches([' ', '\t']).to_string()));
            rest = after;
        }
    }
}

/// An RFC 5987 `ext-value`: `charset'[language]'percent-encoded`, UTF-8 or ISO-8859-1.
fn decode_ext_value(value: &str) -> std::result::Result<String, String> {
    let mut fields = value.splitn(3, '\'');
    let (Some(charset), Some(_language), Some(encoded)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("{value:?} is not charset'language'value"));
    };
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad percent escape in {value:?}"))?;
            bytes.push(hex);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).map_err(|_| format!("{value:?} is not UTF-8"))
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Ok(bytes.into_iter().map(char::from).collect())
    } else {
        Err(format!(
            "charset {charset:?}; only UTF-8 and ISO-8859-1 are understood"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::executor::block_on;
    use proptest::prelude::*;

    use super::*;

    /// A field as a parser reports it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Field {
        name: String,
        filename: Option<String>,
        content_type: Option<String>,
        data: Vec<u8>,
    }

    fn frames(body: &[u8], sizes: &[usize]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut rest = body;
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = n.clamp(1, rest.len());
            out.push(Bytes::copy_from_slice(&rest[..n]));
            rest = &rest[n..];
        }
        out
    }

    fn stream(frames: Vec<Bytes>) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> {
        futures::stream::iter(frames.into_iter().map(Ok))
    }

    /// The fields this parser completes, and how it ends. Checks on the way that every piece of
    /// data is a slice of an input frame, or a copy of held bytes: shorter than a delimiter, plus
    /// a frame shorter than a delimiter.
    fn ours(frames: Vec<Bytes>, boundary: &str) -> (Vec<Field>, Result<()>) {
        let ranges: Vec<_> = frames
            .iter()
            .map(|f| f.as_ptr() as usize..f.as_ptr() as usize + f.len())
            .collect();
        let copied_at_most = 2 * (boundary.len() + 4);
        let mut form = Multipart::new(stream(frames), boundary);
        let mut done = Vec::new();
        let result = block_on(async {
            while let Some(part) = form.next_part().await? {
                let mut data = Vec::new();
                while let Some(chunk) = form.chunk().await? {
                    assert!(!chunk.is_empty());
                    let at = chunk.as_ptr() as usize;
                    assert!(
                        chunk.len() < copied_at_most
                            || ranges
                                .iter()
                                .any(|r| r.contains(&at) && at + chunk.len() <= r.end),
                        "a {} byte piece was copied",
                        chunk.len()
                    );
                    data.extend_from_slice(&chunk);
                }
                done.push(Field {
                    name: part.name,
                    filename: part.filename,
                    content_type: part.content_type,
                    data,
                });
            }
            // Once closed, always closed.
            assert!(form.next_part().await?.is_none());
            Ok(())
        });
        (done, result)
    }

    fn reference(frames: Vec<Bytes>, boundary: &str) -> std::result::Result<Vec<Field>, String> {
        let mut form = multer::Multipart::new(stream(frames), boundary);
        block_on(async {
            let mut out = Vec::new();
            while let Some(mut field) = form.next_field().await.map_err(|e| e.to_string())? {
                let mut f = Field {
                    name: field.name().unwrap_or_default().to_string(),
                    filename: field.file_name().map(str::to_string),
                    content_type: field.content_type().map(|m| m.to_string()),
                    data: Vec::new(),
                };
                while let Some(c) = field.chunk().await.map_err(|e| e.to_string())? {
                    f.data.extend_from_slice(&c);
                }
                out.push(f);
            }
            Ok(out)
        })
    }

    fn parse(body: &[u8], boundary: &str) -> Result<Vec<Field>> {
        let (fields, result) = ours(vec![Bytes::copy_from_slice(body)], boundary);
        result.map(|()| fields)
    }

    fn error(body: &[u8], boundary: &str) -> String {
        parse(body, boundary).unwrap_err().to_string()
    }

    /// One field of a generated body.
    #[derive(Debug, Clone)]
    struct FieldSpec {
        name: String,
        filename: Option<String>,
        content_type: Option<&'static str>,
        data: Vec<u8>,
        /// Header names in lower case, no space after `;`, an unknown header.
        style: (bool, bool, bool),
    }

    #[derive(Debug, Clone)]
    struct BodySpec {
        boundary: String,
        preamble: Option<Vec<u8>>,
        padding: String,
        fields: Vec<FieldSpec>,
        epilogue: Option<Vec<u8>>,
    }

    /// Replaces the `\r` of every occurrence of `needle` (which starts with it) until none is left.
    fn without(mut data: Vec<u8>, needle: &[u8]) -> Vec<u8> {
        while let Some(i) = find_plain(&data, needle) {
            data[i] = b'x';
        }
        data
    }

    impl BodySpec {
        /// The body, and the length up to the end of the closing delimiter.
        fn render(&self) -> (Vec<u8>, usize) {
            let dash = format!("--{}", self.boundary);
            let mut body = Vec::new();
            if let Some(p) = &self.preamble {
                // multer looks for the boundary anywhere in the preamble.
                let mut p = p.clone();
                while let Some(i) = find_plain(&p, dash.as_bytes()) {
                    p[i] = b'x';
                }
                body.extend_from_slice(&p);
                body.extend_from_slice(b"\r\n");
            }
            for f in &self.fields {
                let (lower, compact, extra) = f.style;
                body.extend_from_slice(format!("{dash}{}\r\n", self.padding).as_bytes());
                let cd = if lower {
                    "content-disposition"
                } else {
                    "Content-Disposition"
                };
                let sep = if compact { ";" } else { "; " };
                body.extend_from_slice(
                    format!("{cd}: form-data{sep}name=\"{}\"", f.name).as_bytes(),
                );
                if let Some(n) = &f.filename {
                    let quoted = n.replace('"', "\\\"");
                    body.extend_from_slice(format!("{sep}filename=\"{quoted}\"").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
                if let Some(ct) = f.content_type {
                    body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
                }
                if extra {
                    body.extend_from_slice(b"X-Extra:  some value \r\n");
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(&without(f.data.clone(), format!("\r\n{dash}").as_bytes()));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("{dash}--").as_bytes());
            let close = body.len();
            if let Some(e) = &self.epilogue {
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(e);
            }
            (body, close)
        }

        fn fields(&self) -> Vec<Field> {
            let delimiter = format!("\r\n--{}", self.boundary);
            self.fields
                .iter()
                .map(|f| Field {
                    name: f.name.clone(),
                    filename: f.filename.clone(),
                    content_type: f.content_type.map(str::to_string),
                    data: without(f.data.clone(), delimiter.as_bytes()),
                })
                .collect()
        }
    }

    /// Bytes rich in what delimiters are made of.
    fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => any::<u8>(),
                2 => Just(b'\r'),
                2 => Just(b'\n'),
                2 => Just(b'-'),
                1 => Just(b'a'),
                1 => Just(b'('),
            ],
            0..max,
        )
    }

    fn boundary() -> impl Strategy<Value = String> {
        // RFC 2046 bchars, regular expression specials included; short ones collide more.
        prop_oneof![
            "[a(]{1,3}",
            "[0-9A-Za-z'()+_,./:=?-]{1,20}[0-9A-Za-z'()+_,./:=?-]",
            "[-]{4,30}[0-9a-f]{16}",
        ]
    }

    fn field(max_data: usize) -> impl Strategy<Value = FieldSpec> {
        (
            prop_oneof![Just("file".to_string()), "[a-z_]{1,8}"],
            proptest::option::of("[A-Za-z0-9 ._\"-]{0,12}|[a-zé€😀]{1,4}"),
            proptest::option::of(prop_oneof![
                Just("application/octet-stream"),
                Just("text/plain"),
                Just("text/plain; charset=utf-8"),
            ]),
            tricky_bytes(max_data),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(name, filename, content_type, data, style)| FieldSpec {
                name,
                filename,
                content_type,
                data,
                style,
            })
    }

    fn body(max_fields: usize, max_data: usize) -> impl Strategy<Value = BodySpec> {
        (
            boundary(),
            proptest::option::of(tricky_bytes(40)),
            prop_oneof![Just(String::new()), Just(" \t ".to_string())],
            proptest::collection::vec(field(max_data), 0..max_fields),
            proptest::option::of(tricky_bytes(20)),
        )
            .prop_map(|(boundary, preamble, padding, fields, epilogue)| BodySpec {
                boundary,
                preamble,
                padding,
                fields,
                epilogue,
            })
    }

    fn splits() -> impl Strategy<Value = Vec<usize>> {
        prop_oneof![
            Just(vec![1]),
            proptest::collection::vec(1usize..8, 1..6),
            proptest::collection::vec(1usize..300, 1..6),
            Just(vec![usize::MAX]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn same_fields_as_multer(spec in body(5, 2000), sizes in splits()) {
            let (bytes, _) = spec.render();
            let expected = spec.fields();
            let (got, result) = ours(frames(&bytes, &sizes), &spec.boundary);
            prop_assert!(result.is_ok(), "{}", result.unwrap_err());
            prop_assert_eq!(&got, &expected);
            let theirs = reference(frames(&bytes, &sizes), &spec.boundary);
            prop_assert_eq!(theirs.as_ref(), Ok(&expected));
        }

        #[test]
        fn every_cut_is_an_error(spec in body(3, 40), sizes in splits()) {
            let (bytes, close) = spec.render();
            let expected = spec.fields();
            for cut in 0..close {
                let (done, result) = ours(frames(&bytes[..cut], &sizes), &spec.boundary);
                prop_assert!(result.is_err(), "cut at {} of {}: no error", cut, close);
                // What was reported whole is whole.
                prop_assert_eq!(&done[..], &expected[..done.len()]);
                let theirs = reference(frames(&bytes[..cut], &sizes), &spec.boundary);
                prop_assert!(theirs.is_err(), "multer accepts a cut at {}", cut);
            }
            // The final CRLF and the epilogue are optional.
            for cut in close..=bytes.len() {
                let (done, result) = ours(frames(&bytes[..cut], &sizes), &spec.boundary);
                prop_assert!(result.is_ok());
                prop_assert_eq!(&done, &expected);
            }
        }

        #[test]
        fn find_agrees_with_a_plain_search(
            hay in tricky_bytes(300),
            boundary in "[a-]{0,3}",
        ) {
            let needle = format!("\r\n--{boundary}");
            prop_assert_eq!(find(&hay, needle.as_bytes()), find_plain(&hay, needle.as_bytes()));
        }
    }

    const FILE_HEAD: &str =
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.bin\"\r\n\r\n";

    #[test]
    fn a_cut_file_part_says_where() {
        let body = format!("{FILE_HEAD}some bytes but no end");
        assert_eq!(
            error(body.as_bytes(), "XyZ"),
            "no closing boundary: the body ended in the middle of part \"file\""
        );
        let body = format!("{FILE_HEAD}some bytes\r\n--XyZ\r\nContent-Disp");
        assert_eq!(
            error(body.as_bytes(), "XyZ"),
            "no closing boundary: the body ended in the headers of part 2"
        );
        assert_eq!(
            error(b"--XyZ", "XyZ"),
            "no closing boundary: the body ended on a boundary line"
        );
        assert_eq!(
            error(b"hello", "XyZ"),
            "no boundary: the body has no line \"--XyZ\" (the boundary of its Content-Type)"
        );
    }

    #[test]
    fn a_zero_byte_file_and_empty_parts() {
        let body =
            "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"empty\"\r\n\r\n\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n\r\n--b--\r\n";
        let fields = parse(body.as_bytes(), "b").unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].filename.as_deref(), Some("empty"));
        assert!(fields[0].data.is_empty() && fields[1].data.is_empty());
        // No parts at all.
        assert_eq!(parse(b"--b--", "b").unwrap(), vec![]);
    }

    #[test]
    fn preamble_epilogue_and_padding() {
        let body =
            "This is the preamble.\r\n--b \t\r\nContent-Disposition: form-data; name=a\r\n\r\n1\
                    \r\n--b--\r\nThis is the epilogue, --b\r\nnot a part.";
        let fields = parse(body.as_bytes(), "b").unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(
            (fields[0].name.as_str(), &fields[0].data[..]),
            ("a", &b"1"[..])
        );
        let long = format!("{}\r\n--b--", "x".repeat(70_000));
        assert_eq!(
            error(long.as_bytes(), "b"),
            "more than 64 KiB before the first boundary line \"--b\""
        );
    }

    #[test]
    fn folded_headers_and_spaces() {
        let body = "--b\r\ncontent-disposition:form-data;\r\n\tname=\"file\";\r\n   filename=\"a b.txt\"  \r\n\
                    CONTENT-TYPE :text/plain\r\n\r\nx\r\n--b--";
        assert_eq!(
            error(body.as_bytes(), "b"),
            "bad header in part 1: bad header name \"CONTENT-TYPE \""
        );
        let body = body.replace("CONTENT-TYPE :", "CONTENT-TYPE:   ");
        let fields = parse(body.as_bytes(), "b").unwrap();
        assert_eq!(fields[0].name, "file");
        assert_eq!(fields[0].filename.as_deref(), Some("a b.txt"));
        assert_eq!(fields[0].content_type.as_deref(), Some("text/plain"));
    }

    fn filename_of(disposition: &str) -> Result<Option<String>> {
        let body = format!("--b\r\nContent-Disposition: {disposition}\r\n\r\n\r\n--b--");
        parse(body.as_bytes(), "b").map(|f| f[0].filename.clone())
    }

    #[test]
    fn filenames() {
        let f = |d: &str| filename_of(d).unwrap();
        assert_eq!(f("form-data; name=file"), None);
        assert_eq!(
            f(r#"form-data; name=file; filename="""#).as_deref(),
            Some("")
        );
        assert_eq!(
            f(r#"form-data; name="file"; filename="say \"hi\"; \\o/.txt""#).as_deref(),
            Some(r#"say "hi"; \o/.txt"#)
        );
        // Browsers send Windows paths with their backslashes as they are.
        assert_eq!(
            f(r#"form-data; name="file"; filename="C:\fakepath\photo.jpg""#).as_deref(),
            Some(r"C:\fakepath\photo.jpg")
        );
        assert_eq!(
            f("form-data; name=file; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        // RFC 5987 wins, whatever the order.
        assert_eq!(
            f(r#"form-data; name="file"; filename*=UTF-8''%E2%82%AC%20rates.txt; filename="EUR rates.txt""#)
                .as_deref(),
            Some("€ rates.txt")
        );
        assert_eq!(
            f(r#"form-data; name="file"; FILENAME="x"; Filename*=iso-8859-1'en'%A3.txt"#)
                .as_deref(),
            Some("£.txt")
        );
        assert_eq!(
            f("form-data; name=\"file\"; filename=\"€ raw UTF-8.txt\"").as_deref(),
            Some("€ raw UTF-8.txt")
        );
        let e = |d: &str| filename_of(d).unwrap_err().to_string();
        assert_eq!(
            e("form-data; name=file; filename*=UTF-8''%E2%82"),
            "bad Content-Disposition in part 1: filename*: \"UTF-8''%E2%82\" is not UTF-8"
        );
        assert_eq!(
            e("form-data; name=file; filename*=koi8-r''x"),
            "bad Content-Disposition in part 1: filename*: charset \"koi8-r\"; only UTF-8 and \
             ISO-8859-1 are understood"
        );
        assert_eq!(
            e("form-data; name=file; filename*=UTF-8''%G1"),
            "bad Content-Disposition in part 1: filename*: a bad percent escape in \"UTF-8''%G1\""
        );
        assert_eq!(
            e(r#"form-data; name="file; filename="x""#),
            "bad Content-Disposition in part 1: text after a quoted string (\"x\\\"\") in \
             \"form-data; name=\\\"file; filename=\\\"x\\\"\""
        );
        assert_eq!(
            e(r#"form-data; name="file"; filename="x"#),
            "bad Content-Disposition in part 1: an unterminated quoted string (\"\\\"x\") in \
             \"form-data; name=\\\"file\\\"; filename=\\\"x\""
        );
        assert_eq!(
            e("form-data; name=a; name=b"),
            "bad Content-Disposition in part 1: two name parameters in \"form-data; name=a; name=b\""
        );
        assert_eq!(
            e("form-data; filename=a"),
            "the Content-Disposition of part 1 has no name"
        );
    }

    #[test]
    fn headers_that_are_refused() {
        let e = |head: &str| {
            let body = format!("--b\r\n{head}\r\n\r\nx\r\n--b--");
            error(body.as_bytes(), "b")
        };
        assert_eq!(
            e("Content-Type: text/plain"),
            "part 1 has no Content-Disposition header"
        );
        assert_eq!(
            e("Content-Disposition form-data; name=a"),
            "bad header in part 1: no colon in \"Content-Disposition form-data; name=a\""
        );
        assert_eq!(
            e(" Content-Disposition: form-data; name=a"),
            "bad header in part 1: the first line is a continuation: \" Content-Disposition: \
             form-data; name=a\""
        );
        assert_eq!(
            e("Content-Disposition: form-data; name=a\nX: y"),
            "bad header in part 1: a line ends without CRLF: \"Content-Disposition: form-data; \
             name=a\""
        );
        assert_eq!(
            e("Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b"),
            "bad header in part 1: two Content-Disposition headers"
        );
        assert_eq!(
            e(&format!(
                "Content-Disposition: form-data; name=a\r\nX: {}",
                "y".repeat(9000)
            )),
            "the headers of part 1 are longer than 8 KiB"
        );
        assert_eq!(
            error(b"--b\r\n\r\nx\r\n--b--", "b"),
            "part 1 has no Content-Disposition header"
        );
        assert_eq!(
            error(b"--bb\r\n", "b"),
            "a boundary line \"--b\" must be followed by CRLF or \"--\", not 'b'"
        );
        assert_eq!(
            error(b"--b-x", "b"),
            "a boundary line \"--b\" must be followed by CRLF or \"--\", not 'x'"
        );
    }

    #[test]
    fn at_most_a_hundred_parts() {
        let part = "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n";
        let body = format!("{}--b--", part.repeat(MAX_PARTS));
        assert_eq!(parse(body.as_bytes(), "b").unwrap().len(), MAX_PARTS);
        let body = format!("{}--b--", part.repeat(MAX_PARTS + 1));
        assert_eq!(error(body.as_bytes(), "b"), "more than 100 parts");
    }

    #[test]
    fn boundaries_with_special_characters() {
        let boundary = r"a.b*c+d?(e)[f]{g}^$|\/";
        let ctype = format!(
            "multipart/form-data; boundary=\"{}\"",
            boundary.replace('\\', "\\\\")
        );
        assert_eq!(boundary_of(&ctype).as_deref(), Some(boundary));
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=file\r\n\r\nab--{boundary}\r\n\
             --{boundary}--"
        );
        let fields = parse(body.as_bytes(), boundary).unwrap();
        assert_eq!(fields[0].data, format!("ab--{boundary}").into_bytes());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            boundary_of("multipart/form-data; boundary=XyZ").as_deref(),
            Some("XyZ")
        );
        assert_eq!(
            boundary_of("Multipart/Form-Data ;charset=utf-8;  BOUNDARY = \"a b\" ").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary_of("multipart/form-data"), None);
        assert_eq!(boundary_of("multipart/form-data; boundary="), None);
        assert_eq!(
            boundary_of("multipart/form-data; boundary=\"a\r\nb\""),
            None
        );
        assert_eq!(boundary_of("multipart/mixed; boundary=x"), None);
        assert_eq!(boundary_of("application/json"), None);
        assert_eq!(boundary_of(""), None);
    }

    #[test]
    fn body_errors_pass_through_and_stick() {
        let frames = vec![
            Ok(Bytes::from_static(FILE_HEAD.as_bytes())),
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ];
        let mut form = Multipart::new(futures::stream::iter(frames), "XyZ");
        block_on(async {
            let part = form.next_part().await.unwrap().unwrap();
            assert_eq!(part.name, "file");
            assert_eq!(form.chunk().await.unwrap().unwrap(), "abc");
            let e = form.chunk().await.unwrap_err();
            assert_eq!(e.to_string(), "reading the body failed: connection reset");
            assert!(matches!(
                form.next_part().await,
                Err(MultipartError::AlreadyFailed)
            ));
        });
    }

    #[test]
    fn unread_data_is_skipped() {
        let body = format!(
            "{FILE_HEAD}{}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--XyZ--",
            "x".repeat(100_000)
        );
        let mut form = Multipart::new(stream(frames(body.as_bytes(), &[4096])), "XyZ");
        block_on(async {
            assert_eq!(form.next_part().await.unwrap().unwrap().name, "file");
            assert_eq!(form.next_part().await.unwrap().unwrap().name, "b");
            assert_eq!(form.chunk().await.unwrap().unwrap(), "2");
            assert_eq!(form.chunk().await.unwrap(), None);
            assert_eq!(form.next_part().await.unwrap(), None);
        });
    }
}
