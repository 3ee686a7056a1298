//! bastion_fastcheck: proves a JSON document valid against a compiled *check program* while
//! serde_json parses it, without building a Python object.
//!
//! The program is made in Python (`bastion.openapi.fastcheck`) from a JSON Schema that
//! jsonschema-rs enforces; it keeps only keywords whose meaning this crate reproduces exactly.
//! The answer is one-sided: `true` means the document is valid under that schema (the caller
//! may forward it untouched); `false` means *not proven* (malformed, invalid, deeper than the
//! limit, or something this crate does not decide, such as a `format`), and the caller runs
//! the full path: orjson and jsonschema-rs, which also write the error message. So every
//! shortcut taken here must make the answer stricter, never laxer.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use regex::Regex;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

const T_NULL: u8 = 1;
const T_BOOL: u8 = 2;
const T_INT: u8 = 4; // "integer": a number token without fraction or exponent (stricter than JSON Schema)
const T_NUM: u8 = 8; // "number": any number
const T_STR: u8 = 16;
const T_ARR: u8 = 32;
const T_OBJ: u8 = 64;
const T_ALL: u8 = 127;
/// Integers up to this magnitude convert to f64 exactly.
const EXACT_F64: i128 = 1 << 53;
const NONE: i32 = -2; // no keyword: anything is allowed
/// allOf/anyOf may parse again at most REPARSE_FACTOR × the body's length + REPARSE_FLOOR bytes.
const REPARSE_FACTOR: usize = 8;
const REPARSE_FLOOR: usize = 4096;
const FALSE: i32 = -1; // the false schema: nothing is allowed

#[derive(Clone, Copy, Debug)]
enum Num {
    I(i128),
    F(f64),
}

/// `a` compared with `b`, or None when the comparison could be inexact.
fn cmp(a: Num, b: Num) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(x), Num::F(y)) if x.abs() <= EXACT_F64 => (x as f64).partial_cmp(&y),
        (Num::F(x), Num::I(y)) if y.abs() <= EXACT_F64 => x.partial_cmp(&(y as f64)),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Str(String),
}

struct StrGuard {
    min_len: usize,
    pattern: Regex,
}

/// One key an object node knows: whether `properties` declares it (else its value meets the
/// node's `additional`), its child, and its bit among the required names (or u32::MAX).
#[derive(Clone, Copy)]
struct KeyInfo {
    declared: bool,
    child: i32,
    required_bit: u32,
}

#[derive(Default)]
struct Node {
    never: bool,
    types: u8,
    // objects
    keys: Vec<(String, KeyInfo)>,
    key_map: Option<HashMap<String, KeyInfo>>,
    required_mask: u64,
    additional: i32,
    key_not: Option<Regex>,
    max_props: Option<usize>,
    // arrays
    items: i32,
    prefix: Vec<i32>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    // strings
    min_len: Option<usize>,
    max_len: Option<usize>,
    pattern: Option<Regex>,
    not_str: Option<StrGuard>,
    unproven_strings: bool,
    // numbers
    min: Option<Num>,
    max: Option<Num>,
    xmin: Option<Num>,
    xmax: Option<Num>,
    multiple_of: Option<i128>,
    // both
    enumeration: Option<Vec<Scalar>>,
    all_of: Vec<i32>,
    any_of: Vec<i32>,
}

struct Program {
    nodes: Vec<Node>,
    /// What NONE stands for: any value, still walked so that its depth is bounded.
    any: Node,
    root: i32,
    max_depth: usize,
}

// ---------------------------------------------------------------------------------------------
// Building a program from its JSON description (errors name the field; Python reports them).

type BuildResult<T> = Result<T, String>;

fn as_index(v: &Value, count: usize, what: &str) -> BuildResult<i32> {
    let i = v.as_i64().ok_or_else(|| format!("{what}: not an index"))?;
    if i == FALSE as i64 || i == NONE as i64 || (i >= 0 && (i as usize) < count) {
        Ok(i as i32)
    } else {
        Err(format!("{what}: index {i} out of range"))
    }
}

fn as_usize(v: &Value, what: &str) -> BuildResult<usize> {
    v.as_u64().map(|n| n as usize).ok_or_else(|| format!("{what}: not a count"))
}

fn as_num(v: &Value, what: &str) -> BuildResult<Num> {
    if let Some(i) = v.as_i64() {
        return Ok(Num::I(i as i128));
    }
    if let Some(u) = v.as_u64() {
        return Ok(Num::I(u as i128));
    }
    match v.as_f64() {
        Some(f) if f.is_finite() => Ok(Num::F(f)),
        _ => Err(format!("{what}: not a number")),
    }
}

