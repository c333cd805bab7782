//! Recharge from an Ethereum chain (in progress): hex encodings, addresses, a JSON-RPC client and
//! the pure deposit-scanning functions.

mod address;
pub mod encoding;
pub mod rpc;
pub mod scan;

pub use address::Address;
pub use encoding::{HexError, H256, U256};
pub use rpc::{RetryPolicy, RpcClient, RpcError};
pub use scan::{safe_head, Anomaly, AnomalyKind, Deposit, ScanOutput};
