//! The upload form: a `multipart/form-data` body read as it streams in, with the `multer` crate.
//!
//! multer keeps in memory what it has read but not yet handed out: a preamble, a part's headers,
//! a delimiter split across reads, and everything one of its reads brings in (it reads until the
//! body has nothing more ready). Left alone, a body that never shows a boundary or never ends its
//! headers would be held whole. So multer reads through [`Held`], which lends it at most
//! [`READ_BURST`] bytes at a time and fails the form when what it holds (bytes read minus field
//! bytes handed out) passes [`MAX_HELD`]; parts are counted here ([`MAX_PARTS`]). What a field
//! means, and how large it may be, is the caller's business.
//!
//! (stratus had its own parser for a while; on the durable 1 GiB upload benchmark it was not
//! measurably faster than multer — see `bench/storage.sh` — so the well-kept crate reads forms.)

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

/// Most parts in one form.
pub const MAX_PARTS: usize = 100;
/// Most bytes the parser may hold that it has not handed out as field data (preambles, part
/// headers and delimiters of the whole form, and one read).
pub const MAX_HELD: u64 = 4 << 20;
/// Most bytes the parser takes in before it must hand out what it has.
pub const READ_BURST: u64 = 1 << 20;

/// A part's headers: its field name and file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    pub name: String,
    pub filename: Option<String>,
}

/// Why a form cannot be read: the text of a 400 `malformed multipart body: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError(pub String);

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<multer::Error> for FormError {
    fn from(e: multer::Error) -> Self {
        match e {
            // What the body (or [`Held`]) said, rather than multer's "failed to read stream".
            multer::Error::StreamReadFailed(cause) => FormError(cause.to_string()),
            other => FormError(other.to_string()),
        }
    }
}

/// The boundary a `Content-Type` names, if it is `multipart/form-data` with one.
pub fn boundary_of(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type)
        .ok()
        .filter(|b| !b.is_empty())
}

/// The body as the parser reads it: see the module doc.
struct Held<S> {
    body: S,
    /// Bytes the parser took in.
    read: u64,
    /// Bytes taken in since the parser last handed something out or waited.
    burst: u64,
    /// Field bytes handed out (counted by [`Form::chunk`]).
    handed_out: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
enum HeldError {
    #[error(
        "more than {} KiB of preamble, part headers and delimiters",
        MAX_HELD >> 10
    )]
    TooMuch,
    #[error("{0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

impl<S, E> Stream for Held<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Bytes, HeldError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.burst >= READ_BURST {
            // Let the parser hand out what it has before it reads on (it is polled again at once).
            this.burst = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.read += frame.len() as u64;
                this.burst += frame.len() as u64;
                let held = this
                    .read
                    .saturating_sub(this.handed_out.load(Ordering::Relaxed));
                if held > MAX_HELD + READ_BURST {
                    return Poll::Ready(Some(Err(HeldError::TooMuch)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HeldError::Body(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                this.burst = 0;
                Poll::Pending
            }
        }
    }
}

/// A form being read. Call [`next_part`](Form::next_part) for each part's headers and
/// [`chunk`](Form::chunk) for its data; data left unread is skipped by the next `next_part`.
pub struct Form {
    form: multer::Multipart<'static>,
    field: Option<multer::Field<'static>>,
    parts: usize,
    handed_out: Arc<AtomicU64>,
}

impl Form {
    /// Reads `body`, whose Content-Type names `boundary` (see [`boundary_of`]).
    pub fn new<S, E>(body: S, boundary: &str) -> Form
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let handed_out = Arc::new(AtomicU64::new(0));
        let held = Held {
            body,
            read: 0,
            burst: 0,
            handed_out: handed_out.clone(),
        };
        Form {
            form: multer::Multipart::new(held, boundary.to_string()),
            field: None,
            parts: 0,
            handed_out,
        }
    }

