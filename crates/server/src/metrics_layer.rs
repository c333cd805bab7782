//! Request metrics: `stratus_http_requests_total{method,route,status}` and
//! `stratus_http_request_duration_seconds{method,route}`.
//!
//! Building metric keys (label strings, hashing into the registry) on every request costs about a
//! fifth of a small request's time, so resolved handles are cached per thread, keyed by the
//! address of the route template (stable for the router's life; the template text is compared on
//! every hit so a reused address can never mislabel).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use metrics::{Counter, Histogram};

struct Handles {
    route: String,
    requests: Counter,
    duration: Histogram,
}

thread_local! {
    static CACHE: RefCell<HashMap<(usize, u8, u16), Handles>> = RefCell::new(HashMap::new());
}

fn method_code(m: &Method) -> (u8, &'static str) {
    match *m {
        Method::GET => (0, "GET"),
        Method::POST => (1, "POST"),
        Method::PUT => (2, "PUT"),
        Method::DELETE => (3, "DELETE"),
        Method::HEAD => (4, "HEAD"),
        Method::PATCH => (5, "PATCH"),
        Method::OPTIONS => (6, "OPTIONS"),
        _ => (7, "OTHER"),
    }
}

pub async fn record(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let (mcode, mname) = method_code(req.method());
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let route = matched.as_ref().map(|m| m.as_str()).unwrap_or("unmatched");
    let key = (route.as_ptr() as usize, mcode, status);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let h = match c.get(&key) {
            Some(h) if h.route == route => h,
            _ => {
                let route_s = route.to_string();
                c.insert(
                    key,
                    Handles {
                        requests: metrics::counter!("stratus_http_requests_total",
                            "method" => mname, "route" => route_s.clone(), "status" => status.to_string()),
                        duration: metrics::histogram!("stratus_http_request_duration_seconds",
                            "method" => mname, "route" => route_s.clone()),
                        route: route_s,
                    },
                );
                &c[&key]
            }
        };
        h.requests.increment(1);
        h.duration.record(elapsed);
    });
    resp
}
