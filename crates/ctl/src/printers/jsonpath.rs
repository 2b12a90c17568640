//! `-o jsonpath=TEMPLATE`: kubectl's JSONPath templates, so the one-liners
//! people keep in scripts work unchanged:
//!
//! * text outside `{}` is printed as is; `{"\n"}` and `{'\t'}` print
//!   string literals (with escapes);
//! * `{.a.b}`, `{$.a}`, `{@.a}`, `{.a[0]}`, `{.a[-1]}`, `{.a[1:3]}`,
//!   `{.a[*].b}`, `{.a.*}`, `{..name}` (any depth), `{.a['x.y']}`,
//!   `{.metadata.labels.app\.kubernetes\.io/name}` (escaped dots),
//!   `{.a[0,2]}` and filters `{.a[?(@.type=="Ready")].status}` with
//!   `== != < <= > >=` or a bare `@.field` for "exists";
//! * `{range .items[*]}...{end}` repeats its body for each value, paths
//!   inside starting from that value.
//!
//! Several values of one expression are separated by spaces; strings
//! print raw, everything else as compact JSON; a missing field prints
//! nothing (kubectl's `get` allows missing keys too).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Path),
    Range(Path, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
struct Path {
    /// `$`: from the document root rather than the current value.
    from_root: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Descend(String),
    Wildcard,
    Index(Vec<i64>),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Path,
    op: Option<(String, Operand)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Path),
}

/// A parsed template, ready to run against many documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Node>);

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    pieces.push(Piece::Text(rest.to_string()));
                    break;
                }
                Some(i) => {
                    if i > 0 {
                        pieces.push(Piece::Text(rest[..i].to_string()));
                    }
                    let end = closing_brace(&rest[i..])
                        .ok_or_else(|| format!("unclosed action in template {text:?}"))?;
                    pieces.push(Piece::Action(rest[i + 1..i + end].trim().to_string()));
                    rest = &rest[i + end + 1..];
                }
            }
        }
        let mut iter = pieces.into_iter();
        let nodes = build(&mut iter, false)?;
        Ok(Template(nodes))
    }

    /// Runs the template against `doc`.
    pub fn render(&self, doc: &Value) -> Result<String, String> {
        let mut out = String::new();
        render_nodes(&self.0, doc, doc, &mut out)?;
        Ok(out)
    }
}

enum Piece {
    Text(String),
    Action(String),
}

/// The index of the `}` closing the action that starts at `text[0]`,
/// skipping braces inside quotes.
fn closing_brace(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '}' => return Some(i),
                _ => {}
            },
        }
    }
    None
}

fn build(pieces: &mut impl Iterator<Item = Piece>, in_range: bool) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    while let Some(piece) = pieces.next() {
        match piece {
            Piece::Text(t) => nodes.push(Node::Text(t)),
            Piece::Action(a) if a == "end" => {
                return if in_range {
                    Ok(nodes)
                } else {
                    Err("{end} without a {range}".into())
                };
            }
            Piece::Action(a) => {
                if let Some(p) = a.strip_prefix("range ") {
                    let path = parse_path(p.trim())?;
                    let body = build(pieces, true)?;
                    nodes.push(Node::Range(path, body));
                } else if a.starts_with('"') || a.starts_with('\'') {
                    nodes.push(Node::Text(unquote(&a)?));
                } else {
                    nodes.push(Node::Path(parse_path(&a)?));
                }
            }
        }
    }
    if in_range {
        Err("{range} without an {end}".into())
    } else {
        Ok(nodes)
    }
}

fn unquote(s: &str) -> Result<String, String> {
    let q = s.chars().next().unwrap_or('"');
    let inner = s
        .strip_prefix(q)
        .and_then(|s| s.strip_suffix(q))
        .ok_or_else(|| format!("unterminated string {s:?}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Ok(out)
}

fn parse_path(text: &str) -> Result<Path, String> {
    let bad = |why: &str| format!("invalid JSONPath {text:?}: {why}");
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut from_root = false;
    match chars.first() {
        Some('$') => {
            from_root = true;
            i = 1;
        }
        Some('@') => i = 1,
        Some('.') | Some('[') => {}
        _ => return Err(bad("a path starts with '.', '[', '$' or '@'")),
    }
    let mut steps = Vec::new();
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let descend = chars.get(i + 1) == Some(&'.');
                i += if descend { 2 } else { 1 };
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    steps.push(Step::Wildcard);
                    continue;
                }
                if chars.get(i) == Some(&'[') && descend {
                    steps.push(Step::Descend(String::new()));
                    continue;
                }
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if name.is_empty() {
                    if i >= chars.len() && !descend {
                        break; // `{.}`: the value itself
                    }
                    return Err(bad("a '.' must be followed by a field name"));
                }
                steps.push(if descend {
                    Step::Descend(name)
                } else {
                    Step::Field(name)
                });
            }
            '[' => {
                let end = bracket_end(&chars, i).ok_or_else(|| bad("unclosed '['"))?;
                let inner: String = chars[i + 1..end].iter().collect();
                steps.push(parse_bracket(inner.trim()).map_err(|e| bad(&e))?);
                i = end + 1;
            }
            c => return Err(bad(&format!("unexpected {c:?}"))),
        }
    }
    Ok(Path { from_root, steps })
}

