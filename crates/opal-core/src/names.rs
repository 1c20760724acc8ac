//! Validated resource names.

use std::fmt;

use crate::BrokerError;

const MAX_NAME_LEN: usize = 200;

/// The characters of resource and attribute names: they need no escaping in paths, URLs or
/// headers, and leave other characters free for internal names.
pub(crate) fn is_plain_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn validate(kind: &str, name: &str) -> Result<(), BrokerError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(BrokerError::invalid(
            kind,
            format!("must be 1 to {MAX_NAME_LEN} characters long"),
        ));
    }
    // Names end up in file paths and URLs: keep them to a set that needs no escaping anywhere.
    if !name.chars().all(is_plain_name_char) {
        return Err(BrokerError::invalid(
            kind,
            "may contain only ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    if name.starts_with('.') {
        return Err(BrokerError::invalid(kind, "must not start with '.'"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(name: impl Into<String>) -> Result<Self, BrokerError> {
                let name = name.into();
                validate($kind, &name)?;
                Ok(Self(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A topic's name: 1 to 200 of `[A-Za-z0-9._-]`, not starting with a dot.
    TopicName,
    "topic"
);
name_type!(
    /// A subscription's name: 1 to 200 of `[A-Za-z0-9._-]`, not starting with a dot.
    SubscriptionName,
    "subscription"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert!(TopicName::new("orders.created-v1_x").is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(201)] {
            assert!(TopicName::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
