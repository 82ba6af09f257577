//! The validation error every other crate maps onto its own wire shape.

/// A value a user gave that breaks one of Lambda's rules. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CoreError {
    /// The field or parameter at fault, in Lambda's own spelling (`FunctionName`, `MemorySize`).
    pub field: &'static str,
    pub message: String,
}

impl CoreError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        CoreError {
            field,
            message: message.into(),
        }
    }
}
