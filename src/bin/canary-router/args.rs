//! Command-line parsing, by hand: three subcommands do not justify a dependency.

use std::ffi::OsString;
use std::fmt;

pub const USAGE: &str = "\
usage:
  canary-router check [--config] CONFIG.json
      validate a plugin configuration; prints the filter's own error line
  canary-router explain [--config] CONFIG.json [-X METHOD] [--path '/p?q=1'] [--host HOST]
                        [-H 'name: value']... [-b 'a=1; b=2']...
                        [--claims '{\"sub\":\"alice\"}'] [--baggage 'k=v,...'] [--brake-tripped] [--json]
      the decision the filter makes for that request (GET / unless told), why,
      and the goals it would count toward, and the baggage the next hop gets
  canary-router simulate [--config] CONFIG.json [--to OTHER.json] [--keys N] [--json]
      share of N synthetic user keys per subset (default 100000), and how many
      keys move to another subset under OTHER.json
  canary-router simulate [--config] CONFIG.json --with SERVICE.json [--baggage] [--keys N] [--json]
      the same users through two services: how many are on the canary of both;
      with --baggage (or a baggage sticky key in SERVICE.json) the second reads
      the first's bucket
CONFIG.json may be given with --config (-c) or alone; - reads standard input.
exit codes: 0 ok, 1 invalid configuration, 2 usage error";

#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "canary-router: {}\n{USAGE}", self.0)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Check {
        config: String,
    },
    Explain {
        config: String,
        /// `:method`, `:path` and (when given) `:authority`, as Envoy lists them.
        request_line: RequestLine,
        headers: Vec<(String, String)>,
        cookies: Vec<String>,
        claims: Option<String>,
        /// Decide as if the brake had tripped (the proxy's view after a trip).
        brake_tripped: bool,
        json: bool,
    },
    Simulate {
        config: String,
        to: Option<String>,
        /// Another service's configuration, for `--with`.
        with: Option<String>,
        /// The second service reads the first's bucket from baggage.
        baggage: bool,
        keys: u64,
        json: bool,
    },
    Help,
}

/// The pseudo-headers of the explained request: `GET /` unless told, and no
/// `:authority` unless `--host` gives one.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub path: String,
    pub authority: Option<String>,
}

impl Default for RequestLine {
    fn default() -> Self {
        RequestLine {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            authority: None,
        }
    }
}

impl RequestLine {
    /// The pseudo-headers, first in the list as Envoy hands them to a filter.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(3);
        if let Some(authority) = &self.authority {
            out.push((":authority".to_owned(), authority.clone()));
        }
        out.push((":path".to_owned(), self.path.clone()));
        out.push((":method".to_owned(), self.method.clone()));
        out
    }
}

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, UsageError> {
    args.next()
        .ok_or_else(|| usage(format!("{flag} needs a value")))
}

/// The arguments as text: one that is not UTF-8 is a usage error that names
/// it (escaped), never a panic.
fn utf8(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, UsageError> {
    args.into_iter()
        .map(|arg| {
            arg.into_string()
                .map_err(|raw| usage(format!("argument {raw:?} is not UTF-8")))
        })
        .collect()
}

/// `-H 'name: value'` as Envoy stores it: the name lowercased, the value with
/// the spaces and tabs around it removed, and only those (Envoy keeps any other
/// blank, such as U+00A0, as part of the value).
fn header(raw: &str) -> Result<(String, String), UsageError> {
    const BLANKS: [char; 2] = [' ', '\t'];
    if raw.trim_start_matches(BLANKS).starts_with(':') {
        return Err(usage(format!(
            "-H takes regular headers, got {raw:?}; give the pseudo-headers with -X METHOD, \
             --path PATH and --host HOST"
        )));
    }
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| usage(format!("-H wants 'name: value', got {raw:?}")))?;
    let name = name.trim_matches(BLANKS);
    if name.is_empty() {
        return Err(usage(format!("-H wants 'name: value', got {raw:?}")));
    }
    Ok((
        name.to_ascii_lowercase(),
        value.trim_matches(BLANKS).to_owned(),
    ))
}

/// `-X`: an HTTP method token, as Envoy accepts it (case kept: `get` is not `GET`).
fn method(raw: String) -> Result<String, UsageError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if raw.is_empty() || !raw.chars().all(token) {
        return Err(usage(format!(
            "-X wants a method such as POST, got {raw:?}"
        )));
    }
    Ok(raw)
}

/// `--path`: the request target as `:path` carries it, query included.
fn request_path(raw: String) -> Result<String, UsageError> {
    if !raw.starts_with('/') || raw.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(usage(format!(
            "--path wants a path starting with / (query included, no spaces), got {raw:?}"
        )));
    }
    Ok(raw)
}

