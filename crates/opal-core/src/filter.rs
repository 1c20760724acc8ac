//! Subscription filters on message attributes, in the style of an SNS filter policy.
//!
//! A policy is a JSON object mapping attribute names to arrays of conditions: every named
//! attribute must match (AND), and within one attribute any condition may match (OR). The
//! accepted forms, the limits and the error messages are in `docs/filters.md`.
//!
//! Parsing does all the work up front (validation, operand checks, range normalisation) so that
//! [`Filter::matches`] is a plain walk over a few small vectors: no allocation, no regex, and an
//! attribute value is parsed as a number at most once per match.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::BrokerError;

mod parse;
#[cfg(test)]
mod tests;

/// A parsed filter policy. See `docs/filters.md` for the accepted forms.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Sorted by name, names unique (they come from the keys of a JSON object). Never empty.
    attributes: Vec<AttributeFilter>,
}

/// The conditions on one attribute: the attribute passes if any condition holds.
#[derive(Debug, Clone, PartialEq)]
struct AttributeFilter {
    name: String,
    /// In the order given. Never empty.
    conditions: Vec<Condition>,
}

/// One condition. Every kind but `Exists(false)` needs the attribute to be present.
#[derive(Debug, Clone, PartialEq)]
enum Condition {
    /// `"red"`: the value is exactly this string.
    Equals(String),
    /// `42` or `{"numeric": ["=", 42]}`: the value parses as this number.
    EqualsNumber(f64),
    /// `{"prefix": "ord-"}`. The operand is not empty.
    Prefix(String),
    /// `{"suffix": ".png"}`. The operand is not empty.
    Suffix(String),
    /// `{"equals-ignore-case": "Red"}`: equal after lowercasing every character of both sides.
    EqualsIgnoreCase(String),
    /// `{"anything-but": ["x", 5]}`: the value equals none of these. Never empty.
    AnythingBut(Vec<Scalar>),
    /// `{"anything-but": {"prefix": "tmp-"}}`: the value does not start with this (not empty).
    AnythingButPrefix(String),
    /// `{"exists": true}` / `{"exists": false}`: the attribute is present / absent.
    Exists(bool),
    /// `{"numeric": [">", 0, "<=", 100]}`: the value parses as a number inside the range.
    Range(Range),
}

/// One value of an `anything-but` list.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    /// Excludes exactly this string.
    String(String),
    /// Excludes values that parse as this number.
    Number(f64),
}

/// A numeric range with at least one bound; with both, `lower.value < upper.value`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    lower: Option<Bound>,
    upper: Option<Bound>,
}

/// One end of a [`Range`]. Its value is finite.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    value: f64,
    inclusive: bool,
}

impl Filter {
    /// Parses a policy; errors name the offending member as `filter.<attribute>…`.
    pub fn parse(policy: &serde_json::Value) -> Result<Filter, BrokerError> {
        parse::policy(policy)
    }

    /// The canonical JSON form: `Filter::parse(&f.to_json()) == Ok(f)`.
    ///
    /// Attribute names in sorted order, each with an array of conditions in the order given;
    /// `{"numeric": ["=", n]}` is written `n`, an `anything-but` operand is always an array and a
    /// range is always written lower bound first.
    pub fn to_json(&self) -> serde_json::Value {
        let mut policy = Map::new();
        for attribute in &self.attributes {
            let conditions = attribute
                .conditions
                .iter()
                .map(Condition::to_json)
                .collect();
            policy.insert(attribute.name.clone(), Value::Array(conditions));
        }
        Value::Object(policy)
    }

    /// Whether a message with these attributes passes the filter.
    pub fn matches(&self, attributes: &BTreeMap<String, String>) -> bool {
        self.attributes
            .iter()
            .all(|filter| filter.matches(attributes.get(filter.name.as_str()).map(String::as_str)))
    }
}

impl AttributeFilter {
    fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return self.conditions.contains(&Condition::Exists(false));
        };
        let mut number = NumericValue::new(value);
        self.conditions
            .iter()
            .any(|condition| condition.matches(value, &mut number))
    }
}

