//! Running the host's packet-filter programs (`nft`, `conntrack`, `iptables`).
//!
//! Owns starting a program with an optional script on its standard input and turning a failure
//! into an error that carries the program's own message, and the typed nftables batches (the
//! `nftables` crate's JSON schema) through which every change driven by runtime data goes:
//! elements (ports, addresses, marks, interface names), deleting tables, and reading tables
//! and sets back. Nothing a user or the engine chose is ever pasted into nft's text syntax.
//! Used by the gateway's kernel forwarding and by the sandbox firewall; it never decides what a
//! rule says.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression};
use nftables::schema::{Element, NfListObject, NfObject, Nftables, Table};
use nftables::types::NfFamily;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `nft -f -` with `script` (one atomic transaction). Only for the fixed table
/// definitions, whose only variable parts are typed values (see the callers).
pub(crate) async fn nft(script: &str) -> io::Result<()> {
    run("nft", &["-f", "-"], Some(script)).await.map(drop)
}

/// Applies a typed batch (`nft -j -f -`), as one atomic transaction.
pub(crate) async fn apply(batch: Batch<'_>) -> io::Result<()> {
    let json = serde_json::to_string(&batch.to_nftables()).map_err(io::Error::other)?;
    run("nft", &["-j", "-f", "-"], Some(&json)).await.map(drop)
}

/// Runs `nft -j <args>` and reads its answer with the typed schema.
pub(crate) async fn list(args: &[&str]) -> io::Result<Nftables<'static>> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let json = run("nft", &all, None).await?;
    serde_json::from_str(&json).map_err(io::Error::other)
}

/// A table, as named in a batch.
pub(crate) fn table(family: NfFamily, name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family,
        name: Cow::Owned(name.to_string()),
        handle: None,
    })
}

/// Deletes a table (and everything in it).
pub(crate) async fn delete_table(family: NfFamily, name: &str) -> io::Result<()> {
    let mut batch = Batch::new();
    batch.delete(table(family, name));
    apply(batch).await
}

/// Elements of set or map `set` of `table`, for an add or a delete.
pub(crate) fn elements(
    family: NfFamily,
    table: &str,
    set: &str,
    elems: Vec<Expression<'static>>,
) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Owned(set.to_string()),
        elem: Cow::Owned(elems),
    })
}

/// A map element `key : value`.
pub(crate) fn map_elem(
    key: Expression<'static>,
    value: Expression<'static>,
) -> Expression<'static> {
    Expression::List(vec![key, value])
}

/// A concatenation `a . b`.
pub(crate) fn concat(parts: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(parts))
}

/// A string value (an interface name, an address).
pub(crate) fn string(s: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(s.into()))
}

/// Runs a program, feeding `stdin`; its standard output, or an error with its standard error.
pub(crate) async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of the tables of `family` whose name starts with `prefix`.
pub(crate) async fn tables(family: NfFamily, prefix: &str) -> io::Result<Vec<String>> {
    let listed = list(&["list", "tables", family_name(family)]).await?;
    Ok(listed
        .objects
        .iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Table(t)) if t.family == family => {
                Some(t.name.to_string())
            }
            _ => None,
        })
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// A table name `<prefix><owner>_<n>` that no table of `family` has now: a crashed run of the
/// same server may have left its table, still guarding what it guarded, so a new one never
/// takes its name.
pub(crate) async fn fresh_table_name(
    family: NfFamily,
    prefix: &str,
    owner: &str,
) -> io::Result<String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let existing: HashSet<String> = tables(family, prefix).await?.into_iter().collect();
    loop {
        let name = format!("{prefix}{owner}_{}", SEQ.fetch_add(1, Ordering::Relaxed));
        if !existing.contains(&name) {
            return Ok(name);
        }
    }
}

/// The elements of set `set` of `table`.
pub(crate) async fn set_elements(
    family: NfFamily,
    table: &str,
    set: &str,
) -> io::Result<Vec<Expression<'static>>> {
    let listed = list(&["list", "set", family_name(family), table, set]).await?;
    Ok(listed_set_elements(listed))
}

/// The elements of the sets in `nft -j list set …` output.
pub(crate) fn listed_set_elements(listed: Nftables<'static>) -> Vec<Expression<'static>> {
    listed
        .objects
        .into_owned()
        .into_iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Set(s)) => s.elem.map(Cow::into_owned),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The elements of map `map` of `table`, as `(key, value)`.
pub(crate) async fn map_elements(
    family: NfFamily,
    table: &str,
    map: &str,
) -> io::Result<Vec<(Expression<'static>, Expression<'static>)>> {
    let listed = list(&["list", "map", family_name(family), table, map]).await?;
    Ok(listed
        .objects
        .into_owned()
        .into_iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Map(m)) => m.elem.map(Cow::into_owned),
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            Expression::List(mut kv) if kv.len() == 2 => {
                let value = kv.pop()?;
                let key = kv.pop()?;
                Some((key, value))
            }
            _ => None,
        })
        .collect())
}

/// The family as nft's command line names it.
pub(crate) fn family_name(family: NfFamily) -> &'static str {
    match family {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_nft_json() {
        let mut b = Batch::new();
        b.add(elements(
            NfFamily::IP,
            "t",
            "targets",
            vec![map_elem(
                Expression::Number(40001),
                concat(vec![string("172.18.0.2"), Expression::Number(80)]),
            )],
        ));
        b.delete(table(NfFamily::INet, "x"));
        let json = serde_json::to_value(b.to_nftables()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"nftables": [
                {"add": {"element": {"family": "ip", "table": "t", "name": "targets",
                    "elem": [[40001, {"concat": ["172.18.0.2", 80]}]]}}},
                {"delete": {"table": {"family": "inet", "name": "x"}}}
            ]})
        );
    }
}