fn bracket_end(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' | '(' => depth += 1,
                ']' | ')' => {
                    depth -= 1;
                    if depth == 0 && c == ']' {
                        return Some(j);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        return parse_filter(f.trim()).map(Step::Filter);
    }
    if inner.starts_with('\'') || inner.starts_with('"') {
        return Ok(Step::Field(unquote(inner)?));
    }
    let num = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| format!("{s:?} is not a number"))
        }
    };
    if inner.contains(':') {
        let parts: Vec<&str> = inner.split(':').collect();
        if parts.len() > 3 {
            return Err(format!("bad slice [{inner}]"));
        }
        return Ok(Step::Slice(
            num(parts[0])?,
            num(parts.get(1).copied().unwrap_or(""))?,
            num(parts.get(2).copied().unwrap_or(""))?,
        ));
    }
    let mut idx = Vec::new();
    for p in inner.split(',') {
        idx.push(num(p)?.ok_or_else(|| format!("empty index in [{inner}]"))?);
    }
    Ok(Step::Index(idx))
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some((l, r)) = split_outside_quotes(text, op) {
            let r = r.trim();
            let operand = if r.starts_with('@') || r.starts_with('$') {
                Operand::Path(parse_path(r)?)
            } else if r.starts_with('"') || r.starts_with('\'') {
                Operand::Literal(Value::String(unquote(r)?))
            } else {
                Operand::Literal(serde_json::from_str(r).map_err(|_| format!("cannot compare with {r:?}"))?)
            };
            return Ok(Filter {
                left: parse_path(l.trim())?,
                op: Some((op.to_string(), operand)),
            });
        }
    }
    Ok(Filter {
        left: parse_path(text)?,
        op: None,
    })
}

fn split_outside_quotes<'a>(text: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if text[i..].starts_with(op) => return Some((&text[..i], &text[i + op.len()..])),
            None => {}
        }
    }
    None
}

fn render_nodes(nodes: &[Node], root: &Value, cur: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Path(p) => {
                let values = eval(p, root, cur);
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    match v {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
            Node::Range(p, body) => {
                for v in eval(p, root, cur) {
                    // a range over one list value walks its elements
                    match v {
                        Value::Array(items)
                            if p.steps
                                .last()
                                .is_some_and(|s| matches!(s, Step::Field(_) | Step::Descend(_))) =>
                        {
                            for item in items {
                                render_nodes(body, root, item, out)?;
                            }
                        }
                        _ => render_nodes(body, root, v, out)?,
                    }
                }
            }
        }
    }
    Ok(())
}

fn eval<'a>(path: &Path, root: &'a Value, cur: &'a Value) -> Vec<&'a Value> {
    let mut values = vec![if path.from_root { root } else { cur }];
    for step in &path.steps {
        let mut next = Vec::new();
        for v in values {
            apply(step, v, root, &mut next);
        }
        values = next;
    }
    values
}

fn apply<'a>(step: &Step, v: &'a Value, root: &'a Value, next: &mut Vec<&'a Value>) {
    match step {
        Step::Field(name) => {
            if let Some(x) = v.get(name) {
                next.push(x);
            }
        }
        Step::Descend(name) => descend(v, name, next),
        Step::Wildcard => match v {
            Value::Array(a) => next.extend(a.iter()),
            Value::Object(m) => next.extend(m.values()),
            _ => {}
        },
        Step::Index(idx) => {
            if let Value::Array(a) = v {
                for &i in idx {
                    let i = if i < 0 { a.len() as i64 + i } else { i };
                    if let Some(x) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                        next.push(x);
                    }
                }
            }
        }
        Step::Slice(start, end, step) => {
            if let Value::Array(a) = v {
                let len = a.len() as i64;
                let clamp = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                let s = clamp(start.unwrap_or(0));
                let e = clamp(end.unwrap_or(len));
                let st = step.unwrap_or(1).max(1);
                let mut i = s;
                while i < e {
                    next.push(&a[i as usize]);
                    i += st;
                }
            }
        }
        Step::Filter(f) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for item in items {
                if filter_matches(f, root, item) {
                    next.push(item);
                }
            }
        }
    }
}

