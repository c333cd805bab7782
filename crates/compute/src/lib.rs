//! The runtime layer of stratus' compute sandboxes.
//!
//! A user's docker-compose file becomes Docker containers on a shared host, safely, and public
//! TCP ports are forwarded to them. This crate has no database and no HTTP: the caller owns
//! instances, mappings, port allocation and billing, and drives these pieces:
//!
//! - [`compose`]: parse and validate a compose file into a [`ComposeApp`] (errors name the field).
//! - [`policy`]: what a compose file may ask of a shared host ([`Policy`]).
//! - [`runtime`]: the [`Runtime`] trait every sandbox backend implements.
//! - [`docker`]: the Docker backend ([`DockerRuntime`]).
//! - [`gateway`]: the TCP gateway that forwards public ports ([`Gateway`]).

pub mod compose;
pub mod gateway;
pub mod policy;
pub mod runtime;

pub use compose::{ComposeApp, ComposeError, PublishedPort};
pub use gateway::{
    resolver_fn, Gateway, GatewayConfig, GatewayError, MappingStats, Resolver, RuntimeResolver,
};
pub use policy::Policy;
pub use runtime::{InstanceSpec, InstanceState, Runtime, RuntimeError};
