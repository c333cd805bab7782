//! Test hook: a real `SIGKILL` of this process at a named point of the compute code.
//!
//! Crash consistency is tested the honest way: the server kills itself, with the signal a
//! crash or an operator's `kill -9` delivers, exactly where a test wants it, and a restarted
//! server must clean up. `STRATUS_TEST_KILL_AT` names the point, read once when the process
//! first reaches any point: `compute.create.after_network`, or `compute.create.after_service:3`
//! for the third time that point is reached (here: the third container created). Unset (as in
//! production) every point costs one atomic load. Nothing here changes what the code does
//! before the kill.
//!
//! Points: `compute.create.after_network`, `compute.create.after_service:N`,
//! `compute.delete.after_mark`, `compute.remove.after_containers`,
//! `compute.refund.before_credit`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the point.
pub const ENV: &str = "STRATUS_TEST_KILL_AT";

struct Target {
    point: String,
    /// Kill on the n-th arrival (1 when not given).
    nth: u32,
    seen: AtomicU32,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok().filter(|s| !s.trim().is_empty())?;
            let spec = spec.trim();
            let (point, nth) = match spec.rsplit_once(':') {
                Some((p, n)) => match n.parse::<u32>() {
                    Ok(n) if n > 0 => (p.to_string(), n),
                    _ => (spec.to_string(), 1),
                },
                None => (spec.to_string(), 1),
            };
            tracing::warn!(point = %point, nth, "test hook armed: this process kills itself there");
            Some(Target {
                point,
                nth,
                seen: AtomicU32::new(0),
            })
        })
        .as_ref()
}

/// Marks that the code reached `point`; kills the process with `SIGKILL` if the test hook
/// names it (and this is the arrival it counts to).
pub fn reached(point: &str) {
    let Some(t) = target() else { return };
    if t.point != point {
        return;
    }
    if t.seen.fetch_add(1, Ordering::SeqCst) + 1 == t.nth {
        tracing::warn!(point, "test hook: SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // The signal is delivered before kill(2) returns to a single-threaded caller; other
        // threads stop with the process. Never go on past the point.
        loop {
            std::thread::park();
        }
    }
}
