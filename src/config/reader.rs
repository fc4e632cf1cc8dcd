//! A strict reader over parsed JSON that knows where it is.
//!
//! Every read names its field path (`rules[2].match.header`) in the error, unknown
//! fields are refused, and types are exact. Written by hand instead of serde derive
//! because it gives the one-line errors the contract asks for at a fraction of the
//! code size in the .wasm.

use serde_json::{Map, Value};

use super::ConfigError;

type Result<T> = std::result::Result<T, ConfigError>;

/// A JSON object at a known path.
pub struct Object<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

/// `parent.key`, or `key` at the root.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `items` with `sep` between them, like `[&str]::join`: a plain loop, smaller
/// in the .wasm than std's generic join.
fn joined(items: &[&str], sep: &str) -> String {
    let mut text = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(sep);
        }
        text.push_str(item);
    }
    text
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(super) fn wrong_type(path: &str, value: &Value, want: &str) -> ConfigError {
    let got = match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Number(n) => format!("the number {n}"),
        other => type_name(other).to_owned(),
    };
    ConfigError::new(shown(path), format!("want {want}, got {got}"))
}

impl<'a> Object<'a> {
    /// `value` as an object whose keys are all in `fields`.
    pub fn new(value: &'a Value, path: String, fields: &[&str]) -> Result<Object<'a>> {
        let Value::Object(map) = value else {
            return Err(wrong_type(&path, value, "an object"));
        };
        if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            let expected = match fields {
                [one] => format!("`{one}`"),
                [a, b] => format!("`{a}` or `{b}`"),
                many => format!("one of `{}`", joined(many, "`, `")),
            };
            // A user's key is printed escaped unless it is a plain name: a
            // newline in it must not split (or forge) the one log line.
            let shown = if !unknown.is_empty()
                && unknown
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                unknown.clone()
            } else {
                format!("{unknown:?}")
            };
            return Err(ConfigError::new(
                join(&path, &shown),
                format!("unknown field `{shown}`, expected {expected}"),
            ));
        }
        Ok(Object { path, map })
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of an optional field; `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn required(&self, key: &str) -> Result<&'a Value> {
        self.get(key)
            .ok_or_else(|| ConfigError::new(shown(&self.path), format!("missing field `{key}`")))
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|v| as_str(v, &self.path(key)))
            .transpose()
    }

    pub fn required_string(&self, key: &str) -> Result<&'a str> {
        as_str(self.required(key)?, &self.path(key))
    }

    pub fn number(&self, key: &str) -> Result<f64> {
        let value = self.required(key)?;
        value
            .as_f64()
            .ok_or_else(|| wrong_type(&self.path(key), value, "a number"))
    }

    /// An optional whole number from 0 to 2^53.
    pub fn unsigned(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .filter(|n| *n <= 1 << 53)
                    .ok_or_else(|| wrong_type(&self.path(key), v, "a whole number of seconds"))
            })
            .transpose()
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| wrong_type(&self.path(key), v, "true or false"))
            })
            .transpose()
    }

    /// An optional list; each element with its own path (`rules[3]`).
    pub fn list(&self, key: &str) -> Result<Vec<(String, &'a Value)>> {
        let Some(value) = self.get(key) else {
            return Ok(Vec::new());
        };
        let path = self.path(key);
        let Value::Array(items) = value else {
            return Err(wrong_type(&path, value, "a list"));
        };
        let mut list = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            list.push((format!("{path}[{i}]"), v));
        }
        Ok(list)
    }

    /// An optional list of strings.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        let list = self.list(key)?;
        let mut strings = Vec::with_capacity(list.len());
        for (path, v) in &list {
            strings.push(as_str(v, path)?);
        }
        Ok(Some(strings))
    }

    /// An optional nested object.
    pub fn object(&self, key: &str, fields: &[&str]) -> Result<Option<Object<'a>>> {
        self.get(key)
            .map(|v| Object::new(v, self.path(key), fields))
            .transpose()
    }

    /// Which of the mutually exclusive `keys` are set, in `keys` order.
    pub fn present(&self, keys: &[&'static str]) -> Vec<&'static str> {
        let mut present = Vec::new();
        for &k in keys {
            if self.get(k).is_some() {
                present.push(k);
            }
        }
        present
    }

    /// The one set key of `keys`, or an error naming what was found.
    pub fn exactly_one(&self, keys: &[&'static str]) -> Result<&'static str> {
        let choices = joined(keys, ", ");
        match self.present(keys).as_slice() {
            [one] => Ok(one),
            [] => Err(ConfigError::new(
                shown(&self.path),
                format!("want exactly one of {choices}; got none"),
            )),
            many => Err(ConfigError::new(
                shown(&self.path),
                format!(
                    "want exactly one of {choices}; got {} ({})",
                    many.len(),
                    joined(many, ", ")
                ),
            )),
        }
    }
}

pub fn as_str<'a>(value: &'a Value, path: &str) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(path, value, "a string"))
}
