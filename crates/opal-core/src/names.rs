//! Validated resource names.

use std::fmt;

use crate::BrokerError;

const MAX_NAME_LEN: usize = 200;

/// The characters of resource and attribute names: they need no escaping in paths, URLs or
/// headers, and leave other characters free for internal names.
pub(crate) fn is_plain_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The separator between an app and a resource name in a qualified name, `<app>/<name>`.
pub const APP_SEPARATOR: char = '/';

/// Checks one plain name: 1 to `max` of `[A-Za-z0-9._-]`, not starting with a dot.
fn validate_plain(kind: &str, name: &str, max: usize) -> Result<(), BrokerError> {
    if name.is_empty() || name.len() > max {
        return Err(BrokerError::invalid(
            kind,
            format!("must be 1 to {max} characters long"),
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

/// A resource name: a plain name, or one qualified by the app that owns it (`<app>/<name>`),
/// 200 characters at most in all.
fn validate(kind: &str, name: &str) -> Result<(), BrokerError> {
    if name.len() > MAX_NAME_LEN {
        return Err(too_long(kind));
    }
    match name.split_once(APP_SEPARATOR) {
        None => validate_plain(kind, name, MAX_NAME_LEN),
        Some((app, rest)) => {
            // The field's name is built only for an error: names are checked on every request.
            validate_plain(kind, app, MAX_APP_NAME_LEN).map_err(|error| match error {
                BrokerError::Invalid { reason, .. } => {
                    BrokerError::invalid(format!("{kind} (its app part)"), reason)
                }
                other => other,
            })?;
            if rest.contains(APP_SEPARATOR) {
                return Err(BrokerError::invalid(
                    kind,
                    "may contain at most one '/' (between an app and a name)",
                ));
            }
            validate_plain(kind, rest, MAX_NAME_LEN)
        }
    }
}

fn too_long(kind: &str) -> BrokerError {
    BrokerError::invalid(
        kind,
        format!("must be 1 to {MAX_NAME_LEN} characters long (with its app, if qualified)"),
    )
}

const MAX_APP_NAME_LEN: usize = 63;

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl TryFrom<String> for $ty {
            type Error = BrokerError;

            fn try_from(name: String) -> Result<Self, Self::Error> {
                Self::new(name)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl $ty {
            pub fn new(name: impl Into<String>) -> Result<Self, BrokerError> {
                let name = name.into();
                validate($kind, &name)?;
                Ok(Self(name))
            }

            /// `<app>/<name>`.
            pub fn qualified(app: &AppName, name: &str) -> Result<Self, BrokerError> {
                validate_plain($kind, name, MAX_NAME_LEN)?;
                // Both parts are valid (an `AppName` was checked when it was made): only the
                // total length is left to check.
                let qualified_len = app.as_str().len() + APP_SEPARATOR.len_utf8() + name.len();
                if qualified_len > MAX_NAME_LEN {
                    return Err(too_long($kind));
                }
                let mut qualified = String::with_capacity(qualified_len);
                qualified.push_str(app.as_str());
                qualified.push(APP_SEPARATOR);
                qualified.push_str(name);
                Ok(Self(qualified))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The app part of a qualified name.
            pub fn app(&self) -> Option<&str> {
                self.0.split_once(APP_SEPARATOR).map(|(app, _)| app)
            }

            /// The name without its app part.
            pub fn short(&self) -> &str {
                self.0.split_once(APP_SEPARATOR).map_or(&self.0, |(_, name)| name)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// An app's (tenant's) name: 1 to 63 of `[A-Za-z0-9._-]`, not starting with a dot.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl TryFrom<String> for AppName {
    type Error = BrokerError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        AppName::new(name)
    }
}

impl From<AppName> for String {
    fn from(name: AppName) -> String {
        name.0
    }
}

impl AppName {
    /// The app that owns what the bootstrap admin key creates.
    pub const DEFAULT: &'static str = "default";

    pub fn new(name: impl Into<String>) -> Result<Self, BrokerError> {
        let name = name.into();
        validate_plain("app", &name, MAX_APP_NAME_LEN)?;
        Ok(AppName(name))
    }

    pub fn default_app() -> Self {
        AppName(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

name_type!(
    /// A topic's name: 1 to 200 of `[A-Za-z0-9._-]`, not starting with a dot, optionally
    /// qualified by its app (`<app>/<name>`).
    TopicName,
    "topic"
);
name_type!(
    /// A subscription's name: 1 to 200 of `[A-Za-z0-9._-]`, not starting with a dot, optionally
    /// qualified by its app (`<app>/<name>`).
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
        for bad in [
            "",
            ".hidden",
            "a/b/c",
            "/b",
            "a/",
            "a/.b",
            ".a/b",
            "a b",
            "ü",
            &"x".repeat(201),
            &format!("{}/b", "a".repeat(64)),
        ] {
            assert!(TopicName::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn qualified_names_have_an_app_and_a_short_name() {
        let app = AppName::new("acme").unwrap();
        let name = TopicName::qualified(&app, "orders.v1").unwrap();
        assert_eq!(name.as_str(), "acme/orders.v1");
        assert_eq!((name.app(), name.short()), (Some("acme"), "orders.v1"));
        assert_eq!(TopicName::new("acme/orders.v1").unwrap(), name);
        let plain = SubscriptionName::new("s").unwrap();
        assert_eq!((plain.app(), plain.short()), (None, "s"));
        assert!(TopicName::qualified(&app, "x/y").is_err());
        // 200 characters in all, app and separator included, as for a name given whole.
        let long_app = AppName::new("a".repeat(63)).unwrap();
        let fits = TopicName::qualified(&long_app, &"n".repeat(136)).unwrap();
        assert_eq!(fits.as_str().len(), 200);
        assert_eq!(TopicName::new(fits.as_str()).unwrap(), fits);
        assert!(TopicName::qualified(&long_app, &"n".repeat(137)).is_err());
        assert!(TopicName::new(format!("{}/{}", "a".repeat(63), "n".repeat(137))).is_err());
        // An invalid app part is reported as such.
        match TopicName::new(".app/orders") {
            Err(BrokerError::Invalid { field, .. }) => assert_eq!(field, "topic (its app part)"),
            other => panic!("not an invalid app part: {other:?}"),
        }
        assert!(AppName::new("a/b").is_err());
        assert!(AppName::new("a".repeat(64)).is_err());
    }
}
