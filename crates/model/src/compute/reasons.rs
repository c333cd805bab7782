//! What the owner of an instance is told when the runtime fails: their own mistakes in full (the
//! compose file, the image, a service that did not come up), the platform's faults in generic
//! words with an id under which the runtime's own text (engine messages, host paths) is logged.
//! Status reasons and refund memos are shown to the owner, so they never hold that text.

use stratus_compute::RuntimeError;

use crate::Error;

/// The status reason (or refund memo) for a failed runtime operation on `instance`.
pub(super) fn public_reason(instance: &str, e: &RuntimeError) -> String {
    if e.is_user_error() {
        return e.to_string();
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::error!(%instance, error_id = %id, error = %e, "runtime failure (the owner sees only the id)");
    format!("the platform could not run it (error id {id})")
}

/// Why sandboxes are refused: which capability, for the client; the runtime's error in full, for
/// the log.
pub(super) fn runtime_unavailable(e: &RuntimeError) -> Error {
    let what = match e {
        RuntimeError::Firewall(_) => {
            "sandboxes are unavailable: the host firewall cannot be installed"
        }
        _ => "sandboxes are unavailable: the container engine cannot be used",
    };
    Error::unavailable(what, format!("docker: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_reads_their_own_mistakes_but_not_the_platforms() {
        let mine = RuntimeError::InvalidSpec("service web: no image".into());
        assert_eq!(public_reason("i1", &mine), mine.to_string());
        let engine = RuntimeError::Engine(
            "driver failed programming external connectivity: /var/lib/docker/network/files/x"
                .into(),
        );
        let r = public_reason("i1", &engine);
        assert!(
            r.starts_with("the platform could not run it (error id "),
            "{r}"
        );
        assert!(!r.contains("docker") && !r.contains("/var"), "{r}");
        assert_ne!(r, public_reason("i1", &engine), "an id per failure");
    }

    #[test]
    fn unavailable_runtimes_name_the_capability_only() {
        let fw = runtime_unavailable(&RuntimeError::Firewall("nft: permission denied".into()));
        let Error::Unavailable { what, cause } = fw else {
            panic!("{fw:?}")
        };
        assert_eq!(
            what,
            "sandboxes are unavailable: the host firewall cannot be installed"
        );
        assert!(cause.contains("nft: permission denied"), "{cause}");
        let engine = runtime_unavailable(&RuntimeError::Unavailable(
            "error trying to connect: /var/run/docker.sock".into(),
        ));
        let Error::Unavailable { what, cause } = engine else {
            panic!("{engine:?}")
        };
        assert_eq!(
            what,
            "sandboxes are unavailable: the container engine cannot be used"
        );
        assert!(cause.contains("/var/run/docker.sock"));
    }
}
