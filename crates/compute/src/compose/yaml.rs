//! Bounded YAML loading for compose files.
//!
//! Owns turning untrusted YAML text into a small tree ([`Node`]) while counting every node and
//! scalar byte it produces, so that alias expansion ("billion laughs" and its quadratic cousins)
//! stops at a fixed budget instead of exhausting memory. It also applies merge keys (`<<`) and
//! compose's `${VAR}` interpolation against an empty environment. It must never read the server's
//! environment variables or any file: a user's compose file sees nothing of the host.

use std::cell::Cell;
use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::ComposeError;

/// A loaded YAML value. Mapping keys are strings (scalar keys are converted).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(IndexMap<String, Node>),
}

impl Node {
    /// A short name of the node's kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// How much a document may expand to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub nodes: usize,
    pub scalar_bytes: usize,
}

const TOO_COMPLEX: &str = "\u{0}stratus: expansion budget exceeded";

struct Counter {
    nodes: Cell<usize>,
    bytes: Cell<usize>,
}

impl Counter {
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let n = self.nodes.get();
        let b = self.bytes.get();
        if n == 0 || b < bytes {
            return Err(E::custom(TOO_COMPLEX));
        }
        self.nodes.set(n - 1);
        self.bytes.set(b - bytes);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct NodeSeed<'a> {
    counter: &'a Counter,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        self.counter.charge(1)?;
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        self.counter.charge(8)?;
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        self.counter.charge(8)?;
        match i64::try_from(v) {
            Ok(i) => Ok(Node::Int(i)),
            Err(_) => Ok(Node::Str(v.to_string())),
        }
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        self.counter.charge(16)?;
        match i64::try_from(v) {
            Ok(i) => Ok(Node::Int(i)),
            Err(_) => Ok(Node::Str(v.to_string())),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        self.visit_i128(i128::try_from(v).unwrap_or(i128::MAX))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        self.counter.charge(8)?;
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.counter.charge(v.len())?;
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        self.counter.charge(v.len())?;
        Ok(Node::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.counter.charge(1)?;
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        self.counter.charge(1)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        self.counter.charge(1)?;
        let mut out = IndexMap::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Node::Str(s) => s,
                Node::Int(i) => i.to_string(),
                Node::Float(f) => f.to_string(),
                Node::Bool(b) => b.to_string(),
                other => {
                    return Err(de::Error::custom(format!(
                        "mapping keys must be strings, found {}",
                        other.kind()
                    )))
                }
            };
            let value = map.next_value_seed(self)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            out.insert(key, value);
        }
        Ok(Node::Map(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Node, A::Error> {
        Err(de::Error::custom(
            "YAML tags (such as !reset) are not supported",
        ))
    }
}

/// Parses `text` as one YAML document within `budget`, then applies merge keys.
pub(crate) fn load(text: &str, budget: Budget) -> Result<Node, ComposeError> {
    let counter = Counter {
        nodes: Cell::new(budget.nodes),
        bytes: Cell::new(budget.scalar_bytes),
    };
    let de = serde_norway::Deserializer::from_str(text);
    let mut node = match (NodeSeed { counter: &counter }).deserialize(de) {
        Ok(node) => node,
        Err(e) => {
            let msg = e.to_string();
            if msg.contains(TOO_COMPLEX) || msg.contains("repetition limit exceeded") {
                return Err(ComposeError::TooComplex {
                    max_nodes: budget.nodes,
                });
            }
            return Err(ComposeError::NotYaml(msg));
        }
    };
    apply_merge(&mut node, 0)?;
    Ok(node)
}

const MERGE_KEY: &str = "<<";

/// Resolves `<<: *anchor` and `<<: [*a, *b]`: keys already present win, earlier sources win over
/// later ones. Moves the merged nodes, so merging never copies (and never amplifies) the tree.
fn apply_merge(node: &mut Node, depth: usize) -> Result<(), ComposeError> {
    if depth > 256 {
        return Err(ComposeError::NotYaml(
            "document is nested too deeply".into(),
        ));
    }
    match node {
        Node::Seq(items) => {
            for item in items {
                apply_merge(item, depth + 1)?;
            }
        }
        Node::Map(map) => {
            for value in map.values_mut() {
                apply_merge(value, depth + 1)?;
            }
            if let Some(sources) = map.shift_remove(MERGE_KEY) {
                let sources = match sources {
                    Node::Map(m) => vec![m],
                    Node::Seq(items) => {
                        let mut maps = Vec::with_capacity(items.len());
                        for item in items {
                            match item {
                                Node::Map(m) => maps.push(m),
                                other => return Err(merge_error(&other)),
                            }
                        }
                        maps
                    }
                    other => return Err(merge_error(&other)),
                };
                for source in sources {
                    for (k, v) in source {
                        map.entry(k).or_insert(v);
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn merge_error(found: &Node) -> ComposeError {
    ComposeError::NotYaml(format!(
        "a merge key (<<) needs a mapping or a list of mappings, found {}",
        found.kind()
    ))
}

/// Applies compose interpolation to every string value (not to keys), with no variable set:
/// `$$` is a literal `$`, `${X:-default}` / `${X-default}` give the default, `${X:?msg}` /
/// `${X?msg}` are errors, `${X}`, `$X`, `${X:+alt}` and `${X+alt}` are empty.
pub(crate) fn interpolate_tree(node: &mut Node, path: &str) -> Result<(), ComposeError> {
    match node {
        Node::Str(s) if s.contains('$') => {
            *s = interpolate(s).map_err(|message| ComposeError::Invalid {
                field: path.to_string(),
                message,
            })?;
        }
        Node::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"))?;
            }
        }
        Node::Map(map) => {
            for (k, v) in map.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate_tree(v, &child)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Interpolates one string with an empty environment.
pub(crate) fn interpolate(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body)
                .ok_or_else(|| format!("invalid interpolation format in {s:?}: unclosed ${{"))?;
            out.push_str(&expand(&body[..end])?);
            rest = &body[end + 1..];
        } else {
            let name_len = after
                .char_indices()
                .find(|&(i, c)| {
                    !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
                })
                .map(|(i, _)| i)
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
            }
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the `}` closing a `${` whose body starts at `body`, honouring nesting.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Expands the inside of `${…}` with every variable unset.
fn expand(body: &str) -> Result<String, String> {
    let name_len = body
        .char_indices()
        .find(|&(_, c)| !(c == '_' || c.is_ascii_alphanumeric()))
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_len);
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(format!("invalid interpolation format: ${{{body}}}"));
    }
    let (kind, arg) = if let Some(a) = op.strip_prefix(":-") {
        ('-', a)
    } else if let Some(a) = op.strip_prefix(":?") {
        ('?', a)
    } else if let Some(a) = op.strip_prefix(":+") {
        ('+', a)
    } else if let Some(a) = op.strip_prefix('-') {
        ('-', a)
    } else if let Some(a) = op.strip_prefix('?') {
        ('?', a)
    } else if let Some(a) = op.strip_prefix('+') {
        ('+', a)
    } else if op.is_empty() {
        return Ok(String::new());
    } else {
        return Err(format!("invalid interpolation format: ${{{body}}}"));
    };
    match kind {
        '-' => interpolate(arg),
        '?' => Err(format!(
            "required variable {name} is missing a value: {arg}"
        )),
        _ => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        nodes: 10_000,
        scalar_bytes: 100_000,
    };

    #[test]
    fn loads_scalars_lists_and_maps() {
        let n = load("a: 1\nb: [x, true, 1.5, ~]\nc: {d: e}\n", BUDGET).unwrap();
        let Node::Map(m) = n else { panic!() };
        assert_eq!(m["a"], Node::Int(1));
        assert_eq!(
            m["b"],
            Node::Seq(vec![
                Node::Str("x".into()),
                Node::Bool(true),
                Node::Float(1.5),
                Node::Null
            ])
        );
        assert!(matches!(&m["c"], Node::Map(c) if c["d"] == Node::Str("e".into())));
    }

    #[test]
    fn merge_keys_keep_local_values() {
        let n = load(
            "x-base: &base {image: a, restart: always}\nsvc:\n  <<: *base\n  image: b\n",
            BUDGET,
        )
        .unwrap();
        let Node::Map(m) = n else { panic!() };
        let Node::Map(svc) = &m["svc"] else { panic!() };
        assert_eq!(svc["image"], Node::Str("b".into()));
        assert_eq!(svc["restart"], Node::Str("always".into()));
        assert!(!svc.contains_key("<<"));
    }

    #[test]
    fn billion_laughs_stops_at_the_budget() {
        let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = load(&doc, BUDGET).unwrap_err();
        assert!(matches!(err, ComposeError::TooComplex { .. }), "{err}");
    }

    #[test]
    fn quadratic_alias_fan_out_stops_at_the_budget() {
        let mut doc = String::from("a: &a [");
        doc.push_str(&vec!["x"; 2000].join(","));
        doc.push_str("]\nb: [");
        doc.push_str(&vec!["*a"; 2000].join(","));
        doc.push_str("]\n");
        let err = load(&doc, BUDGET).unwrap_err();
        assert!(matches!(err, ComposeError::TooComplex { .. }), "{err}");
    }

    #[test]
    fn long_strings_count_against_the_budget() {
        let big = "y".repeat(60_000);
        let doc = format!("a: &a {big}\nb: [*a, *a]\n");
        assert!(matches!(
            load(&doc, BUDGET),
            Err(ComposeError::TooComplex { .. })
        ));
    }

    #[test]
    fn rejects_duplicate_keys_tags_and_garbage() {
        assert!(matches!(
            load("a: 1\na: 2\n", BUDGET),
            Err(ComposeError::NotYaml(m)) if m.contains("duplicate")
        ));
        assert!(matches!(
            load("a: !reset []\n", BUDGET),
            Err(ComposeError::NotYaml(m)) if m.contains("tags")
        ));
        assert!(matches!(
            load("a: [1, 2\n", BUDGET),
            Err(ComposeError::NotYaml(_))
        ));
        assert!(matches!(
            load("a: 1\n---\nb: 2\n", BUDGET),
            Err(ComposeError::NotYaml(_))
        ));
    }

    #[test]
    fn interpolation_uses_an_empty_environment() {
        assert_eq!(interpolate("a$$b").unwrap(), "a$b");
        assert_eq!(interpolate("${HOME}/x").unwrap(), "/x");
        assert_eq!(interpolate("$HOME/x").unwrap(), "/x");
        assert_eq!(interpolate("${PORT:-8080}").unwrap(), "8080");
        assert_eq!(interpolate("${PORT-80}").unwrap(), "80");
        assert_eq!(interpolate("${A:-${B:-nested}}").unwrap(), "nested");
        assert_eq!(interpolate("${A:+set}").unwrap(), "");
        assert_eq!(interpolate("cost: 5$").unwrap(), "cost: 5$");
        assert_eq!(interpolate("$1").unwrap(), "$1");
        assert!(interpolate("${PASSWORD:?set a password}")
            .unwrap_err()
            .contains("PASSWORD"));
        assert!(interpolate("${UNCLOSED").is_err());
        assert!(interpolate("${1X}").is_err());
    }
}
