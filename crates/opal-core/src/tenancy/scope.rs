//! Scopes: what a key may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::BrokerError;

/// One permission of a key. Names in patterns are the app's own short names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// Everything, in every app: create apps and keys, read the audit trail.
    Admin,
    /// Create, change and delete the app's own topics, subscriptions and grants; seek, redrive.
    Manage,
    /// Publish to the app's topics whose names match.
    Publish(NamePattern),
    /// Pull, stream, ack, nack and extend on the app's subscriptions whose names match.
    Consume(NamePattern),
    /// Read the app's resources: get, list, stats, browse messages.
    Read,
}

impl Scope {
    /// Scopes as given in key requests, for error messages.
    pub const FORMS: &'static str =
        "`admin`, `manage`, `read`, `publish:<topic pattern>`, `consume:<subscription pattern>`";
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Manage => f.write_str("manage"),
            Scope::Read => f.write_str("read"),
            Scope::Publish(p) => write!(f, "publish:{p}"),
            Scope::Consume(p) => write!(f, "consume:{p}"),
        }
    }
}

impl FromStr for Scope {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => return Ok(Scope::Admin),
            "manage" => return Ok(Scope::Manage),
            "read" => return Ok(Scope::Read),
            _ => {}
        }
        if let Some(pattern) = s.strip_prefix("publish:") {
            return Ok(Scope::Publish(pattern.parse()?));
        }
        if let Some(pattern) = s.strip_prefix("consume:") {
            return Ok(Scope::Consume(pattern.parse()?));
        }
        Err(BrokerError::invalid(
            "scopes",
            format!("unknown scope {s:?}; a scope is one of {}", Scope::FORMS),
        ))
    }
}

impl TryFrom<String> for Scope {
    type Error = BrokerError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.to_string()
    }
}

/// A name pattern: name characters and `*`, which stands for any run of characters (none
/// included). `orders.*` matches `orders.created` and `orders.`, `*` matches every name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamePattern(String);

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NamePattern {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 200 {
            return Err(BrokerError::invalid(
                "scopes",
                "a name pattern must be 1 to 200 characters long",
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|&c| c != '*' && !crate::names::is_plain_name_char(c))
        {
            return Err(BrokerError::invalid(
                "scopes",
                format!(
                    "a name pattern may contain only name characters and `*`, not {c:?} \
                     (patterns name the app's own resources)"
                ),
            ));
        }
        Ok(NamePattern(s.to_owned()))
    }
}

/// Wildcard match with `*` only, iterative with one backtrack point: linear in practice and never
/// exponential, whatever the pattern.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> NamePattern {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_match_with_stars() {
        let cases = [
            ("orders.*", "orders.created", true),
            ("orders.*", "orders.", true),
            ("orders.*", "orders", false),
            ("orders.*", "billing.orders.x", false),
            ("*", "anything", true),
            ("*.created", "orders.created", true),
            ("*.created", "orders.created.v2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("**", "x", true),
        ];
        for (p, name, expected) in cases {
            assert_eq!(pattern(p).matches(name), expected, "{p} vs {name}");
        }
    }

    #[test]
    fn scopes_parse_and_print_the_same() {
        for text in ["admin", "manage", "read", "publish:orders.*", "consume:*"] {
            assert_eq!(text.parse::<Scope>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "root",
            "publish:",
            "publish:acme/orders",
            "consume:a b",
            "Publish:x",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn many_stars_match_like_a_regular_expression_would() {
        // Exponential for a naive recursive matcher; one backtrack point keeps it quadratic.
        let p = pattern(&format!("{}c", "a*".repeat(50)));
        assert!(!p.matches(&format!("{}b", "a".repeat(190))));
        assert!(p.matches(&format!("{}c", "a".repeat(190))));
        assert!(!p.matches(&format!("{}c", "a".repeat(49))));
    }
}
