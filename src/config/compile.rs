//! Validation and compilation of a parsed configuration into a [`Router`].

use std::collections::HashSet;

use super::wire;
use super::{ConfigError, Loaded};
use crate::bucket::{Split, BUCKETS};
use crate::metrics::MetricNames;
use crate::request::JwtSource;
use crate::router::{Router, StickyKey};
use crate::rules::{Operator, Rule, RuleSet, Source};

pub const MAX_SUBSETS: usize = 16;
pub const DEFAULT_HEADER: &str = "x-canary-subset";
pub const DEFAULT_METRICS_PREFIX: &str = "canary";
pub const DEFAULT_METADATA_KEY: &str = "payload";
const NAME_PATTERN: &str = "[a-z0-9][a-z0-9_-]{0,62}";

type Result<T> = std::result::Result<T, ConfigError>;

pub fn compile(config: wire::Config) -> Result<Loaded> {
    let mut warnings = Vec::new();
    let (subsets, weights_bp) = compile_subsets(&config.subsets)?;

    let default_subset = match &config.default_subset {
        None => 0,
        Some(name) => subset_index(&subsets, name, "default_subset")?,
    };
    let header = match &config.header {
        None => DEFAULT_HEADER.to_owned(),
        Some(h) => header_name(h, "header")?,
    };
    let metrics_prefix = match &config.metrics_prefix {
        None => DEFAULT_METRICS_PREFIX.to_owned(),
        Some(p) => metrics_prefix(p)?,
    };
    let jwt = compile_jwt(config.jwt.as_ref())?;

    let (sticky_keys, seed) = match &config.sticky {
        None => (Vec::new(), String::new()),
        Some(sticky) => (
            sticky
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| sticky_key(k, &format!("sticky.keys[{i}]")))
                .collect::<Result<Vec<_>>>()?,
            sticky.seed.clone(),
        ),
    };

    let mut rule_names = HashSet::new();
    let mut rules = Vec::with_capacity(config.rules.len());
    for (i, rule) in config.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        if !valid_name(&rule.name) {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!(
                    "{:?} is not a valid rule name (want {NAME_PATTERN})",
                    rule.name
                ),
            ));
        }
        if !rule_names.insert(rule.name.as_str()) {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate rule name {:?}", rule.name),
            ));
        }
        let subset = subset_index(&subsets, &rule.subset, &format!("{path}.subset"))?;
        let (source, operator) = compile_match(&rule.matcher, &format!("{path}.match"))?;
        rules.push(Rule {
            name: rule.name.clone(),
            subset,
            source,
            operator,
        });
    }

    let uses_claims = rules.iter().any(|r| matches!(r.source, Source::Claim(_)))
        || sticky_keys
            .iter()
            .any(|k| matches!(k.source, Source::Claim(_)));
    if jwt == JwtSource::UnverifiedBearer && uses_claims {
        warnings.push(
            "jwt.source is \"unverified_bearer\": JWT claims are read from the Authorization \
             header WITHOUT checking the signature; any client can forge them. Use \"verified\" \
             with Envoy's jwt_authn (Istio RequestAuthentication) in production."
                .to_owned(),
        );
    }

    let rule_name_list: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    let router = Router {
        split: Split::new(&weights_bp, &seed),
        metrics: MetricNames::new(&metrics_prefix, &subsets, &rule_name_list),
        subsets,
        weights_bp,
        default_subset,
        header,
        sticky_keys,
        seed,
        jwt,
        rules: RuleSet::new(rules),
    };
    Ok(Loaded { router, warnings })
}

