//! What a collection schema must be, beyond valid draft 2020-12, to be
//! admitted (docs/decisions.md, "Collection schemas: admission rules").
//!
//! 1. **One resource, fragment references.** Every `$ref` and `$dynamicRef`
//!    starts with `#` (`#/json/pointer` or `#anchor`), and `$id` appears at
//!    the root only. So a reference means one thing: a place in this
//!    document, for the validator and for the tenant's OpenAPI document alike.
//! 2. **Every reference resolves** to a subschema (not a value inside
//!    `const`, not a keyword's map), and anchors are unique.
//! 3. **No loop on one value.** A chain of references that comes back to
//!    where it started without moving to a child value (`{"$ref": "#"}`, or
//!    `a → b → a` through `allOf`, `not`, `if`…) would never end.
//! 4. **Bounded cost.** The schema with its references inlined (each target
//!    counted every time it is referenced; a recursive reference, which moves
//!    to a child value, counted once) has at most [`MAX_EXPANDED_SIZE`]
//!    subschemas, and a recursion never applies one subschema twice to the
//!    same child value (which would double the work at every level of depth).
//!
//! Everything here is linear in the size of the schema (memoized per
//! subschema) and iterative where chains of references may be long.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// The most subschemas a schema may expand to with its references inlined.
///
/// A subschema visit costs the validator tens of nanoseconds to a few
/// microseconds (a `pattern` or `format` more), so 10,000 keeps the worst
/// case for one value near a millisecond, while the largest hand-written
/// schemas we know of (hundreds of properties, shared `$defs`) expand to a
/// few thousand. The exponential schema of H1 reaches it at depth 12.
pub const MAX_EXPANDED_SIZE: u64 = 10_000;

/// Why a schema is refused: where (a JSON pointer into the schema, `""` for
/// the root) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The JSON pointer (RFC 6901) of the offending member in the schema.
    pub pointer: String,
    /// What is wrong, in the API's terms.
    pub message: String,
}

fn refuse<T>(pointer: impl Into<String>, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        pointer: pointer.into(),
        message: message.into(),
    })
}

/// The child value a descending keyword applies its subschema to. Two slots
/// may reach the same child unless they are distinct `properties` names,
/// distinct `prefixItems` positions, or of different kinds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    /// `properties/{name}`: that member.
    Member(String),
    /// `patternProperties`, `additionalProperties`, `unevaluatedProperties`:
    /// any member.
    AnyMember,
    /// `prefixItems/{i}`: that element.
    Item(usize),
    /// `items`, `contains`, `unevaluatedItems`: any element.
    AnyItem,
    /// `propertyNames`: a member's name.
    Name,
}

#[derive(Debug, Clone)]
enum Applies {
    /// To the same value (`allOf`, `not`, `if`, `$ref`, …).
    InPlace,
    /// To a child value (`properties`, `items`, …).
    Descends(Slot),
    /// Never (`$defs`, `contentSchema`): a place to refer to.
    Never,
}

#[derive(Clone, Copy, PartialEq)]
enum Holds {
    One,
    List,
    Map,
}

/// How a keyword applies the subschema under a name or position.
type AppliesAt = fn(&str) -> Applies;

/// The draft 2020-12 keywords whose values are subschemas.
fn keyword(name: &str) -> Option<(Holds, AppliesAt)> {
    Some(match name {
        "not" | "if" | "then" | "else" => (Holds::One, |_| Applies::InPlace),
        "allOf" | "anyOf" | "oneOf" => (Holds::List, |_| Applies::InPlace),
        "dependentSchemas" => (Holds::Map, |_| Applies::InPlace),
        "properties" => (Holds::Map, |k| Applies::Descends(Slot::Member(k.to_owned()))),
        "patternProperties" => (Holds::Map, |_| Applies::Descends(Slot::AnyMember)),
        "additionalProperties" | "unevaluatedProperties" => (Holds::One, |_| Applies::Descends(Slot::AnyMember)),
        "prefixItems" => (Holds::List, |i| Applies::Descends(Slot::Item(i.parse().unwrap_or(0)))),
        "items" | "contains" | "unevaluatedItems" => (Holds::One, |_| Applies::Descends(Slot::AnyItem)),
        "propertyNames" => (Holds::One, |_| Applies::Descends(Slot::Name)),
        "$defs" | "definitions" => (Holds::Map, |_| Applies::Never),
        "contentSchema" => (Holds::One, |_| Applies::Never),
        _ => return None,
    })
}

