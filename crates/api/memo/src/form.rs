//! The upload form as the upload handler reads it: part headers, then the file's bytes, from
//! one of two `multipart/form-data` parsers chosen by `storage.multipart_parser` — stratus's own
//! streaming parser ([`crate::multipart`], the default) or the `multer` crate. Both exist so
//! that the durable-upload benchmark can measure one against the other in the same build; the
//! handler sees the same fields and errors from either.

use bytes::Bytes;
use futures::Stream;
use stratus_config::MultipartParser;

use crate::multipart::{Multipart, MultipartError};

/// A part's headers: its field name and file name.
pub(crate) struct FormPart {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
}

/// Why a form could not be read: the text of a 400 `malformed multipart body`.
pub(crate) struct FormError(pub(crate) String);

/// The form being read.
pub(crate) enum Form<S> {
    Own(Multipart<S>),
    Multer {
        form: multer::Multipart<'static>,
        field: Option<multer::Field<'static>>,
    },
}

impl From<MultipartError> for FormError {
    fn from(e: MultipartError) -> Self {
        FormError(e.to_string())
    }
}

impl From<multer::Error> for FormError {
    fn from(e: multer::Error) -> Self {
        FormError(e.to_string())
    }
}

impl<S, E> Form<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    /// Reads `body` (whose Content-Type names `boundary`) with `parser`.
    pub(crate) fn new(parser: MultipartParser, body: S, boundary: &str) -> Self {
        match parser {
            MultipartParser::Stratus => Form::Own(Multipart::new(body, boundary)),
            MultipartParser::Multer => Form::Multer {
                form: multer::Multipart::new(body, boundary.to_string()),
                field: None,
            },
        }
    }

    /// The next part's headers (what is left of the current one is skipped), or `None` after
    /// the closing boundary.
    pub(crate) async fn next_part(&mut self) -> Result<Option<FormPart>, FormError> {
        match self {
            Form::Own(m) => Ok(m.next_part().await?.map(|p| FormPart {
                name: p.name,
                filename: p.filename,
            })),
            Form::Multer { form, field } => {
                *field = None;
                let Some(f) = form.next_field().await? else {
                    return Ok(None);
                };
                let part = FormPart {
                    name: f.name().unwrap_or("").to_string(),
                    filename: f.file_name().map(str::to_string),
                };
                *field = Some(f);
                Ok(Some(part))
            }
        }
    }

    /// The next piece of the current part's data, or `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, FormError> {
        match self {
            Form::Own(m) => Ok(m.chunk().await?),
            Form::Multer { field, .. } => match field {
                Some(f) => Ok(f.chunk().await?),
                None => Ok(None),
            },
        }
    }
}
