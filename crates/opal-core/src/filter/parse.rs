//! Turning a JSON policy into a [`Filter`], with an error that says exactly what is wrong.
//!
//! Problems with the policy as a whole (its shape, the number of attributes or conditions, an
//! invalid attribute name) are reported on the field `filter`; problems inside one attribute's
//! conditions on `filter.<attribute>`, with the condition's 0-based position in the reason.

use serde_json::{Map, Value};

use super::{AttributeFilter, Bound, Condition, Filter, Range, Scalar};
use crate::BrokerError;

/// Most attribute names in one policy.
pub(super) const MAX_ATTRIBUTES: usize = 16;
/// Most conditions in one policy, over all attributes; each value of an `anything-but` list
/// counts as one condition.
pub(super) const MAX_CONDITIONS: usize = 100;
/// Longest string operand, in bytes.
pub(super) const MAX_OPERAND_BYTES: usize = 1024;
/// Longest attribute name, in bytes: the rule that published attribute names follow.
pub(super) const MAX_NAME_BYTES: usize = 256;
/// Most comparisons in one `numeric` condition: a lower and an upper bound.
const MAX_COMPARISONS: usize = 2;

pub(super) const PREFIX: &str = "prefix";
pub(super) const SUFFIX: &str = "suffix";
pub(super) const ANYTHING_BUT: &str = "anything-but";
pub(super) const EXISTS: &str = "exists";
pub(super) const NUMERIC: &str = "numeric";
pub(super) const EQUALS_IGNORE_CASE: &str = "equals-ignore-case";

const OPERATORS: [&str; 6] = [
    PREFIX,
    SUFFIX,
    ANYTHING_BUT,
    EXISTS,
    NUMERIC,
    EQUALS_IGNORE_CASE,
];

const POLICY: &str = "filter";

/// Parses a whole policy.
pub(super) fn policy(policy: &Value) -> Result<Filter, BrokerError> {
    let Value::Object(members) = policy else {
        return Err(BrokerError::invalid(
            POLICY,
            format!(
                "a filter policy must be a JSON object mapping attribute names to arrays of \
                 conditions, got {}",
                describe(policy)
            ),
        ));
    };
    if members.is_empty() {
        return Err(BrokerError::invalid(
            POLICY,
            "the policy is empty: name at least one attribute, e.g. {\"color\": [\"red\"]}",
        ));
    }
    if members.len() > MAX_ATTRIBUTES {
        return Err(BrokerError::invalid(
            POLICY,
            format!(
                "the policy names {} attributes, at most {MAX_ATTRIBUTES} are allowed",
                members.len()
            ),
        ));
    }
    let mut budget = MAX_CONDITIONS;
    let mut attributes = Vec::with_capacity(members.len());
    for (name, conditions) in members {
        check_name(name)?;
        let field = format!("{POLICY}.{name}");
        let conditions = attribute_conditions(conditions, &field, &mut budget)?;
        attributes.push(AttributeFilter {
            name: name.clone(),
            conditions,
        });
    }
    // Sorted already unless serde_json keeps insertion order (its `preserve_order` feature).
    attributes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Filter { attributes })
}

/// The attribute-name rule of published messages: 1 to 256 bytes of ASCII letters, digits,
/// `.`, `_` and `-`.
fn check_name(name: &str) -> Result<(), BrokerError> {
    let reason = if name.is_empty() || name.len() > MAX_NAME_BYTES {
        format!(
            "attribute name {} is {} bytes long, attribute names must be 1 to {MAX_NAME_BYTES} \
             bytes long",
            quote(name),
            name.len()
        )
    } else if let Some(c) = name.chars().find(|&c| !crate::names::is_plain_name_char(c)) {
        format!(
            "attribute name {} contains {c:?}: attribute names may contain only ASCII letters, \
             digits, '.', '_' and '-'",
            quote(name)
        )
    } else {
        return Ok(());
    };
    Err(BrokerError::invalid(POLICY, reason))
}

/// The conditions of one attribute: an array of them, or one bare string or number.
fn attribute_conditions(
    value: &Value,
    field: &str,
    budget: &mut usize,
) -> Result<Vec<Condition>, BrokerError> {
    let at = |reason: String| BrokerError::invalid(field, reason);
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(at(
                    "the condition array is empty: list at least one condition".into(),
                ));
            }
            let mut conditions = Vec::with_capacity(items.len().min(*budget));
            for (index, item) in items.iter().enumerate() {
                // Spend before parsing, so an oversized policy is turned away without parsing it.
                spend(budget, 1)?;
                let condition = condition(item)
                    .map_err(|reason| at(format!("condition [{index}]: {reason}")))?;
                spend(budget, condition.weight() - 1)?;
                conditions.push(condition);
            }
            Ok(conditions)
        }
        Value::String(_) | Value::Number(_) => {
            spend(budget, 1)?;
            Ok(vec![condition(value).map_err(at)?])
        }
        Value::Object(_) => Err(at(
            "expected an array of conditions (or one string or number), got an object: wrap a \
             condition object in an array, e.g. [{\"prefix\": \"ord-\"}]; nested attribute \
             objects are not supported"
                .into(),
        )),
        Value::Bool(_) => Err(at(format!(
            "expected an array of conditions (or one string or number), got {}: to test whether \
             the attribute is present use [{{\"exists\": true}}] or [{{\"exists\": false}}]",
            describe(value)
        ))),
        Value::Null => Err(at(
            "expected an array of conditions (or one string or number), got null: to match \
             messages without this attribute use [{\"exists\": false}]"
                .into(),
        )),
    }
}

