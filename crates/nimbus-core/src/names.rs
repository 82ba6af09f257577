//! Names and references: function names, ARNs, qualifiers, aliases, handlers.

use crate::CoreError;

/// The account id Nimbus puts in ARNs. One machine is one account.
pub const ACCOUNT_ID: &str = "000000000000";
/// The region Nimbus puts in ARNs.
pub const REGION: &str = "us-east-1";

const NAME_MAX: usize = 64;
const ALIAS_MAX: usize = 128;
const HANDLER_MAX: usize = 128;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A function name: 1–64 characters of `[a-zA-Z0-9-_]`.
pub fn validate_function_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(CoreError::new(
            "FunctionName",
            format!(
                "function name must be 1 to {NAME_MAX} characters long, got {}",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(CoreError::new(
            "FunctionName",
            format!(
                "function name {name:?} contains {bad:?}; only letters, digits, '-' and '_' are allowed"
            ),
        ));
    }
    Ok(())
}

/// An alias name: 1–128 characters of `[a-zA-Z0-9-_]`, not all digits (those are versions).
pub fn validate_alias_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty() || name.len() > ALIAS_MAX {
        return Err(CoreError::new(
            "Name",
            format!("alias name must be 1 to {ALIAS_MAX} characters long"),
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(CoreError::new(
            "Name",
            format!("alias name {name:?} is all digits, which would be read as a version number"),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(CoreError::new(
            "Name",
            format!("alias name {name:?} contains {bad:?}; only letters, digits, '-' and '_' are allowed"),
        ));
    }
    Ok(())
}

/// A handler such as `app.handler` or `index.main`: 1–128 characters, no whitespace.
/// The runtime decides what it means; `provided` runtimes may use any non-empty string.
pub fn validate_handler(handler: &str) -> Result<(), CoreError> {
    if handler.is_empty() || handler.len() > HANDLER_MAX {
        return Err(CoreError::new(
            "Handler",
            format!("handler must be 1 to {HANDLER_MAX} characters long"),
        ));
    }
    if handler.chars().any(char::is_whitespace) {
        return Err(CoreError::new(
            "Handler",
            format!("handler {handler:?} contains whitespace"),
        ));
    }
    Ok(())
}

/// An environment variable key: a letter then letters, digits and underscores (Lambda's rule).
pub fn validate_env_key(key: &str) -> Result<(), CoreError> {
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CoreError::new(
            "Environment",
            format!("environment variable name {key:?} must start with a letter and hold only letters, digits and '_'"),
        ));
    }
    Ok(())
}

/// What an invocation or lookup names after the function: `$LATEST`, a version number or an alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    pub fn parse(s: &str) -> Result<Qualifier, CoreError> {
        if s == "$LATEST" {
            return Ok(Qualifier::Latest);
        }
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            return s
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Qualifier::Version)
                .ok_or_else(|| {
                    CoreError::new(
                        "Qualifier",
                        format!("version {s:?} is not a valid version number"),
                    )
                });
        }
        validate_alias_name(s).map_err(|e| CoreError::new("Qualifier", e.message))?;
        Ok(Qualifier::Alias(s.to_string()))
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Qualifier::Latest => f.write_str("$LATEST"),
            Qualifier::Version(n) => write!(f, "{n}"),
            Qualifier::Alias(a) => f.write_str(a),
        }
    }
}

/// A reference to a function as Lambda accepts it in `FunctionName`: a name, `name:qualifier`,
/// a full ARN (`arn:aws:lambda:region:account:function:name[:qualifier]`) or a partial ARN
/// (`account:function:name[:qualifier]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<Qualifier>,
}

impl FunctionRef {
    pub fn parse(input: &str) -> Result<FunctionRef, CoreError> {
        let parts: Vec<&str> = input.split(':').collect();
        let (name, qual) = match parts.as_slice() {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            [_acct, "function", name] => (*name, None),
            [_acct, "function", name, q] => (*name, Some(*q)),
            ["arn", _part, "lambda", _region, _acct, "function", name] => (*name, None),
            ["arn", _part, "lambda", _region, _acct, "function", name, q] => (*name, Some(*q)),
            _ => {
                return Err(CoreError::new(
                    "FunctionName",
                    format!("{input:?} is neither a function name nor a function ARN"),
                ))
            }
        };
        validate_function_name(name)?;
        let qualifier = qual.map(Qualifier::parse).transpose()?;
        Ok(FunctionRef {
            name: name.to_string(),
            qualifier,
        })
    }

    /// The ARN of the unqualified function.
    pub fn arn(name: &str) -> String {
        format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}")
    }

    /// The ARN of a function with a qualifier (version or alias).
    pub fn qualified_arn(name: &str, qualifier: &str) -> String {
        format!("{}:{qualifier}", Self::arn(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        for ok in ["a", "hello-world_1", &"x".repeat(64)] {
            assert!(validate_function_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "dot.name",
            "slash/",
            &"x".repeat(65),
            "ünï",
        ] {
            assert!(validate_function_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn function_refs() {
        let cases: &[(&str, &str, Option<Qualifier>)] = &[
            ("f", "f", None),
            ("f:$LATEST", "f", Some(Qualifier::Latest)),
            ("f:3", "f", Some(Qualifier::Version(3))),
            ("f:live", "f", Some(Qualifier::Alias("live".into()))),
            ("123456789012:function:f", "f", None),
            (
                "arn:aws:lambda:us-east-1:123456789012:function:f",
                "f",
                None,
            ),
            (
                "arn:aws:lambda:us-east-1:123456789012:function:f:7",
                "f",
                Some(Qualifier::Version(7)),
            ),
        ];
        for (input, name, qual) in cases {
            let r = FunctionRef::parse(input).unwrap();
            assert_eq!(&r.name, name, "{input}");
            assert_eq!(&r.qualifier, qual, "{input}");
        }
        for bad in ["", "a:b:c", "f:0", "f:bad qual", "arn:aws:s3:::bucket"] {
            assert!(FunctionRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases_and_handlers() {
        assert!(validate_alias_name("live").is_ok());
        assert!(validate_alias_name("123").is_err());
        assert!(validate_handler("app.handler").is_ok());
        assert!(validate_handler("app handler").is_err());
        assert!(validate_handler("").is_err());
        assert!(validate_env_key("FOO_1").is_ok());
        assert!(validate_env_key("1FOO").is_err());
        assert!(validate_env_key("FOO-BAR").is_err());
    }
}
