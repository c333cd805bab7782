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
//! - [`firewall`]: the host firewall every sandbox runs behind ([`Firewall`]): no way to the
//!   host's loopback, and an egress policy (the internet and its own instance only).
//! - [`gateway`]: the TCP gateway that forwards public ports ([`Gateway`]).
//! - [`liveness`]: which servers on this host are alive, by server id, for the nftables tables
//!   the gateway and the firewall name after it.
//! - [`crashpoint`]: the test hook that kills the process at a named point (crash tests).
//!
//! # Driving it
//!
//! ```no_run
//! # async fn demo(compose_yaml: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use stratus_compute::*;
//!
//! let config = stratus_config::ComputeConfig::default();
//! let runtime: Arc<dyn Runtime> = Arc::new(DockerRuntime::from_config(&config).await?);
//! let gateway = Gateway::new(GatewayConfig::from_config(&config)?);
//!
//! // 1. Validate before storing anything: a ComposeError is a 400 naming the field.
//! let app = ComposeApp::parse(compose_yaml, &Policy::from_config(&config))?;
//! // A mapping's computerPort must name a published TCP port of the app.
//! let target = app.resolve_port(80).ok_or("port 80 is not published by the compose file")?;
//! # let _ = target;
//!
//! // 2. Create (pulls images, makes network, volumes, containers), then start.
//! let spec = InstanceSpec {
//!     instance_id: "f62ef8f1-7ccd-4557-a504-e74d2c1977b5".into(),
//!     app,
//!     cpus: 2.0,
//!     memory_bytes: 4 << 30,
//!     pids_limit: config.pids_limit,
//!     public_key: None,
//!     password: None,
//! };
//! runtime.create(&spec).await?;
//! runtime.start(&spec.instance_id).await?;
//!
//! // 3. Open a mapping on the public port you allocated; connections are resolved when they
//! //    arrive, so the mapping can stay open while the instance stops and starts.
//! let resolver = Arc::new(RuntimeResolver::new(runtime.clone(), &spec.instance_id, 80));
//! gateway.open("mapping-id", 40001, resolver).await?;
//!
//! // On delete: close the instance's mappings, then remove the instance.
//! gateway.close("mapping-id").await;
//! runtime.remove(&spec.instance_id).await?;
//! # Ok(()) }
//! ```
//!
//! After a restart of stratus: list [`Runtime::instances`], call [`Runtime::recover`] for each
//! (re-applies instance-wide bounds, reports the state), remove the ids your database does not
//! know, and re-open the gateway mappings of the ones it does.

pub mod compose;
pub mod crashpoint;
pub mod docker;
pub mod firewall;
pub mod gateway;
pub mod liveness;
mod nft;
pub mod policy;
pub mod runtime;

pub use compose::{ComposeApp, ComposeError, ImageRef, ImageSource, PublishedPort};
pub use docker::{Bounds, BoundsMode, DockerConfig, DockerRuntime};
pub use firewall::{EgressPolicy, Firewall, FirewallError};
pub use gateway::{
    resolver_fn, Forwarding, Gateway, GatewayConfig, GatewayError, MappingStats, Resolver,
    RuntimeResolver,
};
pub use policy::Policy;
pub use runtime::{InstanceSpec, InstanceState, Runtime, RuntimeError};
