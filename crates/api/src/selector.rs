//! Label selectors (`app=web,tier!=db,env in (a,b),!legacy`) and field
//! selectors (`spec.nodeName=n1,status.phase!=Running`), parsed once and
//! matched many times.

use crate::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector: every requirement must hold. The empty
/// selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {reason}; examples: app=web, tier!=db, env in (a,b), !legacy")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

impl Selector {
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the string form used by `-l` and list/watch calls.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let err = |reason: &str| SelectorError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let mut requirements = Vec::new();
        for term in split_terms(input) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(check_key(key.trim()).map_err(|r| err(&r))?)
            } else if let Some((k, rest)) = split_word(term, " notin ") {
                Requirement::NotIn(
                    check_key(k).map_err(|r| err(&r))?,
                    parse_set(rest).map_err(|r| err(&r))?,
                )
            } else if let Some((k, rest)) = split_word(term, " in ") {
                Requirement::In(
                    check_key(k).map_err(|r| err(&r))?,
                    parse_set(rest).map_err(|r| err(&r))?,
                )
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(check_key(k.trim()).map_err(|r| err(&r))?, v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(check_key(k.trim()).map_err(|r| err(&r))?, v.trim().to_string())
            } else {
                Requirement::Exists(check_key(term).map_err(|r| err(&r))?)
            };
            requirements.push(req);
        }
        Ok(Selector { requirements })
    }

    /// Converts the structured form (`matchLabels` + `matchExpressions`).
    pub fn from_label_selector(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> = sel
            .match_labels
            .iter()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for e in &sel.match_expressions {
            let err = |reason: String| SelectorError {
                input: format!("{} {}", e.key, e.operator),
                reason,
            };
            requirements.push(match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    return Err(err("In and NotIn need at least one value".into()))
                }
                "In" => Requirement::In(e.key.clone(), e.values.clone()),
                "NotIn" => Requirement::NotIn(e.key.clone(), e.values.clone()),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(err(format!(
                        "operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                    )))
                }
            });
        }
        Ok(Selector { requirements })
    }

    /// The selector `matchLabels` says, as a string (`app=web,tier=fe`).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        Selector {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&input[start..]);
    out
}

fn split_word<'a>(term: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    term.find(word)
        .map(|i| (term[..i].trim(), term[i + word.len()..].trim()))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_key(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("a label key is empty".into());
    }
    if key
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || "-_./".contains(c)))
    {
        return Err(format!(
            "label key {key:?} has characters other than letters, digits, '-', '_', '.', '/'"
        ));
    }
    Ok(key.to_string())
}

/// A parsed field selector: `field=value` and `field!=value` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError {
                    input: input.into(),
                    reason: format!("{term:?} is not field=value or field!=value"),
                });
            };
            terms.push((f_trim(field), eq, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Matches using `lookup(field)`, which returns the object's value for a
    /// supported field and None for an unsupported one.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|(f, eq, v)| {
            let actual = lookup(f).unwrap_or_default();
            (actual == *v) == *eq
        })
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|(f, _, _)| f.as_str())
    }
}

fn f_trim(s: &str) -> String {
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_like_kubernetes() {
        let l = labels(&[("app", "web"), ("env", "prod")]);
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("tier notin (db)", true),
            ("app", true),
            ("!app", false),
            ("!tier", true),
            ("app=web,env in (dev)", false),
            ("", true),
        ] {
            assert_eq!(Selector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn bad_selectors_are_explained() {
        assert!(Selector::parse("env in prod")
            .unwrap_err()
            .to_string()
            .contains("parenthesised"));
        assert!(Selector::parse("a b=c").is_err());
        assert!(Selector::parse("=x").is_err());
    }

    #[test]
    fn structured_selectors_convert() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![crate::meta::v1::LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: vec!["dev".into()],
            }],
        };
        let s = Selector::from_label_selector(&sel).unwrap();
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Running").unwrap();
        assert!(f.matches(|k| Some(if k == "spec.nodeName" { "n1" } else { "Pending" }.into())));
        assert!(!f.matches(|k| Some(if k == "spec.nodeName" { "n1" } else { "Running" }.into())));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
