//! Reading a YAML file into JSON with the line and column of every node, so that any later check
//! (schema, expressions, cross-references) can point at the exact place in the file.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;
use serde_saphyr::budget::Budget;

/// Files larger than this are refused before parsing: no workflow or adapter needs more.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A parsed document: its JSON value and where each node and each mapping key sits, by JSON
/// pointer (`/steps/0/with`).
#[derive(Debug, Clone, Default)]
pub struct Located {
    pub value: Value,
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

impl Located {
    /// Where the value at `pointer` is, or the nearest enclosing node that has a position.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.nearest(pointer, &self.values)
    }

    /// Where the key of the member at `pointer` is (for "unknown field" and similar), falling back
    /// to its value.
    pub fn key_pos(&self, pointer: &str) -> Pos {
        self.keys
            .get(pointer)
            .copied()
            .unwrap_or_else(|| self.value_pos(pointer))
    }

    fn nearest(&self, pointer: &str, table: &HashMap<String, Pos>) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = table.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Pos { line: 1, col: 1 },
            }
        }
    }
}

/// Why a file could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    pub limit: bool,
}

/// A YAML node as read, with positions, before it becomes JSON.
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

/// A mapping key: YAML allows any scalar, JSON needs text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Node::deserialize(d)? {
            Node::String(s) => Ok(Key(s)),
            Node::Number(n) => Ok(Key(n.to_string())),
            Node::Bool(b) => Ok(Key(b.to_string())),
            Node::Null => Ok(Key("null".to_owned())),
            Node::Seq(_) | Node::Map(_) => {
                Err(de::Error::custom("a mapping key must be a plain scalar"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom("a number must be finite (no .inf or .nan)"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

fn pos_of(location: &serde_saphyr::Location) -> Pos {
    Pos {
        line: location.line() as u32,
        col: location.column() as u32,
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn lower(node: Spanned<Node>, pointer: String, out: &mut Located) -> Value {
    out.values.insert(pointer.clone(), pos_of(&node.referenced));
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Number(n) => Value::Number(n),
        Node::String(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| lower(item, format!("{pointer}/{i}"), out))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let child = format!("{pointer}/{}", escape(&key.value.0));
                out.keys.insert(child.clone(), pos_of(&key.referenced));
                let v = lower(value, child, out);
                map.insert(key.value.0, v);
            }
            Value::Object(map)
        }
    }
}

fn options() -> serde_saphyr::Options {
    let mut budget = Budget::default();
    budget.max_events = 200_000;
    budget.max_aliases = 200;
    budget.max_anchors = 200;
    budget.max_nodes = 100_000;
    budget.max_depth = 48;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // YAML 1.2's booleans, `true` and `false` only: a trigger is written `on:`, which YAML 1.1
    // reads as `true`, and a value `no` (Norway's code) stays text.
    options.strict_booleans = true;
    options
}

fn innermost(e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    let mut e = e;
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = e
    {
        e = error;
    }
    e
}

/// Our own words for the errors a definition author can cause and the library words in terms of
/// its own options (a budget, a duplicate-key policy) that the author never sees.
fn explain(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach as B;
    Some(match innermost(e) {
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => match key {
            Some(key) => format!("key `{key}` appears twice in the same mapping"),
            None => "a key appears twice in the same mapping".to_owned(),
        },
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            B::Depth { .. } => "nesting is deeper than the limit of 48 levels".to_owned(),
            B::Nodes { .. } | B::Events { .. } => {
                "the document expands to more than 100000 values (an alias bomb?)".to_owned()
            }
            B::Aliases { .. } | B::Anchors { .. } | B::AliasAnchorRatio { .. } => {
                "the document uses more than 200 anchors or aliases".to_owned()
            }
            B::ScalarBytes { .. } | B::InputBytes { .. } => {
                format!("the document holds more than {MAX_FILE_BYTES} bytes of text")
            }
            other => format!("the document exceeds a parser limit ({other:?})"),
        },
        _ => return None,
    })
}

/// Parses one YAML document, refusing hostile input (oversized files, deep nesting, alias bombs)
/// with an error instead of exhausting memory.
pub fn parse(text: &str) -> Result<Located, SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "the file is {} bytes, over the limit of {MAX_FILE_BYTES}",
                text.len()
            ),
            limit: true,
        });
    }
    let node: Spanned<Node> =
        serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
            let pos = e
                .location()
                .map(|l| pos_of(&l))
                .unwrap_or(Pos { line: 1, col: 1 });
            if let Some(message) = explain(&e) {
                return SyntaxError {
                    pos,
                    limit: matches!(innermost(&e), serde_saphyr::Error::Budget { .. }),
                    message,
                };
            }
            let message = e.to_string();
            let first = message.lines().next().unwrap_or("invalid YAML").trim();
            let first = first.split(" at line ").next().unwrap_or(first);
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let first = match first
                .strip_prefix("line ")
                .and_then(|rest| rest.split_once(": "))
            {
                Some((_, message)) => message,
                None => first,
            }
            .to_owned();
            let limit =
                first.to_lowercase().contains("budget") || first.to_lowercase().contains("limit");
            SyntaxError {
                pos,
                message: first,
                limit,
            }
        })?;
    let mut out = Located::default();
    out.value = lower(node, String::new(), &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_positions_of_keys_and_values() {
        let doc = parse("name: birth\nsteps:\n  - id: a\n    with: {x: 1}\n").unwrap();
        assert_eq!(doc.value["steps"][0]["with"]["x"], 1);
        assert_eq!(doc.key_pos("/steps"), Pos { line: 2, col: 1 });
        assert_eq!(doc.value_pos("/steps/0/id"), Pos { line: 3, col: 9 });
        assert_eq!(doc.key_pos("/steps/0/with"), Pos { line: 4, col: 5 });
        assert_eq!(doc.value_pos("/steps/0/with/x"), Pos { line: 4, col: 15 });
        assert_eq!(
            doc.value_pos("/steps/0/nothing/here"),
            Pos { line: 3, col: 5 }
        );
    }

    #[test]
    fn refuses_an_alias_bomb() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.limit, "{err:?}");
    }

    #[test]
    fn refuses_deep_nesting_and_huge_files() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        assert!(parse(&deep).is_err());
        let huge = "a: 1\n".repeat(MAX_FILE_BYTES / 4);
        assert!(parse(&huge).unwrap_err().limit);
    }

    #[test]
    fn on_is_a_key_and_only_true_and_false_are_booleans() {
        let doc = parse("on: [1]\nflag: yes\nok: true\n").unwrap();
        assert_eq!(
            doc.value,
            serde_json::json!({"on": [1], "flag": "yes", "ok": true})
        );
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3, "{err:?}");
    }
}
