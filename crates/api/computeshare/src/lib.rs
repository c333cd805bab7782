//! The ComputeShare dialect (`000_929c057556c234a2.txt`), served under `/api/v1/…`.
//!
//! Success is `{"code":200,"message":"success","data":…}`; errors carry the HTTP status as `code`
//! with an UPPER_SNAKE `reason` (see [`error`]). Output keys are lowerCamelCase; input accepts
//! lowerCamelCase and snake_case and ignores unknown fields. This crate only translates: every
//! decision is made by the core services in [`stratus_app::App`].

mod billing;
mod catalog;
mod compute;
pub mod error;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod router;
mod user;

pub use router::router;