/// Takes `cost` conditions from what the policy may still hold.
fn spend(budget: &mut usize, cost: usize) -> Result<(), BrokerError> {
    *budget = budget.checked_sub(cost).ok_or_else(|| {
        BrokerError::invalid(
            POLICY,
            format!(
                "the policy has more than {MAX_CONDITIONS} conditions (counting every condition \
                 of every attribute and every value of an anything-but list)"
            ),
        )
    })?;
    Ok(())
}

impl Condition {
    /// How many conditions this one counts as against [`MAX_CONDITIONS`].
    fn weight(&self) -> usize {
        match self {
            Condition::AnythingBut(excluded) => excluded.len(),
            _ => 1,
        }
    }
}

/// One element of a condition array. The error is the reason alone; the caller adds where.
fn condition(value: &Value) -> Result<Condition, String> {
    match value {
        Value::String(s) => Ok(Condition::Equals(string_operand(s)?)),
        Value::Number(_) => Ok(Condition::EqualsNumber(number(value)?)),
        Value::Object(object) => operator_condition(object),
        Value::Array(_) => Err(
            "nested arrays are not allowed: a condition is a string, a number \
             or an object with one operator, e.g. {\"prefix\": \"ord-\"}"
                .into(),
        ),
        Value::Bool(_) => Err(format!(
            "{} is not a condition: booleans are only allowed as the operand of exists, e.g. \
             {{\"exists\": true}}",
            value
        )),
        Value::Null => Err(
            "null is not a condition: to match messages without this attribute \
             use {\"exists\": false}"
                .into(),
        ),
    }
}

/// A condition object: exactly one operator and its operand.
fn operator_condition(object: &Map<String, Value>) -> Result<Condition, String> {
    let mut members = object.iter();
    let (operator, operand) = match (members.next(), members.next()) {
        (Some(member), None) => member,
        (None, _) => {
            return Err(format!(
                "a condition object needs exactly one operator, got none; operators are {}",
                OPERATORS.join(", ")
            ));
        }
        (Some(_), Some(_)) => {
            let names: Vec<String> = object.keys().map(|k| quote(k)).collect();
            return Err(format!(
                "a condition object needs exactly one operator, got {} ({}); list several \
                 conditions in the array instead",
                object.len(),
                names.join(", ")
            ));
        }
    };
    match operator.as_str() {
        PREFIX => Ok(Condition::Prefix(affix_operand(PREFIX, operand)?)),
        SUFFIX => Ok(Condition::Suffix(affix_operand(SUFFIX, operand)?)),
        EQUALS_IGNORE_CASE => match operand {
            Value::String(s) => Ok(Condition::EqualsIgnoreCase(string_operand(s)?)),
            other => Err(format!(
                "{EQUALS_IGNORE_CASE} needs a string, got {}",
                describe(other)
            )),
        },
        EXISTS => match operand {
            Value::Bool(present) => Ok(Condition::Exists(*present)),
            other => Err(format!(
                "{EXISTS} needs true or false, got {}",
                describe(other)
            )),
        },
        ANYTHING_BUT => anything_but(operand),
        NUMERIC => numeric(operand),
        unknown => {
            let hint = closest_operator(unknown)
                .map(|near| format!(" (did you mean \"{near}\"?)"))
                .unwrap_or_default();
            Err(format!(
                "unknown operator {}{hint}; operators are {}",
                quote(unknown),
                OPERATORS.join(", ")
            ))
        }
    }
}

/// The operand of `prefix` and `suffix`, and of `anything-but`'s `prefix`: a non-empty string.
fn affix_operand(operator: &str, operand: &Value) -> Result<String, String> {
    match operand {
        Value::String(s) if s.is_empty() => Err(format!(
            "{operator} needs a non-empty string: an empty {operator} would match every value, \
             use {{\"exists\": true}} for that"
        )),
        Value::String(s) => string_operand(s),
        other => Err(format!(
            "{operator} needs a string, got {}",
            describe(other)
        )),
    }
}

