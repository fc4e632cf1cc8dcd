//! Configuration: parse (serde, unknown fields refused) → validate → compile into a
//! [`Router`]. Shared by the filter and the native tools; the filter swaps the new
//! router in only when all of it is valid.

mod compile;
pub use compile::DEFAULT_HEADER;
mod error;
pub mod wire;

pub use error::ConfigError;

use crate::router::Router;

/// A compiled configuration and the warnings to log with it.
#[derive(Debug)]
pub struct Loaded {
    pub router: Router,
    pub warnings: Vec<String>,
}

/// Parse and compile a plugin configuration.
pub fn load(bytes: &[u8]) -> Result<Loaded, ConfigError> {
    compile::compile(parse(bytes)?)
}

/// Parse only: the JSON shape, with the path of the first offending field.
pub fn parse(bytes: &[u8]) -> Result<wire::Config, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new(
            "(root)",
            "configuration is empty; want a JSON object with at least \"subsets\"",
        ));
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::new(
            "(root)",
            "want a JSON object (like {\"subsets\": [...]})",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let config: wire::Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "(root)".to_owned()
        } else {
            path
        };
        ConfigError::new(path, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| ConfigError::new("(root)", e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
mod tests;
