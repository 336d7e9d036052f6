//! Command-line conventions every binary of the project follows: a bad command line or config
//! exits 2 with the message and a pointer to `--help`; any other failure exits 1 with the
//! whole error chain.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// A command-line or config problem (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError(msg.into()).into())
}

/// A flag's value as UTF-8 text.
pub fn text(v: OsString) -> anyhow::Result<String> {
    v.into_string()
        .map_err(|v| UsageError(format!("{v:?} is not valid UTF-8")).into())
}

/// A flag's value as a duration (`500ms`, `10s`, `5m`, …).
pub fn duration(v: OsString) -> anyhow::Result<Duration> {
    crate::parse_duration(&text(v)?).map_err(|e| UsageError(e).into())
}

/// A flag's value parsed as `T`; `what` names the expected form in the error.
pub fn parsed<T: std::str::FromStr>(v: OsString, what: &str) -> anyhow::Result<T> {
    let s = text(v)?;
    s.parse()
        .map_err(|_| UsageError(format!("{s:?} is not a valid {what}")).into())
}

/// Prints `result`'s error the project's way and turns it into the exit code.
pub fn exit(program: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<UsageError>() || e.is::<lexopt::Error>() => {
            eprintln!("{program}: {e}\n\nRun `{program} --help` for usage.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_are_told_apart_from_failures() {
        let e: anyhow::Error = usage::<()>("bad flag").unwrap_err();
        assert!(e.is::<UsageError>());
        assert_eq!(e.to_string(), "bad flag");
        let p: anyhow::Result<u16> = parsed("70000".into(), "port");
        assert_eq!(p.unwrap_err().to_string(), "\"70000\" is not a valid port");
        assert_eq!(duration("2s".into()).unwrap(), Duration::from_secs(2));
        assert!(duration("2 parsecs".into()).unwrap_err().is::<UsageError>());
    }
}