fn compile_subsets(subsets: &[wire::Subset]) -> Result<(Vec<String>, Vec<u16>)> {
    if subsets.is_empty() || subsets.len() > MAX_SUBSETS {
        return Err(ConfigError::new(
            "subsets",
            format!("want 1 to {MAX_SUBSETS} subsets, got {}", subsets.len()),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(subsets.len());
    let mut weights = Vec::with_capacity(subsets.len());
    for (i, subset) in subsets.iter().enumerate() {
        if !valid_name(&subset.name) {
            return Err(ConfigError::new(
                format!("subsets[{i}].name"),
                format!(
                    "{:?} is not a valid subset name (want {NAME_PATTERN})",
                    subset.name
                ),
            ));
        }
        if names.contains(&subset.name) {
            return Err(ConfigError::new(
                format!("subsets[{i}].name"),
                format!("duplicate subset {:?}", subset.name),
            ));
        }
        names.push(subset.name.clone());
        weights.push(weight_bp(subset.weight, &format!("subsets[{i}].weight"))?);
    }
    let sum: u32 = weights.iter().map(|&w| u32::from(w)).sum();
    if sum != u32::from(BUCKETS) {
        return Err(ConfigError::new(
            format!("subsets[{}].weight", subsets.len() - 1),
            format!("weights sum to {}, want 100", format_bp(sum)),
        ));
    }
    Ok((names, weights))
}

/// A percentage with at most two decimals, as basis points.
fn weight_bp(weight: f64, path: &str) -> Result<u16> {
    if !weight.is_finite() || !(0.0..=100.0).contains(&weight) {
        return Err(ConfigError::new(
            path,
            format!("{weight} is not a percentage between 0 and 100"),
        ));
    }
    let scaled = weight * 100.0;
    let bp = scaled.round();
    if (scaled - bp).abs() > 1e-6 {
        return Err(ConfigError::new(
            path,
            format!("{weight} has more than two decimals (weights move in steps of 0.01)"),
        ));
    }
    // 0 ≤ bp ≤ 10,000: the range check above bounds it.
    Ok(bp as u16)
}

fn format_bp(bp: u32) -> String {
    if bp % 100 == 0 {
        format!("{}", bp / 100)
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
            .trim_end_matches('0')
            .to_owned()
    }
}

fn subset_index(subsets: &[String], name: &str, path: &str) -> Result<usize> {
    subsets.iter().position(|s| s == name).ok_or_else(|| {
        ConfigError::new(
            path,
            format!(
                "{name:?} is not a listed subset (have {})",
                subsets.join(", ")
            ),
        )
    })
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// An HTTP header name (RFC 9110 token), lowercased as Envoy stores them.
fn header_name(name: &str, path: &str) -> Result<String> {
    let is_token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn metrics_prefix(prefix: &str) -> Result<String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(prefix.to_owned())
    } else {
        Err(ConfigError::new(
            "metrics_prefix",
            format!("{prefix:?} is not a valid stats prefix (want dot-separated [A-Za-z0-9_-] segments, at most 64 characters)"),
        ))
    }
}

fn compile_jwt(jwt: Option<&wire::Jwt>) -> Result<JwtSource> {
    let Some(jwt) = jwt else {
        return Ok(JwtSource::Verified {
            metadata_key: DEFAULT_METADATA_KEY.to_owned(),
        });
    };
    match (jwt.source, &jwt.metadata_key) {
        (wire::JwtSource::Verified, None) => Ok(JwtSource::Verified {
            metadata_key: DEFAULT_METADATA_KEY.to_owned(),
        }),
        (wire::JwtSource::Verified, Some(key)) if key.is_empty() => Err(ConfigError::new(
            "jwt.metadata_key",
            "must not be empty (Istio uses \"payload\")",
        )),
        (wire::JwtSource::Verified, Some(key)) => Ok(JwtSource::Verified {
            metadata_key: key.clone(),
        }),
        (wire::JwtSource::UnverifiedBearer, None) => Ok(JwtSource::UnverifiedBearer),
        (wire::JwtSource::UnverifiedBearer, Some(_)) => Err(ConfigError::new(
            "jwt.metadata_key",
            "only applies to source \"verified\"",
        )),
    }
}

fn claim_path(name: &str, path: &str) -> Result<Vec<String>> {
    let segments: Vec<String> = name.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a claim name or dotted path (like realm_access.roles)"),
        ));
    }
    Ok(segments)
}