fn regex(v: &Value, what: &str) -> BuildResult<Regex> {
    let text = v.as_str().ok_or_else(|| format!("{what}: not a string"))?;
    Regex::new(text).map_err(|e| format!("{what}: {e}"))
}

fn scalar(v: &Value) -> BuildResult<Scalar> {
    Ok(match v {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::String(s) => Scalar::Str(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Scalar::Int(i as i128)
            } else if let Some(u) = n.as_u64() {
                Scalar::Int(u as i128)
            } else {
                return Err("enum: only integers, strings, booleans and null".into());
            }
        }
        _ => return Err("enum: only integers, strings, booleans and null".into()),
    })
}

fn indices(v: &Value, count: usize, what: &str) -> BuildResult<Vec<i32>> {
    v.as_array()
        .ok_or_else(|| format!("{what}: not a list"))?
        .iter()
        .map(|x| as_index(x, count, what))
        .collect()
}

fn build_node(d: &Value, count: usize) -> BuildResult<Node> {
    let obj = d.as_object().ok_or("a node must be an object")?;
    let mut n = Node {
        types: T_ALL,
        additional: NONE,
        items: NONE,
        ..Node::default()
    };
    let mut required: Vec<String> = Vec::new();
    let mut props: Vec<(String, i32)> = Vec::new();
    for (key, v) in obj {
        match key.as_str() {
            "never" => n.never = v.as_bool().ok_or("never: not a boolean")?,
            "types" => {
                let t = v.as_u64().ok_or("types: not a bit mask")?;
                if t > T_ALL as u64 {
                    return Err("types: unknown bits".into());
                }
                n.types = t as u8;
            }
            "props" => {
                for pair in v.as_array().ok_or("props: not a list")? {
                    let p = pair.as_array().filter(|p| p.len() == 2).ok_or("props: pairs")?;
                    let name = p[0].as_str().ok_or("props: names are strings")?;
                    props.push((name.to_owned(), as_index(&p[1], count, "props")?));
                }
            }
            "required" => {
                for r in v.as_array().ok_or("required: not a list")? {
                    let name = r.as_str().ok_or("required: names are strings")?.to_owned();
                    if !required.contains(&name) {
                        required.push(name);
                    }
                }
                if required.len() > 64 {
                    return Err("required: more than 64 names".into());
                }
            }
            "additional" => n.additional = as_index(v, count, "additional")?,
            "key_not" => n.key_not = Some(regex(v, "key_not")?),
            "max_props" => n.max_props = Some(as_usize(v, "max_props")?),
            "items" => n.items = as_index(v, count, "items")?,
            "prefix" => n.prefix = indices(v, count, "prefix")?,
            "min_items" => n.min_items = Some(as_usize(v, "min_items")?),
            "max_items" => n.max_items = Some(as_usize(v, "max_items")?),
            "min_len" => n.min_len = Some(as_usize(v, "min_len")?),
            "max_len" => n.max_len = Some(as_usize(v, "max_len")?),
            "pattern" => n.pattern = Some(regex(v, "pattern")?),
            "not_str" => {
                let g = v.as_object().ok_or("not_str: not an object")?;
                let min_len = match g.get("min_len") {
                    Some(m) => as_usize(m, "not_str.min_len")?,
                    None => 0,
                };
                let pattern = regex(g.get("pattern").ok_or("not_str: no pattern")?, "not_str")?;
                if g.len() != if g.contains_key("min_len") { 2 } else { 1 } {
                    return Err("not_str: unknown fields".into());
                }
                n.not_str = Some(StrGuard { min_len, pattern });
            }
            "unproven_strings" => n.unproven_strings = v.as_bool().ok_or("unproven_strings")?,
            "min" => n.min = Some(as_num(v, "min")?),
            "max" => n.max = Some(as_num(v, "max")?),
            "xmin" => n.xmin = Some(as_num(v, "xmin")?),
            "xmax" => n.xmax = Some(as_num(v, "xmax")?),
            "multiple_of" => match v.as_i64() {
                Some(m) if m > 0 => n.multiple_of = Some(m as i128),
                _ => return Err("multiple_of: a positive integer".into()),
            },
            "enum" => {
                let items = v.as_array().ok_or("enum: not a list")?;
                n.enumeration = Some(items.iter().map(scalar).collect::<BuildResult<_>>()?);
            }
            "all_of" => n.all_of = indices(v, count, "all_of")?,
            "any_of" => n.any_of = indices(v, count, "any_of")?,
            other => return Err(format!("unknown field {other:?}")),
        }
    }
    let mut infos: Vec<(String, KeyInfo)> = Vec::new();
    for (name, child) in props {
        if infos.iter().any(|(k, _)| *k == name) {
            return Err(format!("props: {name:?} twice"));
        }
        infos.push((name, KeyInfo { declared: true, child, required_bit: u32::MAX }));
    }
    for (bit, name) in required.iter().enumerate() {
        n.required_mask |= 1u64 << bit;
        match infos.iter_mut().find(|(k, _)| k == name) {
            Some((_, info)) => info.required_bit = bit as u32,
            None => infos.push((
                name.clone(),
                KeyInfo { declared: false, child: NONE, required_bit: bit as u32 },
            )),
        }
    }
    if infos.len() > 16 {
        n.key_map = Some(infos.into_iter().collect());
    } else {
        n.keys = infos;
    }
    Ok(n)
}