fn descend<'a>(v: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if name.is_empty() {
                out.push(v);
            } else if let Some(x) = m.get(name) {
                out.push(x);
            }
            for child in m.values() {
                descend(child, name, out);
            }
        }
        Value::Array(a) => {
            for child in a {
                descend(child, name, out);
            }
        }
        _ => {}
    }
}

fn filter_matches(f: &Filter, root: &Value, item: &Value) -> bool {
    let left = eval(&f.left, root, item);
    let Some((op, operand)) = &f.op else {
        return !left.is_empty();
    };
    let right: Vec<&Value> = match operand {
        Operand::Literal(v) => vec![v],
        Operand::Path(p) => eval(p, root, item),
    };
    let (Some(l), Some(r)) = (left.first(), right.first()) else {
        return false;
    };
    let ord = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) if a == b => Some(std::cmp::Ordering::Equal),
        _ => None,
    };
    use std::cmp::Ordering::*;
    match op.as_str() {
        "==" => ord == Some(Equal),
        "!=" => ord != Some(Equal),
        "<" => ord == Some(Less),
        "<=" => matches!(ord, Some(Less | Equal)),
        ">" => ord == Some(Greater),
        ">=" => matches!(ord, Some(Greater | Equal)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(t: &str, doc: &Value) -> String {
        Template::parse(t).unwrap().render(doc).unwrap()
    }

    fn pods() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web"}},
             "status": {"phase": "Running", "podIP": "10.0.0.1",
                        "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
                        "containerStatuses": [{"restartCount": 0}]}},
            {"metadata": {"name": "b", "labels": {}},
             "status": {"phase": "Pending",
                        "conditions": [{"type": "Ready", "status": "False"}],
                        "containerStatuses": [{"restartCount": 4}]}},
        ]})
    }

    #[test]
    fn fields_lists_and_wildcards() {
        let d = pods();
        assert_eq!(run("{.items[*].metadata.name}", &d), "a b");
        assert_eq!(run("{.items[0].status.phase}", &d), "Running");
        assert_eq!(run("{.items[-1].metadata.name}", &d), "b");
        assert_eq!(run("{.items[0:1].metadata.name}", &d), "a");
        assert_eq!(run("{$.kind}", &d), "List");
        assert_eq!(
            run("{.items[0].status.containerStatuses[0].restartCount}", &d),
            "0"
        );
        assert_eq!(run("{..podIP}", &d), "10.0.0.1");
        assert_eq!(
            run("{.items[0].metadata.labels}", &d),
            r#"{"app.kubernetes.io/name":"web"}"#
        );
        assert_eq!(
            run(r"{.items[0].metadata.labels.app\.kubernetes\.io/name}", &d),
            "web"
        );
        assert_eq!(
            run("{.items[0].metadata.labels['app.kubernetes.io/name']}", &d),
            "web"
        );
        assert_eq!(run("name: {.items[1].metadata.name}!", &d), "name: b!");
        // missing fields print nothing
        assert_eq!(run("{.items[0].spec.nodeName}", &d), "");
    }

    #[test]
    fn filters_and_ranges() {
        let d = pods();
        assert_eq!(
            run(r#"{.items[?(@.status.phase=="Running")].metadata.name}"#, &d),
            "a"
        );
        assert_eq!(
            run(r#"{.items[0].status.conditions[?(@.type=='Ready')].status}"#, &d),
            "True"
        );
        assert_eq!(
            run(
                "{.items[?(@.status.containerStatuses[0].restartCount>2)].metadata.name}",
                &d
            ),
            "b"
        );
        assert_eq!(run("{.items[?(@.status.podIP)].metadata.name}", &d), "a");
        assert_eq!(
            run(
                r#"{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}"#,
                &d
            ),
            "a\tRunning\nb\tPending\n"
        );
        assert_eq!(
            run(
                r#"{range .items[*].status.conditions[*]}{.type}={.status};{end}"#,
                &d
            ),
            "Ready=True;Initialized=True;Ready=False;"
        );
    }

    #[test]
    fn mistakes_are_reported() {
        for bad in ["{.items", "{range .items[*]}x", "{end}", "{items}", "{.items[}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