fn sticky_key(key: &wire::Key, path: &str) -> Result<StickyKey> {
    let set = [
        key.jwt_claim.as_ref().map(|n| ("jwt_claim", n)),
        key.cookie.as_ref().map(|n| ("cookie", n)),
        key.header.as_ref().map(|n| ("header", n)),
    ];
    let (kind, name) = exactly_one(&set, path, "jwt_claim, cookie, header")?;
    let source = match kind {
        "jwt_claim" => Source::Claim(claim_path(name, &format!("{path}.jwt_claim"))?),
        "cookie" => Source::Cookie(cookie_name(name, &format!("{path}.cookie"))?),
        _ => Source::Header(header_name(name, &format!("{path}.header"))?),
    };
    Ok(StickyKey {
        label: format!("{kind}:{name}"),
        source,
    })
}

fn cookie_name(name: &str, path: &str) -> Result<String> {
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b <= b' ' || b == b';' || b == b'=' || b >= 0x7f)
    {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid cookie name"),
        ));
    }
    Ok(name.to_owned())
}

/// The one `Some` of a set of mutually exclusive fields.
fn exactly_one<'a, T>(
    set: &[Option<(&'static str, &'a T)>],
    path: &str,
    choices: &str,
) -> Result<(&'static str, &'a T)> {
    let present: Vec<(&'static str, &'a T)> = set.iter().flatten().copied().collect();
    match present.as_slice() {
        [one] => Ok(*one),
        [] => Err(ConfigError::new(
            path,
            format!("want exactly one of {choices}; got none"),
        )),
        many => Err(ConfigError::new(
            path,
            format!(
                "want exactly one of {choices}; got {} ({})",
                many.len(),
                many.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

fn compile_match(matcher: &wire::Match, path: &str) -> Result<(Source, Operator)> {
    let set = [
        matcher.header.as_ref().map(|o| ("header", o)),
        matcher.cookie.as_ref().map(|o| ("cookie", o)),
        matcher.jwt_claim.as_ref().map(|o| ("jwt_claim", o)),
    ];
    let (kind, operand) = exactly_one(&set, path, "header, cookie, jwt_claim")?;
    let path = format!("{path}.{kind}");
    let name_path = format!("{path}.name");
    let source = match kind {
        "header" => Source::Header(header_name(&operand.name, &name_path)?),
        "cookie" => Source::Cookie(cookie_name(&operand.name, &name_path)?),
        _ => Source::Claim(claim_path(&operand.name, &name_path)?),
    };
    Ok((source, compile_operator(operand, &path)?))
}

fn compile_operator(operand: &wire::Operand, path: &str) -> Result<Operator> {
    let set: [Option<(&'static str, &())>; 6] = [
        operand.exact.as_ref().map(|_| ("exact", &())),
        operand.prefix.as_ref().map(|_| ("prefix", &())),
        operand.present.as_ref().map(|_| ("present", &())),
        operand.in_list.as_ref().map(|_| ("in", &())),
        operand.contains.as_ref().map(|_| ("contains", &())),
        operand.regex.as_ref().map(|_| ("regex", &())),
    ];
    let (op, _) = exactly_one(&set, path, "exact, prefix, present, in, contains, regex")?;
    let bytes = |s: &String| s.as_bytes().to_vec().into_boxed_slice();
    Ok(match op {
        "exact" => Operator::Exact(operand.exact.as_ref().map(bytes).unwrap_or_default()),
        "prefix" => Operator::Prefix(operand.prefix.as_ref().map(bytes).unwrap_or_default()),
        "present" => Operator::Present(operand.present.unwrap_or(true)),
        "contains" => {
            let token = operand.contains.as_deref().unwrap_or_default();
            if token.is_empty() || token.contains([' ', '\t', ',']) {
                return Err(ConfigError::new(
                    format!("{path}.contains"),
                    "want one non-empty token without spaces or commas",
                ));
            }
            Operator::Contains(token.as_bytes().into())
        }
        "in" => {
            let list = operand.in_list.as_deref().unwrap_or_default();
            if list.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.in"),
                    "empty list: the rule could never match",
                ));
            }
            Operator::In(list.iter().map(bytes).collect())
        }
        _ => {
            let pattern = operand.regex.as_deref().unwrap_or_default();
            let anchored = format!("^(?:{pattern})$");
            let re = regex_lite::Regex::new(&anchored).map_err(|e| {
                ConfigError::new(
                    format!("{path}.regex"),
                    format!("invalid regex {pattern:?}: {}", one_line(&e.to_string())),
                )
            })?;
            Operator::Regex(re)
        }
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