fn build_program(text: &str, max_depth: usize) -> BuildResult<Program> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let nodes = doc.get("nodes").and_then(Value::as_array).ok_or("no nodes")?;
    let count = nodes.len();
    let built = nodes.iter().map(|d| build_node(d, count)).collect::<BuildResult<Vec<_>>>()?;
    let root = as_index(doc.get("root").ok_or("no root")?, count, "root")?;
    let any = Node { types: T_ALL, additional: NONE, items: NONE, ..Node::default() };
    Ok(Program { nodes: built, any, root, max_depth })
}

// ---------------------------------------------------------------------------------------------
// Checking: a DeserializeSeed per value. An Err stops the parse at once: "not proven".

#[derive(Clone, Copy)]
struct Check<'p> {
    prog: &'p Program,
    node: i32,
    depth: usize,
    /// Bytes that allOf/anyOf may still parse again: nested combinations would otherwise cost
    /// time exponential in the depth. Spent: not proven (the full path is linear).
    budget: &'p Cell<usize>,
}

fn fail<E: de::Error>() -> E {
    E::custom("not proven")
}

impl<'p> Check<'p> {
    fn at(&self, node: i32) -> Check<'p> {
        Check { node, ..*self }
    }

    fn node(&self) -> &'p Node {
        if self.node == NONE {
            &self.prog.any
        } else {
            &self.prog.nodes[self.node as usize]
        }
    }

    fn number<E: de::Error>(&self, value: Num, integral: bool) -> Result<(), E> {
        let n = self.node();
        let allowed = if integral { T_INT | T_NUM } else { T_NUM };
        if n.types & allowed == 0 {
            return Err(fail());
        }
        use std::cmp::Ordering::*;
        if let Some(b) = n.min {
            if !matches!(cmp(value, b), Some(Greater | Equal)) {
                return Err(fail());
            }
        }
        if let Some(b) = n.max {
            if !matches!(cmp(value, b), Some(Less | Equal)) {
                return Err(fail());
            }
        }
        if let Some(b) = n.xmin {
            if cmp(value, b) != Some(Greater) {
                return Err(fail());
            }
        }
        if let Some(b) = n.xmax {
            if cmp(value, b) != Some(Less) {
                return Err(fail());
            }
        }
        if let Some(m) = n.multiple_of {
            match value {
                Num::I(i) if i % m == 0 => {}
                _ => return Err(fail()),
            }
        }
        if let Some(options) = &n.enumeration {
            match value {
                Num::I(i) if options.contains(&Scalar::Int(i)) => {}
                _ => return Err(fail()),
            }
        }
        Ok(())
    }

    fn string<E: de::Error>(&self, s: &str) -> Result<(), E> {
        let n = self.node();
        if n.types & T_STR == 0 || n.unproven_strings {
            return Err(fail());
        }
        if n.min_len.is_some() || n.max_len.is_some() || n.not_str.is_some() {
            // Code points, as jsonschema-rs counts them; a byte count bounds it from above.
            let len = if s.is_ascii() { s.len() } else { s.chars().count() };
            if n.min_len.map_or(false, |m| len < m) || n.max_len.map_or(false, |m| len > m) {
                return Err(fail());
            }
            if let Some(g) = &n.not_str {
                if len >= g.min_len && g.pattern.is_match(s) {
                    return Err(fail());
                }
            }
        }
        if let Some(p) = &n.pattern {
            if !p.is_match(s) {
                return Err(fail());
            }
        }
        if let Some(options) = &n.enumeration {
            if !options.iter().any(|o| matches!(o, Scalar::Str(x) if x == s)) {
                return Err(fail());
            }
        }
        Ok(())
    }

    fn simple<E: de::Error>(&self, t: u8, value: Scalar) -> Result<(), E> {
        let n = self.node();
        if n.types & t == 0 {
            return Err(fail());
        }
        if let Some(options) = &n.enumeration {
            if !options.contains(&value) {
                return Err(fail());
            }
        }
        Ok(())
    }

    fn lookup(&self, key: &str) -> Option<KeyInfo> {
        let n = self.node();
        match &n.key_map {
            Some(map) => map.get(key).copied(),
            None => n.keys.iter().find(|(k, _)| k == key).map(|(_, info)| *info),
        }
    }
}

