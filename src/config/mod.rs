//! Configuration: parse (strict: unknown fields refused) → validate → compile into a
//! [`Plan`]. Shared by the filter and the native tools; the filter swaps the new
//! plan in only when all of it is valid.

mod compile;
pub use compile::DEFAULT_HEADER;
mod conditions;
mod error;
mod reader;

pub use error::ConfigError;

use crate::plan::Plan;

/// A compiled configuration and the warnings to log with it.
#[derive(Debug)]
pub struct Loaded {
    pub plan: Plan,
    pub warnings: Vec<String>,
}

/// Parse and compile a plugin configuration.
pub fn load(bytes: &[u8]) -> Result<Loaded, ConfigError> {
    compile::compile(&parse(bytes)?)
}

/// Parse only: JSON syntax, and a top-level object.
pub fn parse(bytes: &[u8]) -> Result<serde_json::Value, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new(
            "(root)",
            "configuration is empty; want a JSON object with at least \"subsets\"",
        ));
    }
    let value = crate::json::from_slice(bytes)
        .map_err(|e| ConfigError::new("(root)", format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ConfigError::new(
            "(root)",
            "want a JSON object (like {\"subsets\": [...]})",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
