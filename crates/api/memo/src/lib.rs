//! The MEMO storage middleware dialect (`003_c8c4262f43b6179d.txt`): wallet login with
//! `/getnonce`, `/login`, `/fresh`, and storage under `/mefs/…` and `/ipfs/…`.
//!
//! Errors are `{"Code","Description","HTTPStatusCode"}` with the HTTP status equal to
//! `HTTPStatusCode` (including the non-standard 516–520); authentication failures on `/login` and
//! on authenticated routes are wrapped as `{"Nonce":"<fresh nonce>","Error":{…}}` so the client
//! can log in again at once. See [`error`].

mod billing;
pub mod error;
mod extract;
mod form;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod login;
mod router;
mod storage;

pub use router::{not_found_response, router};
