//! Request bodies and query strings of the three dialects, read by their own extractors.
//!
//! Accepted JSON bodies are checked against a general JSON parser (`serde_json::Value`), form
//! bodies against `form_urlencoded`: a field comes out exactly as the body says, or empty when
//! the body does not name it.

use std::time::Duration;

use serde_json::Value;
use stratus_api_computeshare::fuzzing as cs;
use stratus_api_memo::fuzzing as memo;
use stratus_api_twocloud::fuzzing as tc;
use stratus_compute::{ComposeApp, Policy};

use crate::Input;

/// MEMO bodies and queries (the first byte picks which): `/login` (JSON or form), `buypkg`
/// (POST body or query), upload `?profile=`, `listobjects?limit=&after=`.
pub fn memo_json(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 5 {
        0 => {
            let body = input.rest();
            if let Ok(fields) = memo::login_body(body) {
                let keys = ["address", "nonce", "domain", "signature"];
                fields_as_sent(body, &keys.map(|k| vec![k]), &fields);
            }
        }
        1 | 2 => {
            let post = data.first().is_some_and(|b| b % 5 == 1);
            let query = input.line();
            let body = input.rest();
            let Some(query) = crate::text(query) else {
                return;
            };
            if let Ok((pkgid, _amount)) = memo::purchase(post, query, body) {
                assert!(pkgid <= i64::MAX as u64);
            }
        }
        3 => {
            if let Some(query) = crate::text(input.rest()) {
                let _ = memo::upload_query(query);
            }
        }
        _ => {
            if let Some(query) = crate::text(input.rest()) {
                if let Ok((_, Some(after))) = memo::list_query(query) {
                    // A `NextAfter` position (digits) or a CID.
                    assert!(after.bytes().all(|b| b.is_ascii_digit()) || memo::cid(&after).is_ok());
                }
            }
        }
    }
}

/// ComputeShare bodies and queries (the first byte picks which): `loginWithClient`/`register`,
/// password change, sandbox create (then its compose file through the policy and its mappings
/// against the app), instance create, mapping create and update, wallet link, `wait` and
/// listing queries.
pub fn computeshare_json(data: &[u8]) {
    let mut input = Input::new(data);
    let which = input.byte() % 9;
    let body = input.rest();
    match which {
        0 => {
            if let Ok((u, p)) = cs::credentials(body) {
                fields_as_sent(body, &[vec!["username"], vec!["password"]], &[u, p]);
            }
        }
        1 => {
            if let Ok((old, new)) = cs::password_change(body) {
                fields_as_sent(
                    body,
                    &[
                        vec!["oldPassword", "old_password"],
                        vec!["newPassword", "new_password"],
                    ],
                    &[old, new],
                );
            }
        }
        2 | 3 => {
            let req = if which == 2 {
                cs::sandbox(body)
            } else {
                cs::instance(body)
            };
            let Ok(req) = req else {
                return;
            };
            assert!(req.compose.len() <= body.len());
            let Ok(app) = ComposeApp::parse(&req.compose, &Policy::default()) else {
                return;
            };
            for m in &req.mappings {
                if m.validate(&app).is_ok() {
                    let port = u16::try_from(m.computer_port).expect("a valid port");
                    let target = app.resolve_port(port).expect("a published port");
                    assert_eq!(target.protocol, stratus_compute::compose::Protocol::Tcp);
                    assert!(target.machine_port() == port || target.container_port == port);
                }
            }
        }
        4 => {
            if let Ok((instance, m)) = cs::mapping_create(body) {
                assert!(!instance.is_empty() && instance.trim() == instance);
                assert!(m.name.len() <= body.len());
            }
        }
        5 => {
            let _ = cs::mapping_update(body);
        }
        6 => {
            let _ = cs::link_wallet(body);
        }
        7 => {
            if let Some(query) = crate::text(body) {
                if let Ok((status, timeout)) = cs::wait_query(query) {
                    assert!((0..=10).contains(&status));
                    assert!(timeout <= Duration::from_secs(300));
                }
            }
        }
        _ => {
            if let Some(query) = crate::text(body) {
                if let Ok(Some(status)) = cs::instance_list_query(query) {
                    assert!((1..=10).contains(&status));
                }
                let _ = cs::other_queries(query);
            }
        }
    }
}

/// TwoCloud credentials: from `Authorization: Basic` (first line, when the first byte is odd)
/// or a JSON/form body. Basic credentials are what their base64 says; body credentials are as
/// sent and name a user; every refusal is a 401 message.
pub fn twocloud_body(data: &[u8]) {
    let mut input = Input::new(data);
    let header = (input.byte() % 2 == 1).then(|| input.line());
    let body = input.rest();
    match tc::credentials(header, body) {
        Ok((user, password)) => match header {
            Some(h) => {
                let h = std::str::from_utf8(h).expect("an accepted header is text");
                let (scheme, b64) = h.trim().split_once(' ').expect("scheme and credentials");
                assert!(scheme.eq_ignore_ascii_case("basic"));
                assert_eq!(
                    stratus_model::token::basic_credentials(b64),
                    Some((user, password))
                );
            }
            None => {
                assert!(!user.is_empty());
                fields_as_sent(
                    body,
                    &[vec!["username"], vec!["password"]],
                    &[user, password],
                );
            }
        },
        Err(message) => assert!(
            message.starts_with("Unauthorized Access: ") || header.is_some(),
            "{message}"
        ),
    }
}

/// Checks accepted string fields against the body: for a JSON object, the value under the
/// field's name (or one of its aliases), empty when absent; for form fields, likewise with
/// `form_urlencoded`. Every field is at most as long as the body, or three times as long for
/// form fields (which read bytes that are not UTF-8 as U+FFFD).
fn fields_as_sent(body: &[u8], names: &[Vec<&str>], fields: &[String]) {
    for f in fields {
        assert!(f.len() <= 3 * body.len());
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => assert!(fields.iter().all(String::is_empty)),
        Some(b'{') => {
            for f in fields {
                assert!(f.len() <= body.len());
            }
            // serde_json skips unknown fields without checking them fully (bytes that are not
            // UTF-8 in their strings, numbers out of range such as 1e400): such bodies are
            // accepted for the fields they do name, and a general parser refuses them.
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return;
            };
            for (aliases, field) in names.iter().zip(fields) {
                let sent = aliases
                    .iter()
                    .find_map(|k| v.get(*k))
                    .map(|s| s.as_str().expect("a string field"))
                    .unwrap_or("");
                assert_eq!(sent, field, "{aliases:?}");
            }
        }
        Some(_) => {
            let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            for (aliases, field) in names.iter().zip(fields) {
                let sent = pairs
                    .iter()
                    .find(|(k, _)| aliases.contains(&k.as_str()))
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                assert_eq!(sent, field, "{aliases:?}");
            }
        }
    }
}
