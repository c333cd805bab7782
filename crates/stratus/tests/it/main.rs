//! Integration tests: each starts the real `stratus` binary on a free port with its own data
//! directory and drives it over HTTP as the dialects' clients do.

mod harness;

mod auth_computeshare;
mod auth_memo;
mod auth_tokens;
mod auth_twocloud;
mod billing;
mod chain;
mod cid_cap;
mod cli;
mod cluster;
mod compute;
mod compute_crash;
mod compute_security;
mod hidden_errors;
mod move_store;
mod multinode_auth;
mod multinode_billing;
mod multinode_compute;
mod multinode_storage;
mod s3;
mod security;
mod storage;
mod storage_crash;
mod storage_faults;