fn anything_but(operand: &Value) -> Result<Condition, String> {
    let scalar = |value: &Value| match value {
        Value::String(s) => Ok(Scalar::String(string_operand(s)?)),
        Value::Number(_) => Ok(Scalar::Number(number(value)?)),
        other => Err(format!(
            "{ANYTHING_BUT} takes strings and numbers, got {}",
            describe(other)
        )),
    };
    match operand {
        Value::String(_) | Value::Number(_) => Ok(Condition::AnythingBut(vec![scalar(operand)?])),
        Value::Array(values) => {
            if values.is_empty() {
                return Err(format!(
                    "{ANYTHING_BUT} needs at least one value, got an empty array"
                ));
            }
            if values.len() > MAX_CONDITIONS {
                return Err(format!(
                    "{ANYTHING_BUT} lists {} values, at most {MAX_CONDITIONS} are allowed",
                    values.len()
                ));
            }
            let excluded = values.iter().map(scalar).collect::<Result<_, _>>()?;
            Ok(Condition::AnythingBut(excluded))
        }
        Value::Object(object) => {
            let mut members = object.iter();
            match (members.next(), members.next()) {
                (Some((operator, operand)), None) if operator == PREFIX => Ok(
                    Condition::AnythingButPrefix(affix_operand(PREFIX, operand)?),
                ),
                _ => Err(format!(
                    "{ANYTHING_BUT} takes a string, a number, an array of them or \
                     {{\"prefix\": \"...\"}}, got the object {}",
                    truncate(&operand.to_string())
                )),
            }
        }
        other => Err(format!(
            "{ANYTHING_BUT} takes a string, a number, an array of them or {{\"prefix\": \
             \"...\"}}, got {}",
            describe(other)
        )),
    }
}

/// `[">", 0, "<=", 100]`: one or two comparisons, all of which must hold.
fn numeric(operand: &Value) -> Result<Condition, String> {
    const SHAPE: &str =
        "numeric needs one or two operator/number pairs, e.g. [\">\", 0, \"<=\", 100]";
    let Value::Array(items) = operand else {
        return Err(format!("{SHAPE}, got {}", describe(operand)));
    };
    if items.is_empty() {
        return Err(format!("{SHAPE}, got an empty array"));
    }
    if items.len() % 2 != 0 {
        return Err(format!(
            "{SHAPE}, got {} elements: every operator needs a number after it",
            items.len()
        ));
    }
    let pairs = items.len() / 2;
    if pairs > MAX_COMPARISONS {
        return Err(format!(
            "numeric takes at most {MAX_COMPARISONS} comparisons (a lower and an upper bound), \
             got {pairs}"
        ));
    }
    let mut equal = None;
    let mut lower: Option<Bound> = None;
    let mut upper: Option<Bound> = None;
    for pair in items.chunks_exact(2) {
        let operator = match &pair[0] {
            Value::String(s) => s.as_str(),
            other => {
                return Err(format!(
                    "numeric expects an operator (=, <, <=, >, >=) before each number, got {}",
                    describe(other)
                ));
            }
        };
        if !matches!(operator, "=" | "<" | "<=" | ">" | ">=") {
            return Err(format!(
                "unknown numeric operator {}; operators are =, <, <=, >, >=",
                quote(operator)
            ));
        }
        let value = match &pair[1] {
            Value::Number(_) => number(&pair[1])?,
            other => {
                return Err(format!(
                    "the operand of \"{operator}\" must be a number, got {}",
                    describe(other)
                ));
            }
        };
        let (slot, side) = match operator {
            "=" if pairs > 1 => {
                return Err("\"=\" cannot be combined with another comparison".into());
            }
            "=" => {
                equal = Some(value);
                continue;
            }
            ">" | ">=" => (&mut lower, "lower"),
            _ => (&mut upper, "upper"),
        };
        if slot.is_some() {
            return Err(format!(
                "numeric has two {side} bounds: give at most one lower bound (> or >=) and one \
                 upper bound (< or <=)"
            ));
        }
        *slot = Some(Bound {
            value,
            inclusive: operator.ends_with('='),
        });
    }
    if let Some(value) = equal {
        return Ok(Condition::EqualsNumber(value));
    }
    if let (Some(l), Some(u)) = (lower, upper)
        && l.value >= u.value
    {
        return Err(format!(
            "the range is empty: the lower bound {} must be less than the upper bound {}",
            super::number_to_json(l.value),
            super::number_to_json(u.value)
        ));
    }
    Ok(Condition::Range(Range { lower, upper }))
}

/// A string operand, within the length limit.
fn string_operand(s: &str) -> Result<String, String> {
    if s.len() > MAX_OPERAND_BYTES {
        return Err(format!(
            "a string operand is {} bytes long, at most {MAX_OPERAND_BYTES} bytes are allowed",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// A JSON number as a finite `f64`.
fn number(value: &Value) -> Result<f64, String> {
    // serde_json only holds finite numbers, but with its `arbitrary_precision` feature a huge
    // literal reads as infinity: refuse it rather than compare against it.
    value
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("the number {value} is out of range"))
}

/// The known operator a typo most likely meant: within two edits.
fn closest_operator(unknown: &str) -> Option<&'static str> {
    OPERATORS
        .iter()
        .map(|known| (edit_distance(unknown, known), *known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance over bytes, bounded for long inputs (they are never close anyway).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 2 {
        return usize::MAX;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// What a JSON value is, for error messages: its type, and the value itself if it is short.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({})", quote(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A user-given string quoted and escaped for an error message, shortened if long.
fn quote(s: &str) -> String {
    truncate(&format!("{s:?}"))
}

/// At most 64 characters, with an ellipsis when shortened.
fn truncate(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}