/// `--host`: `:authority`, port included when given.
fn host(raw: String) -> Result<String, UsageError> {
    if raw.is_empty()
        || raw
            .chars()
            .any(|c| c.is_ascii_control() || c == ' ' || c == '/')
    {
        return Err(usage(format!(
            "--host wants a host such as shop.example.com:8443, got {raw:?}"
        )));
    }
    Ok(raw)
}

/// The configuration file, from `--config FILE` (`-c FILE`) or given alone;
/// once only.
fn set_config(config: &mut Option<String>, path: String, command: &str) -> Result<(), UsageError> {
    match config {
        Some(first) => Err(usage(format!(
            "{command} takes one CONFIG file, got {first:?} and {path:?}"
        ))),
        None => {
            *config = Some(path);
            Ok(())
        }
    }
}

/// An argument that is not a flag: `-` (standard input) or a path.
fn is_operand(arg: &str) -> bool {
    arg == "-" || !arg.starts_with('-')
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut args = utf8(args)?.into_iter();
    let command = args.next().ok_or_else(|| usage("no command given"))?;
    match command.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "check" => {
            let mut config = None;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--config" | "-c" => {
                        let path = value(&mut args, &arg)?;
                        set_config(&mut config, path, "check")?;
                    }
                    _ if is_operand(&arg) => set_config(&mut config, arg, "check")?,
                    other => return Err(usage(format!("check: unknown argument {other:?}"))),
                }
            }
            let config = config.ok_or_else(|| usage("check needs a CONFIG file"))?;
            Ok(Command::Check { config })
        }
        "explain" => {
            let (mut config, mut headers, mut cookies, mut claims, mut json) =
                (None, Vec::new(), Vec::new(), None, false);
            let mut brake_tripped = false;
            let mut request_line = RequestLine::default();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--config" | "-c" => {
                        let path = value(&mut args, &arg)?;
                        set_config(&mut config, path, "explain")?;
                    }
                    "-X" | "--method" => request_line.method = method(value(&mut args, &arg)?)?,
                    "--path" => request_line.path = request_path(value(&mut args, &arg)?)?,
                    "--host" => request_line.authority = Some(host(value(&mut args, &arg)?)?),
                    "-H" | "--header" => headers.push(header(&value(&mut args, &arg)?)?),
                    "-b" | "--cookie" => cookies.push(value(&mut args, &arg)?),
                    "--claims" => claims = Some(value(&mut args, &arg)?),
                    "--baggage" => headers.push(("baggage".to_owned(), value(&mut args, &arg)?)),
                    "--brake-tripped" => brake_tripped = true,
                    "--json" => json = true,
                    _ if is_operand(&arg) => set_config(&mut config, arg, "explain")?,
                    other => return Err(usage(format!("explain: unknown argument {other:?}"))),
                }
            }
            let config = config.ok_or_else(|| usage("explain needs --config CONFIG.json"))?;
            Ok(Command::Explain {
                config,
                request_line,
                headers,
                cookies,
                claims,
                brake_tripped,
                json,
            })
        }
        "simulate" => {
            let (mut config, mut to, mut keys, mut json) = (None, None, 100_000u64, false);
            let (mut with, mut baggage) = (None, false);
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--config" | "-c" => {
                        let path = value(&mut args, &arg)?;
                        set_config(&mut config, path, "simulate")?;
                    }
                    "--to" => to = Some(value(&mut args, &arg)?),
                    "--with" => with = Some(value(&mut args, &arg)?),
                    "--baggage" => baggage = true,
                    "--keys" => {
                        let raw = value(&mut args, &arg)?;
                        keys = raw
                            .parse()
                            .ok()
                            .filter(|n| (1..=100_000_000).contains(n))
                            .ok_or_else(|| {
                                usage(format!("--keys wants 1 to 100000000, got {raw:?}"))
                            })?;
                    }
                    "--json" => json = true,
                    _ if is_operand(&arg) => set_config(&mut config, arg, "simulate")?,
                    other => return Err(usage(format!("simulate: unknown argument {other:?}"))),
                }
            }
            let config = config.ok_or_else(|| usage("simulate needs --config CONFIG.json"))?;
            if to.is_some() && with.is_some() {
                return Err(usage(
                    "simulate: --to and --with answer different questions; give one",
                ));
            }
            if baggage && with.is_none() {
                return Err(usage("simulate: --baggage needs --with SERVICE.json"));
            }
            Ok(Command::Simulate {
                config,
                to,
                with,
                baggage,
                keys,
                json,
            })
        }
        other => Err(usage(format!("unknown command {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn explain_collects_headers_cookies_and_claims() {
        let c = parse_strs(&[
            "explain",
            "-c",
            "a.json",
            "-H",
            "X-User-Id:  42",
            "-b",
            "x=1",
            "--claims",
            "{}",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            c,
            Command::Explain {
                config: "a.json".into(),
                request_line: RequestLine::default(),
                headers: vec![("x-user-id".into(), "42".into())],
                cookies: vec!["x=1".into()],
                claims: Some("{}".into()),
                brake_tripped: false,
                json: true,
            }
        );
    }

    #[test]
    fn simulate_defaults_to_100000_keys() {
        assert_eq!(
            parse_strs(&["simulate", "--config", "a.json"]).unwrap(),
            Command::Simulate {
                config: "a.json".into(),
                to: None,
                with: None,
                baggage: false,
                keys: 100_000,
                json: false
            }
        );
        assert!(matches!(
            parse_strs(&["simulate", "a.json", "--with", "b.json", "--baggage"]).unwrap(),
            Command::Simulate { with: Some(w), baggage: true, .. } if w == "b.json"
        ));
        assert!(parse_strs(&["simulate", "a.json", "--with", "b", "--to", "c"]).is_err());
        assert!(parse_strs(&["simulate", "--config", "a.json", "--keys", "x"]).is_err());
    }

    #[test]
    fn header_values_are_trimmed_as_envoy_trims_them() {
        let one = |raw: &str| match parse_strs(&["explain", "a.json", "-H", raw]).unwrap() {
            Command::Explain { headers, .. } => headers,
            other => panic!("{other:?}"),
        };
        assert_eq!(one("X-A: \t v \t"), [("x-a".into(), "v".into())]);
        assert_eq!(one("x-a:v"), [("x-a".into(), "v".into())]);
        assert_eq!(one("x-a:"), [("x-a".into(), String::new())]);
        assert_eq!(one("x-a: a b "), [("x-a".into(), "a b".into())]);
        // Other blanks are part of the value, as in Envoy.
        assert_eq!(
            one("x-a: \u{a0}v\u{3000} "),
            [("x-a".into(), "\u{a0}v\u{3000}".into())]
        );
        assert_eq!(one("x-a: a:b"), [("x-a".into(), "a:b".into())]);
        assert!(parse_strs(&["explain", "a.json", "-H", " : v"]).is_err());
    }

    #[test]
    fn the_request_line_is_get_slash_unless_told() {
        let line = |args: &[&str]| {
            let mut all = vec!["explain", "a.json"];
            all.extend_from_slice(args);
            match parse_strs(&all) {
                Ok(Command::Explain { request_line, .. }) => Ok(request_line),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.0),
            }
        };
        assert_eq!(
            line(&[]).unwrap().headers(),
            [
                (":path".to_owned(), "/".to_owned()),
                (":method".to_owned(), "GET".to_owned())
            ]
        );
        let l = line(&[
            "-X",
            "POST",
            "--path",
            "/checkout?cart=1",
            "--host",
            "shop:8443",
        ])
        .unwrap();
        assert_eq!(
            l.headers(),
            [
                (":authority".to_owned(), "shop:8443".to_owned()),
                (":path".to_owned(), "/checkout?cart=1".to_owned()),
                (":method".to_owned(), "POST".to_owned())
            ]
        );
        assert!(line(&["-X", "PO ST"])
            .unwrap_err()
            .contains("-X wants a method"));
        assert!(line(&["--path", "checkout"])
            .unwrap_err()
            .contains("--path wants"));
        assert!(line(&["--host", ""]).unwrap_err().contains("--host wants"));
        assert!(line(&["-H", ":path: /x"])
            .unwrap_err()
            .contains("--path PATH"));
    }

    #[test]
    fn the_config_is_taken_with_or_without_the_flag() {
        for args in [
            &["check", "a.json"][..],
            &["check", "--config", "a.json"],
            &["check", "-c", "a.json"],
        ] {
            assert_eq!(
                parse_strs(args).unwrap(),
                Command::Check {
                    config: "a.json".into()
                },
                "{args:?}"
            );
        }
        assert_eq!(
            parse_strs(&["check", "-"]).unwrap(),
            Command::Check { config: "-".into() }
        );
        for args in [
            &["explain", "a.json"][..],
            &["explain", "--config", "a.json"],
        ] {
            assert!(
                matches!(parse_strs(args), Ok(Command::Explain { config, .. }) if config == "a.json")
            );
        }
        assert!(matches!(
            parse_strs(&["simulate", "a.json", "--keys", "5"]),
            Ok(Command::Simulate { config, keys: 5, .. }) if config == "a.json"
        ));
        for args in [
            &["check", "a.json", "b.json"][..],
            &["check", "--config", "a.json", "b.json"],
            &["explain", "a.json", "-c", "b.json"],
            &["check", "--frob"],
        ] {
            assert!(parse_strs(args).is_err(), "{args:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_non_utf8_argument_is_a_usage_error_naming_it() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from("explain"),
            OsString::from("a.json"),
            OsString::from("-H"),
            OsString::from_vec(b"x-a: \xff".to_vec()),
        ];
        let e = parse(args).unwrap_err();
        assert!(e.0.contains("\\xFF"), "{}", e.0);
        assert!(e.0.contains("not UTF-8"), "{}", e.0);
    }
}