impl<'de, 'p> DeserializeSeed<'de> for Check<'p> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.node == FALSE {
            return Err(fail());
        }
        let n = self.node();
        if n.never {
            return Err(fail());
        }
        if !n.all_of.is_empty() || !n.any_of.is_empty() {
            // Combinations see the same value more than once: keep its text, parse it again.
            let raw: &RawValue = de::Deserialize::deserialize(deserializer)?;
            let text = raw.get();
            let run = |node: i32| -> bool {
                let left = self.budget.get();
                if text.len() > left {
                    return false;
                }
                self.budget.set(left - text.len());
                let mut inner = serde_json::Deserializer::from_str(text);
                self.at(node).deserialize(&mut inner).is_ok()
            };
            if !n.all_of.iter().all(|&b| run(b)) {
                return Err(fail());
            }
            if !n.any_of.is_empty() && !n.any_of.iter().any(|&b| run(b)) {
                return Err(fail());
            }
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for Check<'p> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.simple(T_NULL, Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.simple(T_BOOL, Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(Num::I(v as i128), true)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(Num::I(v as i128), true)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(Num::F(v), false)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.string(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let n = self.node();
        let depth = self.depth + 1;
        if n.types & T_ARR == 0 || depth > self.prog.max_depth || n.enumeration.is_some() {
            return Err(fail());
        }
        let mut count = 0usize;
        loop {
            let child = n.prefix.get(count).copied().unwrap_or(n.items);
            let seed = Check { node: child, depth, ..self };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            count += 1;
            if n.max_items.map_or(false, |m| count > m) {
                return Err(fail());
            }
        }
        if n.min_items.map_or(false, |m| count < m) {
            return Err(fail());
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let n = self.node();
        let depth = self.depth + 1;
        if n.types & T_OBJ == 0 || depth > self.prog.max_depth || n.enumeration.is_some() {
            return Err(fail());
        }
        let mut seen: u64 = 0;
        let mut count = 0usize;
        while let Some(child) = map.next_key_seed(Key { check: &self })? {
            count += 1;
            if n.max_props.map_or(false, |m| count > m) {
                return Err(fail());
            }
            let (child, bit) = child;
            if bit != u32::MAX {
                seen |= 1u64 << bit;
            }
            map.next_value_seed(Check { node: child, depth, ..self })?;
        }
        if seen != n.required_mask {
            return Err(fail());
        }
        Ok(())
    }
}

/// A key: checked against `key_not`, resolved to its child node and required bit.
struct Key<'a, 'p> {
    check: &'a Check<'p>,
}

impl<'de, 'a, 'p> DeserializeSeed<'de> for Key<'a, 'p> {
    type Value = (i32, u32);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(i32, u32), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'a, 'p> Visitor<'de> for Key<'a, 'p> {
    type Value = (i32, u32);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(i32, u32), E> {
        let n = self.check.node();
        if let Some(p) = &n.key_not {
            if p.is_match(key) {
                return Err(fail());
            }
        }
        match self.check.lookup(key) {
            Some(info) if info.declared => Ok((info.child, info.required_bit)),
            Some(info) => Ok((n.additional, info.required_bit)),
            None => Ok((n.additional, u32::MAX)),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A compiled check program. `Checker(program_json, max_depth)`; `check(body) -> bool`.
#[pyclass(frozen)]
struct Checker {
    prog: Program,
}

#[pymethods]
impl Checker {
    #[new]
    fn new(program: &str, max_depth: usize) -> PyResult<Self> {
        let prog = build_program(program, max_depth).map_err(PyValueError::new_err)?;
        Ok(Checker { prog })
    }

    /// True when the body is proven valid; False when it is not (see the module docs).
    fn check(&self, body: &[u8]) -> bool {
        // One UTF-8 check of the whole body (word at a time over ASCII) is much cheaper than
        // serde_json's check of every string; the str reader then skips it.
        let text = match std::str::from_utf8(body) {
            Ok(text) => text,
            Err(_) => return false,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let budget = Cell::new(REPARSE_FACTOR * text.len() + REPARSE_FLOOR);
        let seed = Check { prog: &self.prog, node: self.prog.root, depth: 0, budget: &budget };
        seed.deserialize(&mut de).is_ok() && de.end().is_ok()
    }
}

#[pymodule]
fn bastion_fastcheck(_py: Python, m: &PyModule) -> PyResult<()> {
    m.add_class::<Checker>()?;
    Ok(())
}
