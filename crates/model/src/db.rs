//! The metadata database the core runs on: a [`stratus_store::Database`] (embedded SQLite or
//! PostgreSQL). The core's statements are portable SQL; what differs between the backends
//! (connections, migrations, row locks) lives in `stratus-store`.

pub use stratus_store::{Backend, Conn, Database as Db, Location, Options};
