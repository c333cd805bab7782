//! Recharge from an Ethereum chain (in progress): hex encodings, addresses and a JSON-RPC client.

mod address;
pub mod encoding;
pub mod rpc;

pub use address::Address;
pub use encoding::{HexError, H256, U256};
pub use rpc::{RetryPolicy, RpcClient, RpcError};
