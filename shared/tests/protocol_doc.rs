//! `docs/protocol.md` checked against the types: for every operation in its
//! tables, the request fields it lists are exactly the fields the request type
//! has, the ones it marks optional (`x?`, `x: T?`) may be absent or nil, the
//! required ones may not (and the error names them), and the types it states
//! (`id`, `username`, `[id]`, `u32`, quoted enum values, …) decode. An operation
//! the engine has and the document lacks (or the reverse) fails the test too.
//! Replies are checked from the other side: `client/tests/python/every_operation.py`,
//! written from the document, reads them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reddit_shared::codec::{decode, encode};
use reddit_shared::protocol::rpc::{visit_all, Rpc, RpcVisitor};
use reddit_shared::protocol::Op;
use rmpv::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One request field as the document lists it.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    optional: bool,
    /// The stated type, if any (`id`, `"inbox" \| "sent"`, `[id]`, `PostRef`).
    ty: Option<String>,
}

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Splits `s` at top-level commas (not inside braces or brackets).
fn split_top(s: &str) -> Vec<String> {
    let (mut parts, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in s.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_fields(spec: &str) -> Vec<Field> {
    let inner = spec
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_else(|| panic!("a request shape is `{{...}}`: {spec}"));
    split_top(inner)
        .into_iter()
        .map(|part| {
            let (name, ty) = match part.split_once(':') {
                Some((n, t)) => (n.trim().to_owned(), Some(t.trim().replace("\\|", "|"))),
                None => (part.clone(), None),
            };
            let optional = name.ends_with('?') || ty.as_deref().is_some_and(|t| t.ends_with('?'));
            Field {
                name: name.trim_end_matches('?').to_owned(),
                optional,
                ty: ty.map(|t| t.trim_end_matches('?').trim().to_owned()),
            }
        })
        .collect()
}

/// Every documented operation and its request fields, from the tables.
fn documented() -> BTreeMap<String, Vec<Field>> {
    let mut out = BTreeMap::new();
    for line in document().lines() {
        if !line.starts_with("| `") {
            continue;
        }
        // Pipes inside cells are escaped (`\|`): keep them out of the split.
        let line = line.replace("\\|", "\u{1}");
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(op) = cells[1].strip_prefix('`').and_then(|c| c.split('`').next()) else {
            continue;
        };
        if Op::parse(op).is_none() {
            continue;
        }
        let request = cells[2..]
            .iter()
            .find(|c| c.starts_with("`{"))
            .unwrap_or_else(|| panic!("no request shape for {op} in: {line}"));
        let spec = request[1..].split('`').next().unwrap_or_default();
        let fields = parse_fields(&spec.replace('\u{1}', "|"));
        assert!(
            out.insert(op.to_owned(), fields).is_none(),
            "{op} is documented twice"
        );
    }
    out
}

fn id() -> Value {
    Value::Binary(uuid::Uuid::now_v7().as_bytes().to_vec())
}

/// A valid value of the stated type `ty`, if the document states one we know.
fn by_type(ty: &str) -> Option<Vec<Value>> {
    let ty = ty.trim();
    if ty.starts_with("[{") || ty.starts_with('{') {
        // A shape spelled out in prose: the field's name picks the sample.
        return None;
    }
    if ty.contains('"') || ty.contains('|') {
        // An enumeration: every listed value must decode.
        return Some(
            ty.split('|')
                .map(|v| {
                    let v = v.trim();
                    match v.parse::<i64>() {
                        Ok(n) => Value::from(n),
                        Err(_) => Value::from(v.trim_matches('"')),
                    }
                })
                .collect(),
        );
    }
    let one = match ty {
        "id" => id(),
        "username" => Value::from("docuser"),
        "subreddit" => Value::from("docsub"),
        "string" => Value::from("text"),
        "bool" => Value::from(true),
        "u32" | "u64" | "int" | "i64" => Value::from(7),
        "[id]" => Value::Array(vec![id()]),
        "[string]" => Value::Array(vec![Value::from("text")]),
        "[subreddit]" => Value::Array(vec![Value::from("docsub")]),
        "PostRef" => Value::Map(vec![
            (Value::from("subreddit"), Value::from("docsub")),
            (Value::from("id"), id()),
        ]),
        "DmView" => {
            let dm = reddit_shared::protocol::dm::DmView {
                id: reddit_shared::ids::DmId::new(),
                from: "docuser".into(),
                to: "other".into(),
                body: "text".into(),
                in_reply_to: None,
                created_at: 1,
                read: false,
            };
            rmpv::decode::read_value(&mut &encode(&dm).ok()?[..]).ok()?
        }
        _ => return None,
    };
    Some(vec![one])
}

/// A valid value for a field the document gives no type for, by its name.
fn by_name(op: &str, name: &str) -> Value {
    match name {
        "username" | "to" => Value::from("docuser"),
        "name" | "subreddit" => Value::from("docsub"),
        "public_key" => Value::from("ab".repeat(32)),
        "signature" => Value::from("cd".repeat(64)),
        "challenge" => Value::from("00ff"),
        "title" | "body" | "description" => Value::from("text"),
        "id" | "post_id" | "parent_id" | "dm_id" | "root" => id(),
        "limit" | "audit" | "offset" | "max_violations" => Value::from(10),
        "sort" => Value::from("new"),
        "items" => Value::Array(vec![]),
        _ => panic!("the test has no sample for field `{name}` of {op}; add one"),
    }
}

fn samples(op: &str, f: &Field) -> Vec<Value> {
    f.ty.as_deref()
        .and_then(by_type)
        .unwrap_or_else(|| vec![by_name(op, &f.name)])
}

fn map(entries: Vec<(String, Value)>) -> Vec<u8> {
    let value = Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).expect("encodes");
    out
}

/// Decodes and validates like the engine does.
fn accepts<R: Rpc>(bytes: &[u8]) -> Result<R, String> {
    let r: R = decode(bytes).map_err(|e| e.message)?;
    r.validate().map_err(|e| e.message)?;
    Ok(r)
}

struct Check {
    doc: BTreeMap<String, Vec<Field>>,
    seen: BTreeSet<String>,
    failures: Vec<String>,
}

impl RpcVisitor for Check {
    fn visit<R: Rpc>(&mut self) {
        let op = R::OP.as_str();
        self.seen.insert(op.to_owned());
        let Some(fields) = self.doc.get(op).cloned() else {
            self.failures.push(format!(
                "{op}: the engine has it, docs/protocol.md does not"
            ));
            return;
        };
        let fail = |why: String| format!("{op}: {why}");
        let required: Vec<(String, Value)> = fields
            .iter()
            .filter(|f| !f.optional)
            .map(|f| (f.name.clone(), samples(op, f).remove(0)))
            .collect();

        // The required fields alone are a valid request.
        let decoded = match accepts::<R>(&map(required.clone())) {
            Ok(r) => r,
            Err(e) => {
                self.failures.push(fail(format!(
                    "the documented required fields are refused: {e}"
                )));
                return;
            }
        };

        // Its fields are exactly the documented ones.
        let bytes = encode(&decoded).expect("encodes");
        let value = rmpv::decode::read_value(&mut &bytes[..]).expect("decodes");
        let actual: BTreeSet<String> = match value {
            Value::Map(m) => m
                .into_iter()
                .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                .collect(),
            other => {
                self.failures
                    .push(fail(format!("the request is not a map: {other}")));
                return;
            }
        };
        let documented: BTreeSet<String> = fields.iter().map(|f| f.name.clone()).collect();
        if actual != documented {
            self.failures.push(fail(format!(
                "fields differ: the type has {actual:?}, the document lists {documented:?}"
            )));
        }

        // Optional fields may be nil, and take every value of their stated type.
        for f in fields.iter().filter(|f| f.optional) {
            let mut with = required.clone();
            with.push((f.name.clone(), Value::Nil));
            if let Err(e) = accepts::<R>(&map(with)) {
                self.failures
                    .push(fail(format!("optional `{}` refuses nil: {e}", f.name)));
            }
            if let Some(values) = f.ty.as_deref().and_then(by_type) {
                for v in values {
                    let mut with = required.clone();
                    with.push((f.name.clone(), v.clone()));
                    if let Err(e) = accepts::<R>(&map(with)) {
                        self.failures.push(fail(format!(
                            "`{}` refuses {v} (documented as {:?}): {e}",
                            f.name, f.ty
                        )));
                    }
                }
            }
        }

        // Every value of a required field's stated type is accepted.
        for f in fields.iter().filter(|f| !f.optional) {
            for v in samples(op, f).into_iter().skip(1) {
                let mut with: Vec<_> = required
                    .iter()
                    .filter(|(k, _)| *k != f.name)
                    .cloned()
                    .collect();
                with.push((f.name.clone(), v.clone()));
                if let Err(e) = accepts::<R>(&map(with)) {
                    self.failures
                        .push(fail(format!("`{}` refuses {v}: {e}", f.name)));
                }
            }
        }

        // Each required field is required, and the error names it.
        for f in fields.iter().filter(|f| !f.optional) {
            let without: Vec<_> = required
                .iter()
                .filter(|(k, _)| *k != f.name)
                .cloned()
                .collect();
            match accepts::<R>(&map(without)) {
                Ok(_) => self.failures.push(fail(format!(
                    "`{}` is documented as required but may be left out",
                    f.name
                ))),
                Err(e) if !e.contains(&f.name) => self.failures.push(fail(format!(
                    "leaving out `{}` is refused without naming it: {e}",
                    f.name
                ))),
                Err(_) => {}
            }
        }
    }
}

#[test]
fn the_protocol_document_matches_the_request_types() {
    let mut check = Check {
        doc: documented(),
        seen: BTreeSet::new(),
        failures: Vec::new(),
    };
    assert!(
        check.doc.len() >= 20,
        "the tables were not found: {:?}",
        check.doc.keys()
    );
    visit_all(&mut check);
    for op in check.doc.keys() {
        if !check.seen.contains(op) {
            check
                .failures
                .push(format!("{op}: documented, but no request type has it"));
        }
    }
    let all: BTreeSet<&str> = Op::ALL.iter().map(|o| o.as_str()).collect();
    let seen: BTreeSet<&str> = check.seen.iter().map(String::as_str).collect();
    assert_eq!(all, seen, "every operation has a request type in the table");
    assert!(
        check.failures.is_empty(),
        "docs/protocol.md and the types disagree:\n  {}",
        check.failures.join("\n  ")
    );
}

#[test]
fn the_field_parser_reads_the_documents_notation() {
    let f = parse_fields(r#"{folder?: "inbox" | "sent", root: id?, ids: [id], body}"#);
    assert_eq!(f.len(), 4);
    assert!(f[0].optional && f[0].name == "folder");
    assert!(f[1].optional && f[1].ty.as_deref() == Some("id"));
    assert!(!f[2].optional && f[2].ty.as_deref() == Some("[id]"));
    assert!(!f[3].optional && f[3].ty.is_none());
}
