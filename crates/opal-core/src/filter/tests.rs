use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::parse::{MAX_ATTRIBUTES, MAX_CONDITIONS, MAX_NAME_BYTES, MAX_OPERAND_BYTES};
use super::*;
use crate::Limits;

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn filter(policy: &Value) -> Filter {
    Filter::parse(policy).unwrap_or_else(|e| panic!("{policy} should parse: {e}"))
}

/// The field and reason of the error `policy` is rejected with.
fn rejection(policy: &Value) -> (String, String) {
    match Filter::parse(policy) {
        Err(BrokerError::Invalid { field, reason }) => (field, reason),
        Err(other) => panic!("{policy}: expected an Invalid error, got {other:?}"),
        Ok(f) => panic!("{policy} should be rejected, parsed as {f:?}"),
    }
}

/// A message's attributes, and whether the policy lets it pass.
type Case = (Vec<(&'static str, &'static str)>, bool);

/// Policies with attribute sets, and whether each set passes.
fn matching_cases() -> Vec<(Value, Vec<Case>)> {
    vec![
        // Exact string.
        (
            json!({"color": ["red"]}),
            vec![
                (vec![("color", "red")], true),
                (vec![("color", "Red")], false),
                (vec![("color", "red ")], false),
                (vec![("color", "")], false),
                (vec![("other", "red")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"color": [""]}),
            vec![
                (vec![("color", "")], true),
                (vec![("color", "x")], false),
                (vec![], false),
            ],
        ),
        // Bare scalar ≡ one-element array.
        (
            json!({"color": "red"}),
            vec![
                (vec![("color", "red")], true),
                (vec![("color", "blue")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"n": 5}),
            vec![
                (vec![("n", "5")], true),
                (vec![("n", "6")], false),
                (vec![], false),
            ],
        ),
        // Numeric equality.
        (
            json!({"n": [42]}),
            vec![
                (vec![("n", "42")], true),
                (vec![("n", "42.0")], true),
                (vec![("n", "4.2e1")], true),
                (vec![("n", "+42")], true),
                (vec![("n", "42.5")], false),
                (vec![("n", "forty-two")], false),
                (vec![("n", " 42")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"n": [1.5]}),
            vec![
                (vec![("n", "1.5")], true),
                (vec![("n", "1.50")], true),
                (vec![("n", "1")], false),
            ],
        ),
        (
            json!({"n": [{"numeric": ["=", -3]}]}),
            vec![
                (vec![("n", "-3")], true),
                (vec![("n", "-3.0")], true),
                (vec![("n", "3")], false),
            ],
        ),
        // Prefix and suffix.
        (
            json!({"id": [{"prefix": "ord-"}]}),
            vec![
                (vec![("id", "ord-1")], true),
                (vec![("id", "ord-")], true),
                (vec![("id", "ord")], false),
                (vec![("id", "xord-1")], false),
                (vec![("id", "ORD-1")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"file": [{"suffix": ".png"}]}),
            vec![
                (vec![("file", "a.png")], true),
                (vec![("file", ".png")], true),
                (vec![("file", "a.png.gz")], false),
                (vec![("file", "a.PNG")], false),
                (vec![], false),
            ],
        ),
        // anything-but: one string, a list, numbers, a prefix.
        (
            json!({"color": [{"anything-but": "red"}]}),
            vec![
                (vec![("color", "blue")], true),
                (vec![("color", "")], true),
                (vec![("color", "redder")], true),
                (vec![("color", "dark red")], true),
                (vec![("color", "red")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"color": [{"anything-but": ["red", "green"]}]}),
            vec![
                (vec![("color", "blue")], true),
                (vec![("color", "red")], false),
                (vec![("color", "green")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"n": [{"anything-but": [0, "none"]}]}),
            vec![
                (vec![("n", "1")], true),
                (vec![("n", "abc")], true),
                (vec![("n", "0")], false),
                (vec![("n", "0.0")], false),
                (vec![("n", "-0")], false),
                (vec![("n", "none")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"n": [{"anything-but": 7}]}),
            vec![
                (vec![("n", "8")], true),
                (vec![("n", "7e0")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"id": [{"anything-but": {"prefix": "tmp-"}}]}),
            vec![
                (vec![("id", "prod-1")], true),
                (vec![("id", "tmp")], true),
                (vec![("id", "x-tmp-1")], true),
                (vec![("id", "tmp-1")], false),
                (vec![("id", "tmp-")], false),
                (vec![], false),
            ],
        ),
        // exists.
        (
            json!({"trace": [{"exists": true}]}),
            vec![
                (vec![("trace", "x")], true),
                (vec![("trace", "")], true),
                (vec![("other", "x")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"trace": [{"exists": false}]}),
            vec![
                (vec![], true),
                (vec![("other", "x")], true),
                (vec![("trace", "")], false),
                (vec![("trace", "x")], false),
            ],
        ),
        // numeric ranges, bounds inclusive and exclusive, one or two sides.
        (
            json!({"n": [{"numeric": [">", 0, "<=", 100]}]}),
            vec![
                (vec![("n", "0.0001")], true),
                (vec![("n", "100")], true),
                (vec![("n", "1e2")], true),
                (vec![("n", "0")], false),
                (vec![("n", "100.0001")], false),
                (vec![("n", "-5")], false),
                (vec![("n", "abc")], false),
                (vec![("n", "")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"n": [{"numeric": [">=", 0, "<", 100]}]}),
            vec![
                (vec![("n", "0")], true),
                (vec![("n", "99.99")], true),
                (vec![("n", "100")], false),
                (vec![("n", "-0.0001")], false),
            ],
        ),
        (
            json!({"n": [{"numeric": ["<", 100, ">", 0]}]}),
            vec![
                (vec![("n", "50")], true),
                (vec![("n", "0")], false),
                (vec![("n", "100")], false),
            ],
        ),
        (
            json!({"n": [{"numeric": [">", 10]}]}),
            vec![
                (vec![("n", "10.5")], true),
                (vec![("n", "1e300")], true),
                (vec![("n", "10")], false),
                (vec![("n", "1e400")], false),
                (vec![("n", "inf")], false),
            ],
        ),
        (
            json!({"n": [{"numeric": ["<=", -1.5]}]}),
            vec![
                (vec![("n", "-1.5")], true),
                (vec![("n", "-1e3")], true),
                (vec![("n", "-1.4")], false),
                (vec![("n", "-inf")], false),
                (vec![("n", "-NaN")], false),
            ],
        ),
        (
            json!({"n": [{"numeric": [">=", 5]}]}),
            vec![(vec![("n", "5")], true), (vec![("n", "4.999")], false)],
        ),
        (
            json!({"n": [{"numeric": ["<", 5]}]}),
            vec![(vec![("n", "4.999")], true), (vec![("n", "5")], false)],
        ),
        // equals-ignore-case, ASCII and beyond.
        (
            json!({"color": [{"equals-ignore-case": "Red"}]}),
            vec![
                (vec![("color", "red")], true),
                (vec![("color", "RED")], true),
                (vec![("color", "rEd")], true),
                (vec![("color", "reds")], false),
                (vec![("color", "rex")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"city": [{"equals-ignore-case": "ÅRHUS"}]}),
            vec![
                (vec![("city", "århus")], true),
                (vec![("city", "Århus")], true),
                (vec![("city", "arhus")], false),
                (vec![("city", "århu")], false),
            ],
        ),
        // OR within an attribute.
        (
            json!({"color": ["red", "green", {"prefix": "bl"}]}),
            vec![
                (vec![("color", "red")], true),
                (vec![("color", "green")], true),
                (vec![("color", "blue")], true),
                (vec![("color", "yellow")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}, 50]}),
            vec![
                (vec![("n", "-1")], true),
                (vec![("n", "101")], true),
                (vec![("n", "50")], true),
                (vec![("n", "49")], false),
            ],
        ),
        // Absent or a value: exists false OR'ed with a value.
        (
            json!({"color": [{"exists": false}, "red"]}),
            vec![
                (vec![], true),
                (vec![("color", "red")], true),
                (vec![("color", "blue")], false),
            ],
        ),
        // AND across attributes.
        (
            json!({"color": ["red"], "size": [{"numeric": [">=", 10]}]}),
            vec![
                (vec![("color", "red"), ("size", "10")], true),
                (vec![("color", "red"), ("size", "12"), ("extra", "x")], true),
                (vec![("color", "red"), ("size", "9")], false),
                (vec![("color", "blue"), ("size", "10")], false),
                (vec![("color", "red")], false),
                (vec![("size", "10")], false),
                (vec![], false),
            ],
        ),
        (
            json!({"a": [{"exists": true}], "b": [{"exists": false}], "c": [{"anything-but": "x"}]}),
            vec![
                (vec![("a", "1"), ("c", "y")], true),
                (vec![("a", "1"), ("b", "1"), ("c", "y")], false),
                (vec![("a", "1"), ("c", "x")], false),
                (vec![("a", "1")], false),
                (vec![("c", "y")], false),
            ],
        ),
        // Attribute names with every allowed kind of character.
        (
            json!({"a.B_c-9": ["v"]}),
            vec![
                (vec![("a.B_c-9", "v")], true),
                (vec![("a.b_c-9", "v")], false),
            ],
        ),
    ]
}

#[test]
fn every_condition_kind_matches_and_does_not_match() {
    let mut checked = 0;
    for (policy, cases) in matching_cases() {
        let f = filter(&policy);
        let mut seen = [false; 2];
        for (pairs, expected) in cases {
            let attributes = attrs(&pairs);
            assert_eq!(
                f.matches(&attributes),
                expected,
                "policy {policy} on attributes {attributes:?}"
            );
            seen[usize::from(expected)] = true;
            checked += 1;
        }
        // Every policy in the table is shown both passing and failing a message.
        assert_eq!(
            seen,
            [true, true],
            "policy {policy} needs a passing and a failing case"
        );
    }
    assert!(checked > 100, "only {checked} cases checked");
}

#[test]
fn every_condition_but_exists_false_needs_the_attribute() {
    let conditions = [
        json!("x"),
        json!(0),
        json!({"prefix": "x"}),
        json!({"suffix": "x"}),
        json!({"anything-but": "x"}),
        json!({"anything-but": [1, "y"]}),
        json!({"anything-but": {"prefix": "x"}}),
        json!({"exists": true}),
        json!({"numeric": [">", 0]}),
        json!({"numeric": ["<", 0]}),
        json!({"equals-ignore-case": "x"}),
    ];
    let absent = attrs(&[("other", "x")]);
    for condition in conditions {
        let f = filter(&json!({"a": [condition]}));
        assert!(
            !f.matches(&absent),
            "{condition} matched an absent attribute"
        );
        assert!(
            !f.matches(&BTreeMap::new()),
            "{condition} matched no attributes"
        );
    }
    let f = filter(&json!({"a": [{"exists": false}]}));
    assert!(f.matches(&absent));
    assert!(f.matches(&BTreeMap::new()));
}

#[test]
fn attribute_values_parse_as_numbers_strictly() {
    // (attribute value, the number it reads as, or None when it is not a number)
    let cases: [(&str, Option<f64>); 24] = [
        ("1e3", Some(1000.0)),
        ("1E3", Some(1000.0)),
        ("1e-3", Some(0.001)),
        ("-2.5", Some(-2.5)),
        ("+7", Some(7.0)),
        (".5", Some(0.5)),
        ("5.", Some(5.0)),
        ("007", Some(7.0)),
        ("-0", Some(0.0)),
        ("1e308", Some(1e308)),
        (" 5", None),
        ("5 ", None),
        ("\t5", None),
        ("abc", None),
        ("", None),
        ("0x10", None),
        ("1_000", None),
        ("1,5", None),
        ("NaN", None),
        ("nan", None),
        ("inf", None),
        ("-Infinity", None),
        ("1e400", None),
        ("5e", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_number(text), expected, "{text:?}");
    }
    // The same through a filter: a value that is not a number never matches a numeric condition.
    let f = filter(&json!({"n": [1000, {"numeric": [">", -1e9]}]}));
    for (text, expected) in cases {
        assert_eq!(
            f.matches(&attrs(&[("n", text)])),
            expected.is_some(),
            "{text:?}"
        );
    }
}

#[test]
fn case_insensitive_comparison_handles_unicode_without_prefix_confusion() {
    let cases = [
        ("Red", "red", true),
        ("ΣΊΣΥΦΟΣ", "σίσυφοσ", true),
        ("Straße", "STRASSE", false), // lowercasing, not full case folding
        ("ǅ", "ǆ", true),
        ("a", "ab", false),
        ("ab", "a", false),
        ("", "", true),
        ("é", "É", true),
        ("é", "e", false),
    ];
    for (a, b, expected) in cases {
        assert_eq!(eq_ignore_case(a, b), expected, "{a:?} vs {b:?}");
        assert_eq!(eq_ignore_case(b, a), expected, "{b:?} vs {a:?}");
    }
}

/// Each invalid policy, the field of its error and words its reason must contain.
fn invalid_cases() -> Vec<(Value, &'static str, &'static str)> {
    let long = "x".repeat(MAX_OPERAND_BYTES + 1);
    let long_name = "n".repeat(MAX_NAME_BYTES + 1);
    let many_keys: serde_json::Map<String, Value> = (0..=MAX_ATTRIBUTES)
        .map(|i| (format!("a{i}"), json!(["x"])))
        .collect();
    let many_conditions: Vec<Value> = (0..=MAX_CONDITIONS).map(|i| json!(i)).collect();
    let many_excluded: Vec<Value> = (0..=MAX_CONDITIONS).map(|i| json!(i)).collect();
    vec![
        // The policy as a whole.
        (json!(null), "filter", "must be a JSON object"),
        (json!([]), "filter", "got an array"),
        (json!("color"), "filter", "got a string"),
        (json!(5), "filter", "got a number"),
        (json!(true), "filter", "got a boolean"),
        (json!({}), "filter", "the policy is empty"),
        (
            Value::Object(many_keys),
            "filter",
            "names 17 attributes, at most 16",
        ),
        (
            json!({"a": many_conditions}),
            "filter",
            "more than 100 conditions",
        ),
        (
            json!({"a": [{"anything-but": many_excluded}]}),
            "filter.a",
            "at most 100",
        ),
        // Attribute names.
        (json!({"": ["x"]}), "filter", "must be 1 to 256 bytes"),
        (json!({long_name: ["x"]}), "filter", "257 bytes long"),
        (json!({"a b": ["x"]}), "filter", "contains ' '"),
        (json!({":id": ["x"]}), "filter", "only ASCII letters"),
        (json!({"naïve": ["x"]}), "filter", "contains 'ï'"),
        (json!({"a/b": ["x"]}), "filter", "\"a/b\""),
        // The value of an attribute.
        (
            json!({"color": []}),
            "filter.color",
            "the condition array is empty",
        ),
        (json!({"color": null}), "filter.color", "got null"),
        (
            json!({"color": true}),
            "filter.color",
            "got a boolean (true)",
        ),
        (
            json!({"color": {"prefix": "r"}}),
            "filter.color",
            "wrap a condition object in an array",
        ),
        (
            json!({"color": {"shade": ["dark"]}}),
            "filter.color",
            "nested attribute objects",
        ),
        // Conditions of the wrong kind.
        (
            json!({"color": [null]}),
            "filter.color",
            "condition [0]: null is not a condition",
        ),
        (
            json!({"color": ["red", true]}),
            "filter.color",
            "condition [1]: true is not a condition",
        ),
        (
            json!({"color": [false]}),
            "filter.color",
            "booleans are only allowed as the operand of exists",
        ),
        (
            json!({"color": [["red"]]}),
            "filter.color",
            "nested arrays are not allowed",
        ),
        (
            json!({"color": [{}]}),
            "filter.color",
            "exactly one operator, got none",
        ),
        (
            json!({"color": [{"prefix": "a", "suffix": "b"}]}),
            "filter.color",
            "exactly one operator, got 2 (\"prefix\", \"suffix\")",
        ),
        (
            json!({"color": [{"prefx": "r"}]}),
            "filter.color",
            "unknown operator \"prefx\" (did you mean \"prefix\"?)",
        ),
        (
            json!({"color": [{"regex": ".*"}]}),
            "filter.color",
            "unknown operator \"regex\"; operators are",
        ),
        (
            json!({"color": [{"Prefix": "r"}]}),
            "filter.color",
            "did you mean \"prefix\"",
        ),
        (
            json!({"n": [{"numerik": [">", 1]}]}),
            "filter.n",
            "did you mean \"numeric\"",
        ),
        // Operands of the wrong type or size.
        (
            json!({"c": [{"prefix": 5}]}),
            "filter.c",
            "prefix needs a string, got a number (5)",
        ),
        (
            json!({"c": [{"prefix": null}]}),
            "filter.c",
            "prefix needs a string, got null",
        ),
        (
            json!({"c": [{"prefix": ""}]}),
            "filter.c",
            "prefix needs a non-empty string",
        ),
        (
            json!({"c": [{"prefix": ["a"]}]}),
            "filter.c",
            "prefix needs a string, got an array",
        ),
        (
            json!({"c": [{"suffix": true}]}),
            "filter.c",
            "suffix needs a string, got a boolean (true)",
        ),
        (
            json!({"c": [{"suffix": ""}]}),
            "filter.c",
            "suffix needs a non-empty string",
        ),
        (
            json!({"c": [{"equals-ignore-case": 1}]}),
            "filter.c",
            "equals-ignore-case needs a string, got a number (1)",
        ),
        (
            json!({"c": [{"equals-ignore-case": {"a": 1}}]}),
            "filter.c",
            "equals-ignore-case needs a string, got an object",
        ),
        (
            json!({"c": [{"exists": "true"}]}),
            "filter.c",
            "exists needs true or false, got a string (\"true\")",
        ),
        (
            json!({"c": [{"exists": 1}]}),
            "filter.c",
            "exists needs true or false, got a number (1)",
        ),
        (
            json!({"c": [{"exists": null}]}),
            "filter.c",
            "exists needs true or false, got null",
        ),
        (
            json!({"c": [{"anything-but": null}]}),
            "filter.c",
            "anything-but takes a string, a number, an array of them",
        ),
        (
            json!({"c": [{"anything-but": true}]}),
            "filter.c",
            "got a boolean (true)",
        ),
        (
            json!({"c": [{"anything-but": []}]}),
            "filter.c",
            "anything-but needs at least one value",
        ),
        (
            json!({"c": [{"anything-but": ["a", null]}]}),
            "filter.c",
            "anything-but takes strings and numbers, got null",
        ),
        (
            json!({"c": [{"anything-but": ["a", false]}]}),
            "filter.c",
            "got a boolean (false)",
        ),
        (
            json!({"c": [{"anything-but": [["a"]]}]}),
            "filter.c",
            "got an array",
        ),
        (
            json!({"c": [{"anything-but": {"suffix": "a"}}]}),
            "filter.c",
            "got the object {\"suffix\":\"a\"}",
        ),
        (
            json!({"c": [{"anything-but": {"prefix": "a", "x": 1}}]}),
            "filter.c",
            "{\"prefix\": \"...\"}",
        ),
        (
            json!({"c": [{"anything-but": {"prefix": ""}}]}),
            "filter.c",
            "prefix needs a non-empty string",
        ),
        (
            json!({"c": [{"anything-but": {"prefix": 3}}]}),
            "filter.c",
            "prefix needs a string, got a number (3)",
        ),
        (
            json!({"c": [{"anything-but": {"anything-but": "a"}}]}),
            "filter.c",
            "anything-but takes",
        ),
        (
            json!({"c": [long.clone()]}),
            "filter.c",
            "1025 bytes long, at most 1024",
        ),
        (json!({"c": long.clone()}), "filter.c", "1025 bytes long"),
        (
            json!({"c": [{"prefix": long.clone()}]}),
            "filter.c",
            "1025 bytes long",
        ),
        (
            json!({"c": [{"suffix": long.clone()}]}),
            "filter.c",
            "1025 bytes long",
        ),
        (
            json!({"c": [{"equals-ignore-case": long.clone()}]}),
            "filter.c",
            "1025 bytes long",
        ),
        (
            json!({"c": [{"anything-but": long.clone()}]}),
            "filter.c",
            "1025 bytes long",
        ),
        (
            json!({"c": [{"anything-but": ["a", long.clone()]}]}),
            "filter.c",
            "1025 bytes long",
        ),
        (
            json!({"c": [{"anything-but": {"prefix": long}}]}),
            "filter.c",
            "1025 bytes long",
        ),
        // numeric.
        (
            json!({"n": [{"numeric": 5}]}),
            "filter.n",
            "numeric needs one or two operator/number pairs",
        ),
        (
            json!({"n": [{"numeric": ">5"}]}),
            "filter.n",
            "got a string (\">5\")",
        ),
        (
            json!({"n": [{"numeric": []}]}),
            "filter.n",
            "got an empty array",
        ),
        (
            json!({"n": [{"numeric": [">"]}]}),
            "filter.n",
            "got 1 elements: every operator needs a number",
        ),
        (
            json!({"n": [{"numeric": [">", 1, "<"]}]}),
            "filter.n",
            "got 3 elements",
        ),
        (
            json!({"n": [{"numeric": [">", 0, "<", 10, "<", 20]}]}),
            "filter.n",
            "at most 2 comparisons",
        ),
        (
            json!({"n": [{"numeric": [">", 0, "<", 10, ">", 1, "<", 9, ">", 2, "<", 8]}]}),
            "filter.n",
            "got 6",
        ),
        (
            json!({"n": [{"numeric": ["=>", 5]}]}),
            "filter.n",
            "unknown numeric operator \"=>\"",
        ),
        (
            json!({"n": [{"numeric": ["==", 5]}]}),
            "filter.n",
            "operators are =, <, <=, >, >=",
        ),
        (
            json!({"n": [{"numeric": [5, ">"]}]}),
            "filter.n",
            "expects an operator (=, <, <=, >, >=) before each number, got a number (5)",
        ),
        (
            json!({"n": [{"numeric": [null, 5]}]}),
            "filter.n",
            "got null",
        ),
        (
            json!({"n": [{"numeric": [">", "5"]}]}),
            "filter.n",
            "the operand of \">\" must be a number, got a string (\"5\")",
        ),
        (
            json!({"n": [{"numeric": [">", null]}]}),
            "filter.n",
            "must be a number, got null",
        ),
        (
            json!({"n": [{"numeric": [">", true]}]}),
            "filter.n",
            "must be a number, got a boolean (true)",
        ),
        (
            json!({"n": [{"numeric": ["<", "NaN"]}]}),
            "filter.n",
            "must be a number, got a string (\"NaN\")",
        ),
        (
            json!({"n": [{"numeric": [">", "Infinity"]}]}),
            "filter.n",
            "must be a number",
        ),
        (
            json!({"n": [{"numeric": ["=", 5, "<", 10]}]}),
            "filter.n",
            "\"=\" cannot be combined",
        ),
        (
            json!({"n": [{"numeric": [">", 5, "=", 5]}]}),
            "filter.n",
            "\"=\" cannot be combined",
        ),
        (
            json!({"n": [{"numeric": [">", 0, ">=", 5]}]}),
            "filter.n",
            "numeric has two lower bounds",
        ),
        (
            json!({"n": [{"numeric": ["<", 0, "<=", 5]}]}),
            "filter.n",
            "numeric has two upper bounds",
        ),
        (
            json!({"n": [{"numeric": [">", 10, "<", 5]}]}),
            "filter.n",
            "the range is empty: the lower bound 10 must be less than the upper bound 5",
        ),
        (
            json!({"n": [{"numeric": [">=", 5, "<=", 5]}]}),
            "filter.n",
            "the range is empty",
        ),
        (
            json!({"n": [{"numeric": ["<", 1.5, ">", 1.5]}]}),
            "filter.n",
            "lower bound 1.5 must be less than the upper bound 1.5",
        ),
        // The position of the bad condition is given.
        (
            json!({"n": [1, 2, {"numeric": [">"]}]}),
            "filter.n",
            "condition [2]: numeric",
        ),
        // The first bad attribute is reported, with its own name.
        (
            json!({"good": ["x"], "zbad": [{"exists": 1}]}),
            "filter.zbad",
            "exists needs",
        ),
        (
            json!({"a.b-c_d": [null]}),
            "filter.a.b-c_d",
            "null is not a condition",
        ),
    ]
}

#[test]
fn every_invalid_policy_is_rejected_with_its_field_and_reason() {
    for (policy, field, words) in invalid_cases() {
        let (got_field, reason) = rejection(&policy);
        let shown = truncated(&policy);
        assert_eq!(got_field, field, "{shown}: {reason}");
        assert!(
            reason.contains(words),
            "{shown}: reason {reason:?} lacks {words:?}"
        );
    }
}

fn truncated(policy: &Value) -> String {
    let text = policy.to_string();
    text.chars().take(120).collect()
}

#[test]
fn limits_are_inclusive() {
    // At each limit a policy is accepted; one beyond is rejected (see the invalid cases).
    let keys: serde_json::Map<String, Value> = (0..MAX_ATTRIBUTES)
        .map(|i| (format!("a{i}"), json!(["x"])))
        .collect();
    assert_eq!(
        filter(&Value::Object(keys)).attributes.len(),
        MAX_ATTRIBUTES
    );

    let conditions: Vec<Value> = (0..MAX_CONDITIONS).map(|i| json!(i)).collect();
    filter(&json!({"a": conditions}));

    // Spread over attributes: 16 × 6 = 96, plus 4 more is exactly 100.
    let mut spread: serde_json::Map<String, Value> = (0..MAX_ATTRIBUTES)
        .map(|i| (format!("a{i}"), json!([1, 2, 3, 4, 5, 6])))
        .collect();
    spread.insert("a0".into(), json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    filter(&Value::Object(spread.clone()));
    spread.insert("a1".into(), json!([1, 2, 3, 4, 5, 6, 7]));
    let (field, reason) = rejection(&Value::Object(spread));
    assert_eq!(field, "filter", "{reason}");
    assert!(reason.contains("more than 100 conditions"), "{reason}");

    // anything-but values count: 99 conditions plus a 2-value list is 101.
    let mut conditions: Vec<Value> = (0..MAX_CONDITIONS - 1).map(|i| json!(i)).collect();
    conditions.push(json!({"anything-but": ["a"]}));
    filter(&json!({"a": conditions.clone()}));
    conditions.pop();
    conditions.push(json!({"anything-but": ["a", "b"]}));
    let (field, reason) = rejection(&json!({"a": conditions}));
    assert_eq!(field, "filter", "{reason}");
    assert!(reason.contains("anything-but"), "{reason}");

    let operand = "é".repeat(MAX_OPERAND_BYTES / 2); // 1024 bytes in 512 characters
    for condition in [
        json!(operand),
        json!({"prefix": operand}),
        json!({"suffix": operand}),
        json!({"equals-ignore-case": operand}),
        json!({"anything-but": operand}),
        json!({"anything-but": {"prefix": operand}}),
    ] {
        filter(&json!({"a": [condition]}));
    }
    let (_, reason) = rejection(&json!({"a": [format!("{operand}x")]}));
    assert!(reason.contains("1025 bytes"), "{reason}");

    let name = "n".repeat(MAX_NAME_BYTES);
    let f = filter(&json!({name.clone(): ["x"]}));
    assert!(f.matches(&attrs(&[(&name, "x")])));
}

#[test]
fn the_attribute_name_rule_is_the_one_of_published_messages() {
    assert_eq!(MAX_NAME_BYTES, Limits::default().max_attribute_name_bytes);
}

#[test]
fn long_names_in_errors_are_shortened() {
    let name = format!("{}!", "n".repeat(1000));
    let (field, reason) = rejection(&json!({name: ["x"]}));
    assert_eq!(field, "filter");
    assert!(reason.len() < 300, "{reason}");
    assert!(reason.contains('…'), "{reason}");
}

#[test]
fn errors_read_as_documented() {
    // These exact messages are quoted in docs/filters.md.
    let cases = [
        (
            json!(["red"]),
            "invalid filter: a filter policy must be a JSON object mapping attribute names to \
             arrays of conditions, got an array",
        ),
        (
            json!({}),
            "invalid filter: the policy is empty: name at least one attribute, e.g. \
             {\"color\": [\"red\"]}",
        ),
        (
            json!({"color": []}),
            "invalid filter.color: the condition array is empty: list at least one condition",
        ),
        (
            json!({"color": [{"prefx": "r"}]}),
            "invalid filter.color: condition [0]: unknown operator \"prefx\" (did you mean \
             \"prefix\"?); operators are prefix, suffix, anything-but, exists, numeric, \
             equals-ignore-case",
        ),
        (
            json!({"color": ["red", null]}),
            "invalid filter.color: condition [1]: null is not a condition: to match messages \
             without this attribute use {\"exists\": false}",
        ),
        (
            json!({"size": [{"numeric": [">", 10, "<=", 5]}]}),
            "invalid filter.size: condition [0]: the range is empty: the lower bound 10 must be \
             less than the upper bound 5",
        ),
        (
            json!({"size": [{"numeric": [">", "10"]}]}),
            "invalid filter.size: condition [0]: the operand of \">\" must be a number, got a \
             string (\"10\")",
        ),
        (
            json!({"color": [{"exists": "yes"}]}),
            "invalid filter.color: condition [0]: exists needs true or false, got a string \
             (\"yes\")",
        ),
        (
            json!({"order id": ["1"]}),
            "invalid filter: attribute name \"order id\" contains ' ': attribute names may \
             contain only ASCII letters, digits, '.', '_' and '-'",
        ),
    ];
    for (policy, expected) in cases {
        let err = Filter::parse(&policy).expect_err("invalid");
        assert_eq!(err.to_string(), expected, "{policy}");
    }
}

#[test]
fn canonical_form() {
    let cases = [
        (json!({"color": "red"}), json!({"color": ["red"]})),
        (json!({"n": 5}), json!({"n": [5]})),
        (json!({"n": [2.5]}), json!({"n": [2.5]})),
        (json!({"n": [5.0]}), json!({"n": [5]})),
        (json!({"n": [-0.0]}), json!({"n": [0]})),
        (json!({"n": [1e20]}), json!({"n": [1e20]})),
        (json!({"n": [{"numeric": ["=", 7]}]}), json!({"n": [7]})),
        (
            json!({"n": [{"numeric": ["<=", 100, ">", 0]}]}),
            json!({"n": [{"numeric": [">", 0, "<=", 100]}]}),
        ),
        (
            json!({"n": [{"numeric": [">=", 1.5]}]}),
            json!({"n": [{"numeric": [">=", 1.5]}]}),
        ),
        (
            json!({"n": [{"numeric": ["<", -1]}]}),
            json!({"n": [{"numeric": ["<", -1]}]}),
        ),
        (
            json!({"c": [{"anything-but": "x"}]}),
            json!({"c": [{"anything-but": ["x"]}]}),
        ),
        (
            json!({"c": [{"anything-but": 3}]}),
            json!({"c": [{"anything-but": [3]}]}),
        ),
        (
            json!({"c": [{"anything-but": {"prefix": "t"}}]}),
            json!({"c": [{"anything-but": {"prefix": "t"}}]}),
        ),
        (
            json!({"z": ["1"], "a": [{"exists": false}], "m": [{"suffix": "s"}, "b", "a"]}),
            json!({"a": [{"exists": false}], "m": [{"suffix": "s"}, "b", "a"], "z": ["1"]}),
        ),
    ];
    for (policy, canonical) in cases {
        let f = filter(&policy);
        // Attribute names are kept in sorted order, whatever the map implementation.
        assert!(f.attributes.is_sorted_by_key(|a| a.name.as_str()), "{f:?}");
        let json = f.to_json();
        assert_eq!(json, canonical, "{policy}");
        assert_eq!(Filter::parse(&json).ok(), Some(f), "{policy}");
        // Attribute names come out in sorted order, whatever the map implementation.
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert!(keys.is_sorted(), "{json}");
    }
    // Two spellings of one condition parse to the same filter.
    assert_eq!(
        filter(&json!({"n": [{"numeric": ["=", 7]}]})),
        filter(&json!({"n": 7}))
    );
    assert_eq!(
        filter(&json!({"n": [{"numeric": ["<", 9, ">=", 1]}]})),
        filter(&json!({"n": [{"numeric": [">=", 1, "<", 9]}]}))
    );
    assert_ne!(filter(&json!({"n": ["7"]})), filter(&json!({"n": [7]})));
}

#[test]
fn every_valid_table_policy_round_trips() {
    for (policy, cases) in matching_cases() {
        let f = filter(&policy);
        let json = f.to_json();
        let again = Filter::parse(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(again, f, "{policy} -> {json}");
        assert_eq!(again.to_json(), json, "{policy}: to_json is not stable");
        for (pairs, expected) in cases {
            assert_eq!(
                again.matches(&attrs(&pairs)),
                expected,
                "{json} on {pairs:?}"
            );
        }
    }
}

/// A fixed-seed xorshift64 generator: the randomized test is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn number(&mut self) -> f64 {
        match self.below(4) {
            0 => self.below(10) as f64,
            1 => -(self.below(1000) as f64) / 8.0,
            2 => (self.next() >> 11) as f64 / 3.0,
            _ => f64::from_bits(self.next() >> 2), // a positive finite double of any size
        }
    }
}

const WORDS: [&str; 8] = ["", "a", "ab", "abc", "B", "é", "1", "2.5"];

fn random_condition(rng: &mut XorShift) -> Value {
    let word = |rng: &mut XorShift| rng.pick(&WORDS).to_owned();
    let nonempty = |rng: &mut XorShift| rng.pick(&WORDS[1..]).to_owned();
    match rng.below(11) {
        0 => json!(word(rng)),
        1 => json!(rng.number()),
        2 => json!({"prefix": nonempty(rng)}),
        3 => json!({"suffix": nonempty(rng)}),
        4 => json!({"anything-but": word(rng)}),
        5 => {
            let values: Vec<Value> = (0..1 + rng.below(3))
                .map(|_| {
                    if rng.below(2) == 0 {
                        json!(word(rng))
                    } else {
                        json!(rng.number())
                    }
                })
                .collect();
            json!({"anything-but": values})
        }
        6 => json!({"anything-but": {"prefix": nonempty(rng)}}),
        7 => json!({"exists": rng.below(2) == 0}),
        8 => json!({"equals-ignore-case": word(rng)}),
        9 => {
            let (a, b) = (rng.number(), rng.number());
            let (lower, upper) = (a.min(b), a.max(b));
            let lower_op = rng.pick(&[">", ">="]);
            let upper_op = rng.pick(&["<", "<="]);
            match rng.below(4) {
                0 => json!({"numeric": [lower_op, lower]}),
                1 => json!({"numeric": [upper_op, upper]}),
                _ if lower == upper => json!({"numeric": ["=", lower]}),
                2 => json!({"numeric": [upper_op, upper, lower_op, lower]}),
                _ => json!({"numeric": [lower_op, lower, upper_op, upper]}),
            }
        }
        _ => json!({"numeric": ["=", rng.number()]}),
    }
}

fn random_policy(rng: &mut XorShift) -> Value {
    let names = ["a", "b", "c.d", "e_f", "g-h", "Z9"];
    let mut policy = serde_json::Map::new();
    for _ in 0..1 + rng.below(4) {
        let name = rng.pick(&names).to_owned();
        let conditions: Vec<Value> = (0..1 + rng.below(4))
            .map(|_| random_condition(rng))
            .collect();
        let value = if conditions.len() == 1 && conditions[0].is_string() && rng.below(2) == 0 {
            conditions[0].clone()
        } else {
            Value::Array(conditions)
        };
        policy.insert(name, value);
    }
    Value::Object(policy)
}

fn random_attributes(rng: &mut XorShift) -> BTreeMap<String, String> {
    let names = ["a", "b", "c.d", "e_f", "g-h", "Z9"];
    let values = [
        "", "a", "ab", "abc", "AB", "É", "é", "1", "2.5", "1e3", "-4", " 1", "x",
    ];
    (0..rng.below(6))
        .map(|_| (rng.pick(&names).to_owned(), rng.pick(&values).to_owned()))
        .collect()
}

#[test]
fn randomized_policies_round_trip_and_match_like_their_parts() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = [0usize; 2];
    for _ in 0..2000 {
        let policy = random_policy(&mut rng);
        let f = filter(&policy);
        let json = f.to_json();
        assert_eq!(
            Filter::parse(&json).as_ref().ok(),
            Some(&f),
            "{policy} -> {json}"
        );
        assert_eq!(
            filter(&json).to_json(),
            json,
            "{policy}: to_json is not stable"
        );

        // The filter is the AND over attributes of the OR over conditions, each checked alone.
        let parts: Vec<Vec<Filter>> = json
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, conditions)| {
                conditions
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| filter(&json!({name.clone(): [c.clone()]})))
                    .collect()
            })
            .collect();
        for _ in 0..8 {
            let attributes = random_attributes(&mut rng);
            let expected = parts
                .iter()
                .all(|any| any.iter().any(|part| part.matches(&attributes)));
            let got = f.matches(&attributes);
            assert_eq!(got, expected, "{json} on {attributes:?}");
            outcomes[usize::from(got)] += 1;
        }
    }
    // The generator is not degenerate: plenty of messages pass and plenty fail.
    assert!(outcomes.iter().all(|&n| n > 1000), "{outcomes:?}");
}