    /// The next part's headers (what is left of the current one is skipped), or `None` after
    /// the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<FormPart>, FormError> {
        self.field = None;
        let Some(field) = self.form.next_field().await? else {
            return Ok(None);
        };
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(FormError(format!("more than {MAX_PARTS} parts")));
        }
        let part = FormPart {
            name: field.name().unwrap_or("").to_string(),
            filename: field.file_name().map(str::to_string),
        };
        self.field = Some(field);
        Ok(Some(part))
    }

    /// The next piece of the current part's data, or `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FormError> {
        let Some(field) = self.field.as_mut() else {
            return Ok(None);
        };
        let piece = field.chunk().await?;
        if let Some(p) = &piece {
            self.handed_out.fetch_add(p.len() as u64, Ordering::Relaxed);
        }
        Ok(piece)
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;

    fn stream(frames: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(frames.into_iter().map(|f| Ok(Bytes::from(f))))
    }

    /// Every part with its data (or the error that stopped the form).
    fn read_all(frames: Vec<Vec<u8>>, boundary: &str) -> Result<Vec<(FormPart, Vec<u8>)>, String> {
        block_on(async {
            let mut form = Form::new(stream(frames), boundary);
            let mut out = Vec::new();
            while let Some(p) = form.next_part().await.map_err(|e| e.0)? {
                let mut data = Vec::new();
                while let Some(c) = form.chunk().await.map_err(|e| e.0)? {
                    data.extend_from_slice(&c);
                }
                out.push((p, data));
            }
            Ok(out)
        })
    }

    #[test]
    fn reads_fields_and_files_in_any_framing() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"paytype\"\r\n\r\n1\r\n\
            --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
            Content-Type: text/plain\r\n\r\nhello\r\n--c\r\nworld\r\n--b--\r\n";
        let want = vec![
            (
                FormPart {
                    name: "paytype".into(),
                    filename: None,
                },
                b"1".to_vec(),
            ),
            (
                FormPart {
                    name: "file".into(),
                    filename: Some("a.txt".into()),
                },
                b"hello\r\n--c\r\nworld".to_vec(),
            ),
        ];
        for size in [1, 2, 3, 7, 64, body.len()] {
            let frames = body.chunks(size).map(<[u8]>::to_vec).collect();
            assert_eq!(read_all(frames, "b").unwrap(), want, "frames of {size}");
        }
    }

    #[test]
    fn a_large_file_streams_through_in_bounded_pieces() {
        let data: Vec<u8> = (0..(3 * MAX_HELD as usize))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut body = b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n".to_vec();
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n--b--\r\n");
        let frames = body.chunks(64 << 10).map(<[u8]>::to_vec).collect();
        let got = read_all(frames, "b").unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].1 == data);
    }

    #[test]
    fn a_body_without_a_boundary_or_an_end_of_headers_is_refused_early() {
        let junk = vec![b'x'; 64 << 10];
        // 64 MiB of preamble never reach memory: the form fails once MAX_HELD is passed.
        let frames: Vec<Vec<u8>> = std::iter::repeat_n(junk.clone(), 1024).collect();
        let err = read_all(frames, "b").unwrap_err();
        assert!(err.contains("KiB of preamble"), "{err}");
        let mut headers =
            b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ".to_vec();
        headers.extend_from_slice(&junk);
        let mut frames = vec![headers];
        frames.extend(std::iter::repeat_n(junk, 1024));
        let err = read_all(frames, "b").unwrap_err();
        assert!(err.contains("KiB of preamble"), "{err}");
    }

    #[test]
    fn too_many_parts_and_cut_bodies_are_errors() {
        let mut body = Vec::new();
        for i in 0..=MAX_PARTS {
            body.extend_from_slice(
                format!("--b\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(b"--b--\r\n");
        assert_eq!(
            read_all(vec![body], "b").unwrap_err(),
            format!("more than {MAX_PARTS} parts")
        );
        let cut = b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nhel".to_vec();
        assert!(read_all(vec![cut], "b").is_err());
    }

    #[test]
    fn boundaries_come_from_a_multipart_form_data_content_type() {
        assert_eq!(
            boundary_of("multipart/form-data; boundary=XyZ").as_deref(),
            Some("XyZ")
        );
        assert_eq!(
            boundary_of("multipart/form-data; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary_of("multipart/form-data"), None);
        assert_eq!(boundary_of("text/plain; boundary=x"), None);
    }
}