/// Values, not schemas: never searched for keywords.
pub const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];

/// A JSON pointer segment (RFC 6901).
fn segment(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[derive(Debug, Clone)]
struct Edge {
    to: usize,
    applies: Applies,
    /// The member that makes this edge (a keyword's subschema or a `$ref`).
    at: String,
}

/// Every subschema of a schema and how each applies the others.
struct Graph<'a> {
    root: &'a Value,
    nodes: Vec<&'a Value>,
    pointers: Vec<String>,
    edges: Vec<Vec<Edge>>,
    by_address: HashMap<*const Value, usize>,
    anchors: HashMap<&'a str, usize>,
    /// (owner subschema, pointer of the member, the reference).
    refs: Vec<(Option<usize>, String, &'a str)>,
}

impl<'a> Graph<'a> {
    fn build(root: &'a Value) -> Result<Self, Refusal> {
        let mut g = Graph {
            root,
            nodes: Vec::new(),
            pointers: Vec::new(),
            edges: Vec::new(),
            by_address: HashMap::new(),
            anchors: HashMap::new(),
            refs: Vec::new(),
        };
        g.walk(root, String::new(), true)?;
        g.resolve()?;
        Ok(g)
    }

    /// Registers `value` at `pointer` (a subschema when `schema`, otherwise
    /// a value under a keyword Canon does not know, searched for `$ref` and
    /// `$id` all the same) and everything under it.
    fn walk(&mut self, value: &'a Value, pointer: String, schema: bool) -> Result<Option<usize>, Refusal> {
        let id = schema.then(|| {
            self.nodes.push(value);
            self.pointers.push(pointer.clone());
            self.edges.push(Vec::new());
            self.by_address.insert(std::ptr::from_ref(value), self.nodes.len() - 1);
            self.nodes.len() - 1
        });
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let here = format!("{pointer}/{}", segment(key));
                    match key.as_str() {
                        "$id" if !pointer.is_empty() => {
                            return refuse(
                                here,
                                "`$id` is allowed only at the root: a nested `$id` starts another schema \
                                 resource; put the subschema under `$defs` and refer to it as `#/$defs/…`",
                            );
                        }
                        "$ref" | "$dynamicRef" => {
                            if let Value::String(r) = child {
                                if !r.starts_with('#') {
                                    return refuse(
                                        here,
                                        "references must be fragments of this schema (`#/$defs/…` or `#anchor`); \
                                         Canon fetches nothing and resolves no other URI",
                                    );
                                }
                                self.refs.push((id, here, r));
                            }
                        }
                        "$anchor" | "$dynamicAnchor" => {
                            if let (Some(id), Value::String(name)) = (id, child)
                                && self.anchors.insert(name, id).is_some_and(|other| other != id)
                            {
                                return refuse(here, format!("the anchor `{name}` is declared twice"));
                            }
                        }
                        k if DATA_KEYWORDS.contains(&k) => {}
                        k => match (id, keyword(k), child) {
                            (Some(id), Some((Holds::One, applies)), sub @ (Value::Object(_) | Value::Bool(_))) => {
                                let to = self.walk(sub, here.clone(), true)?.unwrap_or(id);
                                self.edge(id, to, applies(""), here);
                            }
                            (Some(id), Some((Holds::List, applies)), Value::Array(list)) => {
                                for (i, sub) in list.iter().enumerate() {
                                    let at = format!("{here}/{i}");
                                    let to = self.walk(sub, at.clone(), true)?.unwrap_or(id);
                                    self.edge(id, to, applies(&i.to_string()), at);
                                }
                            }
                            (Some(id), Some((Holds::Map, applies)), Value::Object(named)) => {
                                for (name, sub) in named {
                                    let at = format!("{here}/{}", segment(name));
                                    let to = self.walk(sub, at.clone(), true)?.unwrap_or(id);
                                    self.edge(id, to, applies(name), at);
                                }
                            }
                            _ => {
                                self.walk(child, here, false)?;
                            }
                        },
                    }
                }
            }
            Value::Array(items) if !schema => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, format!("{pointer}/{i}"), false)?;
                }
            }
            _ => {}
        }
        Ok(id)
    }

    fn edge(&mut self, from: usize, to: usize, applies: Applies, at: String) {
        if !matches!(applies, Applies::Never) {
            self.edges[from].push(Edge { to, applies, at });
        }
    }

    /// Resolves every reference to a subschema: an edge applying it in place.
    fn resolve(&mut self) -> Result<(), Refusal> {
        for (owner, at, r) in std::mem::take(&mut self.refs) {
            let Some(fragment) = percent_decode(&r[1..]) else {
                return refuse(at, format!("`{r}` is not a valid URI fragment"));
            };
            let target = if fragment.is_empty() {
                Some(0)
            } else if fragment.starts_with('/') {
                match self.root.pointer(&fragment) {
                    None => return refuse(at, format!("`{r}` names nothing in this schema")),
                    Some(v) => match self.by_address.get(&std::ptr::from_ref(v)) {
                        Some(&t) => Some(t),
                        None => return refuse(at, format!("`{r}` does not point at a subschema")),
                    },
                }
            } else {
                match self.anchors.get(fragment.as_str()) {
                    Some(&t) => Some(t),
                    None => return refuse(at, format!("`{r}`: no subschema declares the anchor `{fragment}`")),
                }
            };
            if let (Some(from), Some(to)) = (owner, target) {
                self.edges[from].push(Edge {
                    to,
                    applies: Applies::InPlace,
                    at,
                });
            }
        }
        Ok(())
    }

    /// `#/…` of subschema `n`, for messages.
    fn name(&self, n: usize) -> String {
        format!("#{}", self.pointers[n])
    }

    /// Refuses a chain of in-place edges that comes back to its start: it
    /// would apply a subschema to the same value forever.
    fn no_loop_in_place(&self) -> Result<(), Refusal> {
        const WHITE: u8 = 0;
        const GRAY: u8 = 1;
        const BLACK: u8 = 2;
        let mut color = vec![WHITE; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if color[start] != WHITE {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            color[start] = GRAY;
            while let Some(&mut (n, ref mut next)) = stack.last_mut() {
                let Some(edge) = self.edges[n].get(*next) else {
                    color[n] = BLACK;
                    stack.pop();
                    continue;
                };
                *next += 1;
                if !matches!(edge.applies, Applies::InPlace) {
                    continue;
                }
                match color[edge.to] {
                    WHITE => {
                        color[edge.to] = GRAY;
                        stack.push((edge.to, 0));
                    }
                    GRAY => {
                        let from = stack.iter().position(|(m, _)| *m == edge.to).unwrap_or(0);
                        let chain: Vec<String> = stack[from..]
                            .iter()
                            .map(|(m, _)| self.name(*m))
                            .chain([self.name(edge.to)])
                            .collect();
                        return refuse(
                            edge.at.clone(),
                            format!(
                                "the references loop without moving to a child value ({}): validation would never end",
                                chain.join(" → ")
                            ),
                        );
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The number of subschemas applied with references inlined, from the
    /// root: memoized per subschema; a reference back to a subschema being
    /// expanded (a recursion, which moves to a child value since
    /// [`Self::no_loop_in_place`] holds) counts 1. Stops past `budget`.
    fn expanded_size(&self, budget: u64) -> Result<u64, u64> {
        let mut memo: Vec<Option<u64>> = vec![None; self.nodes.len()];
        let mut open = vec![false; self.nodes.len()];
        // (subschema, next edge, size so far)
        let mut stack: Vec<(usize, usize, u64)> = vec![(0, 0, 1)];
        open[0] = true;
        while let Some(&mut (n, ref mut next, ref mut size)) = stack.last_mut() {
            if *size > budget {
                return Err(*size);
            }
            if let Some(edge) = self.edges[n].get(*next) {
                *next += 1;
                if let Some(known) = memo[edge.to] {
                    *size = size.saturating_add(known);
                } else if open[edge.to] {
                    *size += 1;
                } else {
                    open[edge.to] = true;
                    stack.push((edge.to, 0, 1));
                }
                continue;
            }
            let done = *size;
            memo[n] = Some(done);
            open[n] = false;
            stack.pop();
            match stack.last_mut() {
                Some((_, _, parent)) => *parent = parent.saturating_add(done),
                None => return Ok(done),
            }
        }
        Ok(0)
    }

    /// Strongly connected components (Tarjan, iterative): `component[n]`.
    fn components(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut component = vec![usize::MAX; n];
        let mut stack = Vec::new();
        let mut counter = 0;
        let mut components = 0;
        for start in 0..n {
            if index[start] != usize::MAX {
                continue;
            }
            let mut work: Vec<(usize, usize)> = vec![(start, 0)];
            index[start] = counter;
            low[start] = counter;
            counter += 1;
            stack.push(start);
            on_stack[start] = true;
            while let Some(&mut (v, ref mut next)) = work.last_mut() {
                if let Some(edge) = self.edges[v].get(*next) {
                    *next += 1;
                    let w = edge.to;
                    if index[w] == usize::MAX {
                        index[w] = counter;
                        low[w] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        work.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component[w] = components;
                        if w == v {
                            break;
                        }
                    }
                    components += 1;
                }
            }
        }
        component
    }

    /// Refuses a recursion that can apply a subschema twice to one child
    /// value: from any subschema of a recursive group, the in-place paths
    /// to the group's descending keywords must reach each child value at
    /// most once, or the work doubles at every level of the value's depth.
    fn recursion_reaches_each_child_once(&self) -> Result<(), Refusal> {
        let component = self.components();
        let same = |a: usize, b: usize| component[a] == component[b];
        // Paths to each slot (saturating at 2), per subschema, over the
        // in-place edges inside its component (a DAG: no loop in place).
        let mut memo: Vec<Option<BTreeMap<Slot, u8>>> = vec![None; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if memo[start].is_some() {
                continue;
            }
            let mut work: Vec<(usize, usize, BTreeMap<Slot, u8>)> = vec![(start, 0, BTreeMap::new())];
            while let Some((n, next, slots)) = work.last_mut() {
                let n = *n;
                if let Some(edge) = self.edges[n].get(*next) {
                    *next += 1;
                    if !same(n, edge.to) {
                        continue;
                    }
                    match &edge.applies {
                        Applies::Descends(slot) => add(slots, slot, 1),
                        Applies::InPlace => match &memo[edge.to] {
                            Some(known) => {
                                for (slot, count) in known.clone() {
                                    add(slots, &slot, count);
                                }
                            }
                            None => work.push((edge.to, 0, BTreeMap::new())),
                        },
                        Applies::Never => {}
                    }
                    continue;
                }
                let Some((_, _, done)) = work.pop() else { break };
                if let Some(slot) = overlapping(&done) {
                    return refuse(
                        self.pointers[n].clone(),
                        format!(
                            "this recursion can apply `{}` twice to the same child value ({slot}): \
                             the work would double at every level of depth",
                            self.name(n)
                        ),
                    );
                }
                if let Some((_, _, parent)) = work.last_mut() {
                    for (slot, count) in &done {
                        add(parent, slot, *count);
                    }
                }
                memo[n] = Some(done);
            }
        }
        Ok(())
    }
}

fn add(slots: &mut BTreeMap<Slot, u8>, slot: &Slot, count: u8) {
    let c = slots.entry(slot.clone()).or_insert(0);
    *c = c.saturating_add(count).min(2);
}

/// The first child a set of paths may reach twice, described.
fn overlapping(slots: &BTreeMap<Slot, u8>) -> Option<&'static str> {
    let count = |f: fn(&Slot) -> bool| -> u32 { slots.iter().filter(|(s, _)| f(s)).map(|(_, c)| u32::from(*c)).sum() };
    if slots.values().any(|c| *c >= 2) {
        return Some("two paths through one keyword");
    }
    let any_member = slots.contains_key(&Slot::AnyMember);
    if any_member && count(|s| matches!(s, Slot::Member(_) | Slot::AnyMember)) >= 2 {
        return Some("members");
    }
    let any_item = slots.contains_key(&Slot::AnyItem);
    if any_item && count(|s| matches!(s, Slot::Item(_) | Slot::AnyItem)) >= 2 {
        return Some("array elements");
    }
    None
}

/// Percent-decodes a URI fragment as UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks `schema` (already valid draft 2020-12) against the admission
/// rules; returns its expanded size.
pub fn admit(schema: &Value) -> Result<u64, Refusal> {
    let graph = Graph::build(schema)?;
    graph.no_loop_in_place()?;
    let size = graph.expanded_size(MAX_EXPANDED_SIZE).or_else(|size| {
        refuse(
            "",
            format!(
                "with its references inlined the schema has more than {MAX_EXPANDED_SIZE} subschemas \
                 (at least {size}): validating one record would cost too much"
            ),
        )
    })?;
    graph.recursion_reaches_each_child_once()?;
    Ok(size)
}

/// Each anchor (`$anchor` or `$dynamicAnchor`) of an admitted `schema` and
/// the JSON pointer of the subschema declaring it.
pub fn anchors(schema: &Value) -> HashMap<String, String> {
    Graph::build(schema)
        .map(|g| {
            g.anchors
                .iter()
                .map(|(name, &n)| ((*name).to_owned(), g.pointers[n].clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// H1's schema: `d{i}` refers to `d{i+1}` twice, `d{depth}` is a leaf.
    fn doubling(depth: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..depth {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": next}, {"$ref": next}]}));
        }
        defs.insert(format!("d{depth}"), json!({"type": "object"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    fn refused_at(schema: Value) -> String {
        admit(&schema).expect_err("refused").pointer
    }

    #[test]
    fn size_counts_every_subschema_once_without_references() {
        assert_eq!(admit(&json!(true)), Ok(1));
        assert_eq!(admit(&json!({"type": "object"})), Ok(1));
        assert_eq!(
            admit(&json!({"properties": {"a": {}, "b": {"items": {}}}, "not": {}})),
            Ok(5)
        );
        // `$defs` apply nothing: counted only where referenced.
        assert_eq!(admit(&json!({"$defs": {"x": {}, "y": {}}})), Ok(1));
        // Values are not schemas.
        assert_eq!(admit(&json!({"const": {"properties": {"a": {}}}})), Ok(1));
    }

    #[test]
    fn size_inlines_each_reference() {
        // root + 3 refs + 3 × x
        let s =
            json!({"allOf": [{"$ref": "#/$defs/x"}, {"$ref": "#/$defs/x"}, {"$ref": "#/$defs/x"}], "$defs": {"x": {}}});
        assert_eq!(admit(&s), Ok(7));
    }

    #[test]
    fn size_of_the_doubling_chain_grows_exponentially_and_is_computed_in_linear_time() {
        // s(depth) = 1, s(i) = 1 + 2 (1 + s(i + 1)); the root adds 1.
        let expected = |depth: u32| 1 + (0..depth).fold(1u64, |s, _| 3 + 2 * s);
        for depth in [0, 1, 3, 8] {
            assert_eq!(admit(&doubling(depth as usize)), Ok(expected(depth)), "{depth}");
        }
        let started = std::time::Instant::now();
        let refusal = admit(&doubling(30)).expect_err("2^31 subschemas");
        assert_eq!(refusal.pointer, "");
        assert!(refusal.message.contains("10000"), "{}", refusal.message);
        let refusal = admit(&doubling(5000)).expect_err("2^5001 subschemas");
        assert_eq!(refusal.pointer, "");
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
        // The budget falls between depth 11 and 12.
        assert!(expected(11) <= MAX_EXPANDED_SIZE && expected(12) > MAX_EXPANDED_SIZE);
        assert!(admit(&doubling(11)).is_ok() && admit(&doubling(12)).is_err());
    }

    #[test]
    fn recursion_through_a_child_counts_once() {
        let tree = json!({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}});
        assert_eq!(admit(&tree), Ok(4));
        // A binary tree, a linked list, and any JSON value: each child once.
        assert!(admit(&json!({"properties": {"left": {"$ref": "#"}, "right": {"$ref": "#"}}})).is_ok());
        let list = json!({"$defs": {"node": {"properties": {"next": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/node"}]}}}}, "$ref": "#/$defs/node"});
        assert!(admit(&list).is_ok());
        let any = json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#"}}, {"type": "object", "additionalProperties": {"$ref": "#"}}]});
        assert!(admit(&any).is_ok());
        let pair = json!({"prefixItems": [{"$ref": "#"}, {"$ref": "#"}]});
        assert!(admit(&pair).is_ok());
    }

    #[test]
    fn recursion_that_reaches_one_child_twice_is_refused() {
        // Each level of nested arrays would double the work.
        let twice =
            json!({"allOf": [{"$ref": "#/$defs/h"}, {"$ref": "#/$defs/h"}], "$defs": {"h": {"items": {"$ref": "#"}}}});
        assert!(admit(&twice).is_err());
        let both = json!({"items": {"$ref": "#"}, "contains": {"$ref": "#"}});
        assert!(admit(&both).is_err());
        let named = json!({"properties": {"a": {"$ref": "#"}}, "patternProperties": {"^a": {"$ref": "#"}}});
        assert!(admit(&named).is_err());
        // Twice, but not recursively: counted by size instead.
        assert!(admit(&json!({"items": {}, "contains": {}})).is_ok());
    }

    #[test]
    fn loops_on_one_value_are_refused() {
        assert_eq!(refused_at(json!({"$ref": "#"})), "/$ref");
        let ab = json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
        let r = admit(&ab).expect_err("a → b → a");
        assert!(r.message.contains("#/$defs/a → #/$defs/b → #/$defs/a"), "{}", r.message);
        // Unreferenced, too: the document would still hold the loop.
        assert!(admit(&json!({"$defs": {"a": {"not": {"$ref": "#/$defs/a"}}}})).is_err());
        assert_eq!(
            refused_at(json!({"allOf": [{"if": {"$ref": "#"}}]})),
            "/allOf/0/if/$ref"
        );
    }

    #[test]
    fn references_are_fragments_of_this_schema() {
        for r in [
            "https://EX.com/root#/$defs/a",
            "./root#/$defs/a",
            "//ex.com/root",
            "/root",
            "urn:x",
            "other.json",
        ] {
            assert_eq!(
                refused_at(json!({"properties": {"a": {"$ref": r}}})),
                "/properties/a/$ref",
                "{r}"
            );
        }
        assert_eq!(refused_at(json!({"$dynamicRef": "meta#x"})), "/$dynamicRef");
        // Also under keywords Canon does not know (the document would hold them).
        assert_eq!(refused_at(json!({"x-doc": {"$ref": "https://ex.com/"}})), "/x-doc/$ref");
        // Inside values they are data.
        assert!(admit(&json!({"const": {"$ref": "https://ex.com/"}})).is_ok());
    }

    #[test]
    fn id_only_at_the_root() {
        assert!(admit(&json!({"$id": "https://ex.com/root", "$defs": {"a": {}}, "$ref": "https://x"})).is_err());
        assert!(admit(&json!({"$id": "https://ex.com/root", "$defs": {"a": {}}, "$ref": "#/$defs/a"})).is_ok());
        assert_eq!(
            refused_at(json!({"$defs": {"item": {"$id": "item"}}})),
            "/$defs/item/$id"
        );
        // A property called `$id` is a name, not a keyword.
        assert!(admit(&json!({"properties": {"$id": {"type": "string"}}})).is_ok());
    }

    #[test]
    fn every_reference_resolves_to_a_subschema() {
        assert_eq!(refused_at(json!({"$ref": "#/$defs/nope"})), "/$ref");
        assert_eq!(refused_at(json!({"$ref": "#nope"})), "/$ref");
        assert_eq!(refused_at(json!({"$defs": {"a": {}}, "$ref": "#/$defs"})), "/$ref");
        assert_eq!(refused_at(json!({"const": {"a": 1}, "$ref": "#/const"})), "/$ref");
        assert_eq!(refused_at(json!({"$ref": "#/%ZZ"})), "/$ref");
        let ok = json!({
            "$defs": {"a b": {"type": "integer"}, "l": {"$anchor": "leaf"}, "m": {"$dynamicAnchor": "meta"}, "d": {}},
            "properties": {
                "spaced": {"$ref": "#/$defs/a%20b"},
                "leaf": {"$ref": "#leaf"},
                "meta": {"$dynamicRef": "#meta"},
                "old": {"$ref": "#/definitions/x"},
                "deep": {"$ref": "#/properties/leaf"}
            },
            "definitions": {"x": {}}
        });
        assert!(admit(&ok).is_ok(), "{:?}", admit(&ok));
        assert_eq!(anchors(&ok).get("leaf").map(String::as_str), Some("/$defs/l"));
        let twice = json!({"$defs": {"a": {"$anchor": "x"}, "b": {"$anchor": "x"}}});
        assert_eq!(refused_at(twice), "/$defs/b/$anchor");
    }
}
