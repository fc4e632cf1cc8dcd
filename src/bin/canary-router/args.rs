//! Command-line parsing, by hand: three subcommands do not justify a dependency.

use std::fmt;

pub const USAGE: &str = "\
usage:
  canary-router check CONFIG.json
      validate a plugin configuration; prints the filter's own error line
  canary-router explain --config CONFIG.json [-H 'name: value']... [-b 'a=1; b=2']...
                        [--claims '{\"sub\":\"alice\"}'] [--json]
      the decision the filter makes for that request, and why
  canary-router simulate --config CONFIG.json [--to OTHER.json] [--keys N] [--json]
      share of N synthetic user keys per subset (default 100000), and how many
      keys move to another subset under OTHER.json
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
        headers: Vec<(String, String)>,
        cookies: Vec<String>,
        claims: Option<String>,
        json: bool,
    },
    Simulate {
        config: String,
        to: Option<String>,
        keys: u64,
        json: bool,
    },
    Help,
}

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, UsageError> {
    args.next()
        .ok_or_else(|| usage(format!("{flag} needs a value")))
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let command = args.next().ok_or_else(|| usage("no command given"))?;
    match command.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "check" => {
            let config = args
                .next()
                .ok_or_else(|| usage("check needs a CONFIG file"))?;
            match args.next() {
                None => Ok(Command::Check { config }),
                Some(extra) => Err(usage(format!(
                    "check takes one CONFIG file, got also {extra:?}"
                ))),
            }
        }
        "explain" => {
            let (mut config, mut headers, mut cookies, mut claims, mut json) =
                (None, Vec::new(), Vec::new(), None, false);
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--config" | "-c" => config = Some(value(&mut args, &arg)?),
                    "-H" | "--header" => {
                        let raw = value(&mut args, &arg)?;
                        let (name, v) = raw
                            .split_once(':')
                            .ok_or_else(|| usage(format!("-H wants 'name: value', got {raw:?}")))?;
                        headers.push((name.trim().to_ascii_lowercase(), v.trim_start().to_owned()));
                    }
                    "-b" | "--cookie" => cookies.push(value(&mut args, &arg)?),
                    "--claims" => claims = Some(value(&mut args, &arg)?),
                    "--json" => json = true,
                    other => return Err(usage(format!("explain: unknown argument {other:?}"))),
                }
            }
            let config = config.ok_or_else(|| usage("explain needs --config CONFIG.json"))?;
            Ok(Command::Explain {
                config,
                headers,
                cookies,
                claims,
                json,
            })
        }
        "simulate" => {
            let (mut config, mut to, mut keys, mut json) = (None, None, 100_000u64, false);
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--config" | "-c" => config = Some(value(&mut args, &arg)?),
                    "--to" => to = Some(value(&mut args, &arg)?),
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
                    other => return Err(usage(format!("simulate: unknown argument {other:?}"))),
                }
            }
            let config = config.ok_or_else(|| usage("simulate needs --config CONFIG.json"))?;
            Ok(Command::Simulate {
                config,
                to,
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
        parse(args.iter().map(|s| s.to_string()))
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
                headers: vec![("x-user-id".into(), "42".into())],
                cookies: vec!["x=1".into()],
                claims: Some("{}".into()),
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
                keys: 100_000,
                json: false
            }
        );
        assert!(parse_strs(&["simulate", "--config", "a.json", "--keys", "x"]).is_err());
    }
}
