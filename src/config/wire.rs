//! The plugin configuration as users write it (the public JSON contract).
//!
//! Every struct denies unknown fields: a typo is an error, never ignored.
//! Optional fields have their documented defaults applied in `compile`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub default_subset: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub metrics_prefix: Option<String>,
    #[serde(default)]
    pub sticky: Option<Sticky>,
    #[serde(default)]
    pub jwt: Option<Jwt>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    /// Percent, at most two decimals.
    pub weight: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    #[serde(default)]
    pub keys: Vec<Key>,
    #[serde(default)]
    pub seed: String,
}

/// Exactly one field set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    #[serde(default)]
    pub jwt_claim: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    #[serde(default)]
    pub source: JwtSource,
    #[serde(default)]
    pub metadata_key: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtSource {
    #[default]
    Verified,
    UnverifiedBearer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub subset: String,
    #[serde(rename = "match")]
    pub matcher: Match,
}

/// Exactly one source set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub header: Option<Operand>,
    #[serde(default)]
    pub cookie: Option<Operand>,
    #[serde(default)]
    pub jwt_claim: Option<Operand>,
}

/// A source's name and exactly one operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operand {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default, rename = "in")]
    pub in_list: Option<Vec<String>>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}
