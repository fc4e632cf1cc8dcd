//! Over HTTP/2 (h2c, prior knowledge, with curl as the client): a cookie split
//! over several `cookie` header fields, as HTTP/2 clients send them, is read as
//! one cookie header; a client-sent routing header is still replaced.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::*;

/// `curl --http2-prior-knowledge` GET with the headers; returns the response
/// headers as lowercase `name: value` lines.
fn h2_get(envoy: &Envoy, headers: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "--http2-prior-knowledge",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("http://{}/", envoy.listener_addr()));
    let out = cmd.output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.starts_with("http/2 200"), "{text}");
    text.lines().map(|l| l.trim().to_owned()).collect()
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[test]
fn split_cookies_and_spoofed_headers_over_http2() {
    let mut config = demo_config();
    config["subsets"] =
        serde_json::json!([{"name": "v1", "weight": 100}, {"name": "v2", "weight": 0}]);
    let envoy = Envoy::start(&config.to_string(), Opts::default().without_early_strip());

    // The beta rule's cookie in the second of three cookie fields.
    let lines = h2_get(
        &envoy,
        &["cookie: theme=dark", "cookie: beta=true", "cookie: lang=en"],
    );
    assert_eq!(header(&lines, "x-served-by"), Some("v2"), "{lines:?}");
    assert_eq!(
        header(&lines, "x-canary-decision"),
        Some("subset=v2; reason=rule; rule=beta")
    );

    // The sticky cookie among others, split: hashed like over HTTP/1.1.
    let lines = h2_get(&envoy, &["cookie: theme=dark", "cookie: session_id=abc123"]);
    assert_eq!(header(&lines, "x-served-by"), Some("v1"));
    let decision = header(&lines, "x-canary-decision").unwrap();
    assert!(
        decision.starts_with("subset=v1; reason=hash; key=cookie:session_id; bucket="),
        "{decision}"
    );

    // First occurrence wins across fields.
    let lines = h2_get(
        &envoy,
        &["cookie: beta=false", "cookie: beta=true", "x-user-id: u1"],
    );
    assert_eq!(header(&lines, "x-served-by"), Some("v1"));

    // A spoofed routing header over HTTP/2 is replaced too.
    let lines = h2_get(&envoy, &["x-canary-subset: v2", "x-user-id: mallory"]);
    assert_eq!(header(&lines, "x-served-by"), Some("v1"));
    assert_eq!(header(&lines, "x-seen-subset"), Some("v1"));
}
