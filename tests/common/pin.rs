//! Helpers of the issue-3 tests: the sticky bucket recomputed from the documented
//! formula, the pin cookie a response sets, and the decision header.

use std::collections::BTreeMap;

use canary_router::hash::xxh64;

use super::Response;

/// The pin cookie name the tests configure.
pub const PIN: &str = "canary_pin";
/// The decision header the tests configure.
pub const DECISION: &str = "x-canary-decision";
/// `Set-Cookie` attributes of [`pin_cookie_config`], in the documented order.
pub const PIN_ATTRS: &str = "; Max-Age=86400; Path=/; Secure; HttpOnly; SameSite=Lax";

/// `{"name": "canary_pin", "max_age": 86400, "path": "/", ...}`: every attribute
/// written out (the example).
pub fn pin_cookie_config() -> serde_json::Value {
    serde_json::json!({
        "name": PIN, "max_age": 86400, "path": "/",
        "secure": true, "http_only": true, "same_site": "Lax"
    })
}

/// Two subsets v1/v2, keys `x-user-id` then cookie `session_id`, the pin cookie
/// and the decision header.
pub fn pin_config(v1: f64, v2: f64, seed: &str) -> serde_json::Value {
    serde_json::json!({
        "subsets": [ {"name": "v1", "weight": v1}, {"name": "v2", "weight": v2} ],
        "sticky": {
            "keys": [ {"header": "x-user-id"}, {"cookie": "session_id"} ],
            "seed": seed,
            "pin_cookie": pin_cookie_config()
        },
        "decision_header": DECISION
    })
}

/// `xxh64(key, xxh64(seed, 0)) % 10000`, as docs/configuration.md documents it.
pub fn bucket(key: &str, seed: &str) -> u16 {
    let b = xxh64(key.as_bytes(), xxh64(seed.as_bytes(), 0)) % 10_000;
    u16::try_from(b).unwrap()
}

/// The subset owning `bucket` when subsets own consecutive ranges in the order
/// listed; weights in percent.
pub fn subset_of_bucket(bucket: u16, subsets: &[(&str, f64)]) -> String {
    let mut end = 0u32;
    for (name, weight) in subsets {
        end += (weight * 100.0).round() as u32;
        if u32::from(bucket) < end {
            return (*name).to_string();
        }
    }
    panic!("bucket {bucket} beyond the ranges of {subsets:?}");
}

/// Bucket and subset of `key` for v1/v2 with `v1` percent on v1.
pub fn predict(key: &str, seed: &str, v1: f64) -> (u16, String) {
    let b = bucket(key, seed);
    (b, subset_of_bucket(b, &[("v1", v1), ("v2", 100.0 - v1)]))
}

/// 32 lowercase hex characters: the id the filter mints.
pub fn is_minted_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Every `Set-Cookie` value of the response that sets cookie `name`.
pub fn set_cookies_named(r: &Response, name: &str) -> Vec<String> {
    r.header_all("set-cookie")
        .into_iter()
        .filter(|v| v.split_once('=').is_some_and(|(n, _)| n.trim() == name))
        .collect()
}

/// The id of the pin cookie `name` this response sets, if any. Asserts that it
/// is set at most once, that the id is a freshly minted one (32 lowercase hex)
/// and that the header is exactly `<name>=<id><attrs>`.
pub fn new_pin(r: &Response, name: &str, attrs: &str) -> Option<String> {
    let all = set_cookies_named(r, name);
    assert!(
        all.len() <= 1,
        "the pin cookie is set at most once: {:?}",
        r.header_all("set-cookie")
    );
    let v = all.into_iter().next()?;
    let rest = v.strip_prefix(&format!("{name}=")).unwrap_or_else(|| {
        panic!("Set-Cookie {v:?} starts with `{name}=`");
    });
    let id = rest.split(';').next().unwrap().to_string();
    assert!(
        is_minted_id(&id),
        "a new pin is 32 lowercase hex characters: {v:?}"
    );
    assert_eq!(v, format!("{name}={id}{attrs}"), "the exact Set-Cookie");
    Some(id)
}

/// The decision header of a response ("" when absent); asserts it is sent at
/// most once.
pub fn decision_of(r: &Response) -> String {
    let all = r.header_all(DECISION);
    assert!(
        all.len() <= 1,
        "{DECISION} sent {} times: {all:?}",
        all.len()
    );
    all.into_iter().next().unwrap_or_default()
}

/// `subset=v1; reason=random; bucket=77; pin=new` as ordered `(field, value)`
/// pairs. Asserts the `; ` separators and `field=value` shape.
pub fn decision_fields(header: &str) -> Vec<(String, String)> {
    header
        .split("; ")
        .map(|part| {
            let (k, v) = part
                .split_once('=')
                .unwrap_or_else(|| panic!("`{part}` of {header:?} is not field=value"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The fields of a random decision header, checked for shape: returns (subset,
/// bucket). `pin_new` and `shadow` say which suffixes must follow.
pub fn parse_random_decision(header: &str, pin_new: bool, shadow: bool) -> (String, u16) {
    let f = decision_fields(header);
    let mut want_keys = vec!["subset", "reason", "bucket"];
    if pin_new {
        want_keys.push("pin");
    }
    if shadow {
        want_keys.push("mode");
    }
    let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, want_keys, "fields of {header:?}");
    assert_eq!(f[1].1, "random", "{header:?}");
    let b: u16 = f[2]
        .1
        .parse()
        .unwrap_or_else(|_| panic!("bucket of {header:?}"));
    assert!(b < 10_000, "{header:?}");
    let mut rebuilt = format!("subset={}; reason=random; bucket={b}", f[0].1);
    if pin_new {
        rebuilt.push_str("; pin=new");
    }
    if shadow {
        rebuilt.push_str("; mode=shadow");
    }
    assert_eq!(header, rebuilt, "exact format");
    (f[0].1.clone(), b)
}

/// Tally of `(subset, reason)`.
pub type Tally = BTreeMap<(String, String), u64>;

pub fn tally_add(t: &mut Tally, subset: &str, reason: &str) {
    *t.entry((subset.to_string(), reason.to_string()))
        .or_default() += 1;
}

/// `cookie: <name>=<id>`.
pub fn pin_cookie(id: &str) -> String {
    format!("{PIN}={id}")
}
