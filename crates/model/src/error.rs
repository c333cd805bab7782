//! The core's error type. Each API dialect maps these variants to its own wire format; the
//! messages here are plain English and never include secrets.
//!
//! Two variants carry text that must never reach a client: the message of [`Error::Internal`]
//! and the `cause` of [`Error::Unavailable`] (store paths, database or engine messages). The
//! dialects log them with a request id and answer a generic text with that id instead.

use stratus_config::Amount;

/// Why a credential or login attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token was presented.
    MissingToken,
    /// The token is not a well-formed HS256 JWT of ours.
    MalformedToken,
    /// The signature does not verify.
    BadSignature,
    /// The token has expired.
    Expired,
    /// The token was revoked (logout, password change).
    Revoked,
    /// A refresh token used as an access token or the reverse.
    WrongTokenType,
    /// The token names an account that does not exist.
    UnknownAccount,
    /// Username or password is wrong (deliberately one case for both).
    BadCredentials,
    /// Wallet login: a required field is empty.
    EmptyParameter,
    /// Wallet login: the domain is not ours.
    WrongDomain,
    /// Wallet login: unknown, expired, used or foreign nonce.
    WrongNonce,
    /// Wallet login: the address is malformed or is not the signer.
    WrongAddress,
    /// Wallet login: the signature is malformed, high-S, or does not recover.
    WrongSignature,
}

impl AuthFailure {
    /// A short English description, for logs and [`Error`]'s `Display`. It is not wire text:
    /// each dialect answers its own words for each failure.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "no token was presented",
            AuthFailure::MalformedToken => "the token is malformed",
            AuthFailure::BadSignature => "the token's signature does not verify",
            AuthFailure::Expired => "the token has expired",
            AuthFailure::Revoked => "the token has been revoked",
            AuthFailure::WrongTokenType => "the token is of the wrong type",
            AuthFailure::UnknownAccount => "the token names an unknown account",
            AuthFailure::BadCredentials => "wrong username or password",
            AuthFailure::EmptyParameter => "a wallet login field is empty",
            AuthFailure::WrongDomain => "the wallet login names another domain",
            AuthFailure::WrongNonce => "the nonce is unknown, expired, used or foreign",
            AuthFailure::WrongAddress => "the address is malformed or not the signer",
            AuthFailure::WrongSignature => "the signature is malformed or does not recover",
        }
    }
}

/// An input the core refused, named as the domain knows it. The dialects name it in their own
/// words (a wire field path, a form field, a query parameter) when they answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// An account's username.
    Username,
    /// An account's new password.
    Password,
    /// The current password given to change it.
    OldPassword,
    /// A ledger amount.
    Amount,
    /// A ledger entry's idempotency reference.
    Reference,
    /// The storage package to buy.
    Package,
    /// How many of a package to buy.
    Quantity,
    /// The position to list objects after.
    ListAfter,
    /// A byte range of a file.
    Range,
    /// The file being uploaded.
    File,
    /// A storage target of the configuration.
    StorageTarget,
    /// An instance's name.
    InstanceName,
    /// An instance's spec.
    Spec,
    /// An instance's image.
    Image,
    /// An instance's lifetime in months.
    Duration,
    /// An instance's SSH public key.
    PublicKey,
    /// An instance's login password.
    InstancePassword,
    /// An instance's compose app.
    Compose,
    /// The port mappings of an instance, as a whole.
    Mappings,
    /// A port mapping's name.
    MappingName,
    /// A port mapping's protocol.
    MappingProtocol,
    /// A port mapping's port on the instance.
    MappingPort,
}

impl Field {
    /// The domain's name of the field (for logs and `Display`; not wire text).
    pub fn name(self) -> &'static str {
        match self {
            Field::Username => "username",
            Field::Password => "password",
            Field::OldPassword => "old_password",
            Field::Amount => "amount",
            Field::Reference => "reference",
            Field::Package => "package",
            Field::Quantity => "quantity",
            Field::ListAfter => "list_after",
            Field::Range => "range",
            Field::File => "file",
            Field::StorageTarget => "storage_target",
            Field::InstanceName => "instance_name",
            Field::Spec => "spec",
            Field::Image => "image",
            Field::Duration => "duration",
            Field::PublicKey => "public_key",
            Field::InstancePassword => "instance_password",
            Field::Compose => "compose",
            Field::Mappings => "mappings",
            Field::MappingName => "mapping_name",
            Field::MappingProtocol => "mapping_protocol",
            Field::MappingPort => "mapping_port",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that can never succeed; `field` names what was wrong.
    #[error("{field}: {message}")]
    Invalid { field: Field, message: String },
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("insufficient balance: {available} available, {needed} needed")]
    InsufficientBalance { needed: Amount, available: Amount },
    #[error("not enough storage space: {used} used of {limit}, {wanted} more wanted")]
    QuotaExceeded { used: u64, limit: u64, wanted: u64 },
    /// The disk (or the quota of the file system) holding blobs, staging files or the database
    /// is full: nothing was stored. The message says which write failed, for the log.
    #[error("out of storage space: {0}")]
    StorageFull(String),
    /// A capability is not available because a dependency (docker, the port gateway, a blob
    /// store) is not reachable or failed. `what` says which capability, in words a client may
    /// read ("sandboxes are unavailable: the host firewall cannot be installed"); `cause` is for
    /// the operator's log only.
    #[error("{what}: {cause}")]
    Unavailable { what: String, cause: String },
    /// A fault of ours; the text is for the operator's log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: Field, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
    /// [`Error::Unavailable`]: `what` for the client, `cause` for the log.
    pub fn unavailable(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Error::Unavailable {
            what: what.into(),
            cause: cause.to_string(),
        }
    }
}

/// Whether an i/o error means the file system is out of space (or the writer out of quota).
pub(crate) fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if stratus_store::is_storage_full(&e) {
            tracing::error!(error = %e, "database write failed: the disk is full");
            return Error::StorageFull(format!("database: {e}"));
        }
        tracing::error!(error = %e, "database error");
        Error::Internal(format!("database: {e}"))
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Internal(format!("database migration: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if is_out_of_space(&e) {
            return Error::StorageFull(format!("io: {e}"));
        }
        Error::Internal(format!("io: {e}"))
    }
}

impl From<stratus_block::BlobError> for Error {
    fn from(e: stratus_block::BlobError) -> Self {
        match e {
            stratus_block::BlobError::Io(io) if is_out_of_space(&io) => {
                Error::StorageFull(format!("blob store: {io}"))
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
