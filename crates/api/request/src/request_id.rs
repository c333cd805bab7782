//! Request ids for errors a client must not read in full.
//!
//! An internal error or an unavailable dependency is answered with a generic text and a request
//! id; the full cause (a store path, a database or engine message) goes to the log under the same
//! id, so an operator can find it from what the client saw. The server runs every request inside
//! [`scope`]; the id is made only when a handler first needs one ([`current`]), so requests that
//! succeed pay nothing but the scope. The server adds it to the response as `X-Request-Id`.

use std::sync::{Arc, OnceLock};

tokio::task_local! {
    static REQUEST_ID: Arc<OnceLock<String>>;
}

/// The response header that carries the id of a request whose answer hid an error.
pub const HEADER: &str = "x-request-id";

/// The id slot of one request: run the request with [`scope`], then read [`Slot::get`].
#[derive(Debug, Clone, Default)]
pub struct Slot(Arc<OnceLock<String>>);

impl Slot {
    /// The id, if the request asked for one.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Runs `fut` (one request) with `slot` as its id slot.
pub async fn scope<F: std::future::Future>(slot: &Slot, fut: F) -> F::Output {
    REQUEST_ID.scope(slot.0.clone(), fut).await
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The id of the current request (made on first use); a fresh id outside any request.
pub fn current() -> String {
    REQUEST_ID
        .try_with(|slot| slot.get_or_init(new_id).clone())
        .unwrap_or_else(|_| new_id())
}

/// Logs an internal error in full and returns the request id to tell the client instead.
pub fn report_internal(cause: &dyn std::fmt::Display) -> String {
    let id = current();
    tracing::error!(request_id = %id, error = %cause, "internal error (answered generically)");
    id
}

/// Logs why a capability is unavailable and returns the request id to tell the client with
/// `what` (the part a client may read).
pub fn report_unavailable(what: &str, cause: &dyn std::fmt::Display) -> String {
    let id = current();
    tracing::warn!(request_id = %id, %what, error = %cause, "unavailable (cause not shown to the client)");
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_id_per_request_made_on_first_use() {
        let slot = Slot::default();
        let (a, b) = scope(&slot, async {
            let a = current();
            tokio::task::yield_now().await;
            (a, current())
        })
        .await;
        assert_eq!(a, b, "stable within the request");
        assert_eq!(
            slot.get(),
            Some(a.as_str()),
            "visible to the server afterwards"
        );
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

        let other = Slot::default();
        let c = scope(&other, async { current() }).await;
        assert_ne!(a, c, "each request has its own");

        let untouched = Slot::default();
        scope(&untouched, async {}).await;
        assert_eq!(untouched.get(), None, "no id unless asked for");

        assert_ne!(
            current(),
            current(),
            "outside a request: a fresh id each time"
        );
    }
}
