//! Runtimes: the three Nimbus runs and the AWS identifiers that map onto them.

use crate::CoreError;

/// The language runtime of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// The machine's CPython 3 with Nimbus's built-in bootstrap.
    Python3,
    /// The machine's Node.js with Nimbus's built-in bootstrap.
    Nodejs,
    /// The code's own `bootstrap` executable (Lambda's custom runtime contract).
    Provided,
}

impl Runtime {
    /// Parses a runtime name. Nimbus's own names and AWS's identifiers are accepted; the
    /// original AWS spelling is kept by callers that need to echo it back.
    pub fn parse(s: &str) -> Result<Runtime, CoreError> {
        let lower = s.to_ascii_lowercase();
        let rt = match lower.as_str() {
            "python3" | "python" => Runtime::Python3,
            "nodejs" | "node" => Runtime::Nodejs,
            "provided" | "provided.al2" | "provided.al2023" => Runtime::Provided,
            _ if is_versioned(&lower, "python3.") => Runtime::Python3,
            _ if lower.starts_with("nodejs") && lower.ends_with(".x") && is_digits(&lower[6..lower.len() - 2]) => {
                Runtime::Nodejs
            }
            _ => {
                return Err(CoreError::new(
                    "Runtime",
                    format!(
                        "runtime {s:?} is not supported; use python3 (or python3.x), nodejs (or nodejs18.x/20.x/22.x) or provided (or provided.al2/provided.al2023)"
                    ),
                ))
            }
        };
        Ok(rt)
    }

    /// Nimbus's canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Nodejs => "nodejs",
            Runtime::Provided => "provided",
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

fn is_versioned(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(is_digits)
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names() {
        let table = [
            ("python3", Runtime::Python3),
            ("python3.9", Runtime::Python3),
            ("python3.12", Runtime::Python3),
            ("nodejs", Runtime::Nodejs),
            ("nodejs18.x", Runtime::Nodejs),
            ("nodejs20.x", Runtime::Nodejs),
            ("nodejs22.x", Runtime::Nodejs),
            ("provided", Runtime::Provided),
            ("provided.al2", Runtime::Provided),
            ("provided.al2023", Runtime::Provided),
        ];
        for (name, rt) in table {
            assert_eq!(Runtime::parse(name).unwrap(), rt, "{name}");
        }
        for bad in ["java17", "python2.7", "python3.", "nodejs.x", "ruby3.2", ""] {
            assert!(Runtime::parse(bad).is_err(), "{bad}");
        }
    }
}