impl Condition {
    /// Whether the condition holds for a present attribute.
    fn matches(&self, value: &str, number: &mut NumericValue<'_>) -> bool {
        match self {
            Condition::Equals(expected) => value == expected,
            Condition::EqualsNumber(expected) => number.get() == Some(*expected),
            Condition::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Condition::Suffix(suffix) => value.ends_with(suffix.as_str()),
            Condition::EqualsIgnoreCase(expected) => eq_ignore_case(value, expected),
            Condition::AnythingBut(excluded) => excluded.iter().all(|scalar| match scalar {
                Scalar::String(excluded) => value != excluded,
                Scalar::Number(excluded) => number.get() != Some(*excluded),
            }),
            Condition::AnythingButPrefix(prefix) => !value.starts_with(prefix.as_str()),
            Condition::Exists(present) => *present,
            Condition::Range(range) => number.get().is_some_and(|n| range.contains(n)),
        }
    }

    fn to_json(&self) -> Value {
        let operator = |name: &str, operand: Value| {
            let mut object = Map::new();
            object.insert(name.to_owned(), operand);
            Value::Object(object)
        };
        match self {
            Condition::Equals(s) => Value::String(s.clone()),
            Condition::EqualsNumber(n) => number_to_json(*n),
            Condition::Prefix(s) => operator(parse::PREFIX, Value::String(s.clone())),
            Condition::Suffix(s) => operator(parse::SUFFIX, Value::String(s.clone())),
            Condition::EqualsIgnoreCase(s) => {
                operator(parse::EQUALS_IGNORE_CASE, Value::String(s.clone()))
            }
            Condition::AnythingBut(excluded) => {
                let excluded = excluded
                    .iter()
                    .map(|scalar| match scalar {
                        Scalar::String(s) => Value::String(s.clone()),
                        Scalar::Number(n) => number_to_json(*n),
                    })
                    .collect();
                operator(parse::ANYTHING_BUT, Value::Array(excluded))
            }
            Condition::AnythingButPrefix(s) => operator(
                parse::ANYTHING_BUT,
                operator(parse::PREFIX, Value::String(s.clone())),
            ),
            Condition::Exists(present) => operator(parse::EXISTS, Value::Bool(*present)),
            Condition::Range(range) => {
                let mut comparisons = Vec::with_capacity(4);
                if let Some(lower) = range.lower {
                    comparisons.push(Value::from(if lower.inclusive { ">=" } else { ">" }));
                    comparisons.push(number_to_json(lower.value));
                }
                if let Some(upper) = range.upper {
                    comparisons.push(Value::from(if upper.inclusive { "<=" } else { "<" }));
                    comparisons.push(number_to_json(upper.value));
                }
                operator(parse::NUMERIC, Value::Array(comparisons))
            }
        }
    }
}

impl Range {
    fn contains(&self, n: f64) -> bool {
        let above = self.lower.is_none_or(|lower| {
            if lower.inclusive {
                n >= lower.value
            } else {
                n > lower.value
            }
        });
        let below = self.upper.is_none_or(|upper| {
            if upper.inclusive {
                n <= upper.value
            } else {
                n < upper.value
            }
        });
        above && below
    }
}

/// An attribute value read as a number, parsed on first use and at most once.
struct NumericValue<'a> {
    text: &'a str,
    parsed: Option<Option<f64>>,
}

impl<'a> NumericValue<'a> {
    fn new(text: &'a str) -> Self {
        NumericValue { text, parsed: None }
    }

    fn get(&mut self) -> Option<f64> {
        *self.parsed.get_or_insert_with(|| parse_number(self.text))
    }
}

/// Reads an attribute value as a number: an optionally signed decimal with an optional fraction
/// and exponent (`42`, `-1.5`, `1e3`, `+.5`). Anything else does not parse: surrounding
/// whitespace, hex, `inf`, `NaN`, and values beyond the range of an `f64` (`1e400`).
fn parse_number(text: &str) -> Option<f64> {
    // `f64::from_str` also accepts `inf`, `infinity` and `nan` (any case): the finiteness check
    // turns those away together with overflowing exponents.
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Equality after lowercasing every character (Unicode simple lowercase mapping, per
/// character), without allocating.
fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// A finite number as JSON: integers that an `f64` holds exactly are written without a fraction.
fn number_to_json(n: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // Exact: |n| <= 2^53 fits an i64 and has no fraction (-0.0 becomes 0, an equal f64).
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .expect("filter numbers are finite: parse rejects everything else")
    }
}
