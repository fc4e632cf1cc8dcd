use std::fmt;

/// Why a configuration was refused: the field path and the problem, printed as the
/// one log line users see (`config: subsets[1].weight: weights sum to 120, want 100`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Like `rules[2].match.header.regex`; `(root)` for the whole document.
    pub path: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config: {}: {}", self.path, self.problem)
    }
}

impl std::error::Error for ConfigError {}
