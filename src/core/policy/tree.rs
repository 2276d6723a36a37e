//! How a policy (or an API body) is read so that an error names its field: the text is first
//! read into a [`Tree`], which keeps every key as written, in order and twice if written
//! twice, and the typed value is then read from the tree by a deserializer that knows the
//! path of every node it hands out. An error made anywhere below takes the path of the
//! innermost node it passed through (`tiers.premium.limits.burst.refill`, `routes[1].method`).
//!
//! This does what `serde_path_to_error` did over serde_json's own reader, in a fraction of
//! the code: a wrapper around every visitor of every type made that crate about 86 KB of the
//! wasm; here the types' visitors are called as they are, and only a node's path is carried.

use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON document as written: objects keep their keys in order, repeats included (a
/// `serde_json::Value` would keep only the last, and a repeated key must be refused).
#[derive(Debug, PartialEq)]
pub enum Tree {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    String(String),
    Array(Vec<Tree>),
    Object(Vec<(String, Tree)>),
}

impl Tree {
    /// The tree of a JSON text; serde_json's error (a syntax error, trailing text) if it is
    /// not one.
    pub fn parse(text: &str) -> Result<Tree, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Tree, E> {
                Ok(Tree::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Tree, E> {
                Ok(Tree::Unsigned(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Tree, E> {
                Ok(Tree::Signed(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Tree, E> {
                Ok(Tree::Float(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Tree, E> {
                Ok(Tree::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Tree, E> {
                Ok(Tree::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Tree::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Tree::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a node is: the document, a key of an object, an element of an array. Built on the
/// stack as the reader goes down, and written out only for an error.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    /// `tiers.premium.limits`, `routes[0].path`; nothing for the document itself.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(up, key) => write!(f, "{up}.{key}"),
            Path::Index(up, i) => write!(f, "{up}[{i}]"),
        }
    }
}

/// An error in reading a typed value from a tree: what is wrong, and where (`None` until the
/// innermost node it came through gives it its path).
#[derive(Debug)]
pub struct Error {
    pub path: Option<String>,
    pub message: String,
}

impl Error {
    fn at(mut self, path: &Path) -> Error {
        self.path.get_or_insert_with(|| path.to_string());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Error {
        Error { path: None, message: message.to_string() }
    }
}

/// Reads a `T` from `tree`; an error carries its path from the tree's root (empty for the
/// root itself).
pub fn read<'de, T: Deserialize<'de>>(tree: &'de Tree) -> Result<T, Error> {
    T::deserialize(Node { tree, path: Path::Root }).map_err(|e| e.at(&Path::Root))
}

/// One node of the tree, as a deserializer, with its path.
struct Node<'de, 'p> {
    tree: &'de Tree,
    path: Path<'p>,
}

impl<'de> Deserializer<'de> for Node<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = &self.path;
        let made = match self.tree {
            Tree::Null => visitor.visit_unit(),
            Tree::Bool(b) => visitor.visit_bool(*b),
            Tree::Unsigned(n) => visitor.visit_u64(*n),
            Tree::Signed(n) => visitor.visit_i64(*n),
            Tree::Float(n) => visitor.visit_f64(*n),
            Tree::String(s) => visitor.visit_borrowed_str(s),
            Tree::Array(items) => visitor.visit_seq(Items { items: items.iter(), next: 0, path }),
            Tree::Object(entries) => visitor.visit_map(Entries { entries: entries.iter(), value: None, path }),
        };
        made.map_err(|e| e.at(path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.tree {
            Tree::Null => visitor.visit_none().map_err(|e: Error| e.at(&self.path)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// An enum of names, as serde_json reads one: a string is its unit variant.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.tree {
            Tree::String(s) => {
                let name = BorrowedStrDeserializer::<Error>::new(s);
                visitor.visit_enum(name).map_err(|e| e.at(&self.path))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// An array's elements, each with its index.
struct Items<'de, 'p> {
    items: std::slice::Iter<'de, Tree>,
    next: usize,
    path: &'p Path<'p>,
}

impl<'de> SeqAccess<'de> for Items<'de, '_> {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
        let Some(tree) = self.items.next() else { return Ok(None) };
        let path = Path::Index(self.path, self.next);
        self.next += 1;
        seed.deserialize(Node { tree, path }).map(Some).map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An object's entries, each value with its key.
struct Entries<'de, 'p> {
    entries: std::slice::Iter<'de, (String, Tree)>,
    /// The value of the key last read, with that key.
    value: Option<&'de (String, Tree)>,
    path: &'p Path<'p>,
}

impl<'de> MapAccess<'de> for Entries<'de, '_> {
    type Error = Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
        let Some(entry) = self.entries.next() else { return Ok(None) };
        self.value = Some(entry);
        // A key that is refused (an unknown field) is wrong at its own path.
        let key = BorrowedStrDeserializer::<Error>::new(&entry.0);
        seed.deserialize(key).map(Some).map_err(|e| e.at(&Path::Key(self.path, &entry.0)))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let Some((key, tree)) = self.value.take() else {
            return Err(de::Error::custom("a value was read before its key"));
        };
        let path = Path::Key(self.path, key);
        seed.deserialize(Node { tree, path }).map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Vec<Inner>,
        #[serde(default)]
        name: Option<String>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u8,
    }

    fn error(text: &str) -> (String, String) {
        let tree = Tree::parse(text).unwrap();
        let e = read::<Outer>(&tree).unwrap_err();
        (e.path.unwrap_or_default(), e.message)
    }

    #[test]
    fn a_tree_keeps_every_key_in_order() {
        let tree = Tree::parse(r#"{"b": 1, "a": [true, null, -2, 1.5, "x"], "b": {}}"#).unwrap();
        let Tree::Object(entries) = tree else { panic!() };
        let keys: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, ["b", "a", "b"]);
        let items = [Tree::Bool(true), Tree::Null, Tree::Signed(-2), Tree::Float(1.5), Tree::String("x".into())];
        assert_eq!(entries[1].1, Tree::Array(items.into()));
    }

    #[test]
    fn an_error_names_the_innermost_node() {
        assert_eq!(error(r#"{"inner": [{"n": 1}, {"n": 300}]}"#).0, "inner[1].n");
        let (path, message) = error(r#"{"inner": [{"n": 1, "m": 2}]}"#);
        assert_eq!(path, "inner[0].m");
        assert!(message.starts_with("unknown field `m`"), "{message}");
        assert_eq!(error(r#"{"inner": [{}]}"#), ("inner[0]".into(), "missing field `n`".into()));
        assert_eq!(
            error(r#"{"inner": [], "name": 5}"#),
            ("name".into(), "invalid type: integer `5`, expected a string".into())
        );
        assert_eq!(error(r#"{}"#), (String::new(), "missing field `inner`".into()));
        assert_eq!(error(r#"[]"#).0, "");
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text = r#"{"inner": [{"n": 7}], "name": null}"#;
        let tree = Tree::parse(text).unwrap();
        let from_tree = read::<Outer>(&tree).unwrap();
        let from_text: Outer = serde_json::from_str(text).unwrap();
        assert_eq!((from_tree.inner.len(), from_tree.inner[0].n, from_tree.name), (1, 7, None));
        assert_eq!((from_text.inner.len(), from_text.inner[0].n, from_text.name), (1, 7, None));
        let any: serde_json::Value = read(&tree).unwrap();
        assert_eq!(any, serde_json::from_str::<serde_json::Value>(text).unwrap());
    }
}
