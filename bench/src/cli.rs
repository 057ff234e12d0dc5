//! Command-line flags: `--name value` or `--name=value`, each with an environment-variable
//! fallback and a default. A flag beats its variable, which beats the default.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The flags given after the scenario name, consumed one by one by the code that uses them.
#[derive(Debug, Default)]
pub struct Flags(BTreeMap<String, String>);

impl Flags {
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut flags = BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}; flags look like --name value");
            };
            let (name, value) = match name.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (name.to_owned(), args.next().with_context(|| format!("--{name} needs a value"))?),
            };
            if flags.insert(name.clone(), value).is_some() {
                bail!("--{name} is given twice");
            }
        }
        Ok(Self(flags))
    }

    /// The value of `--name`, else of the variable `env`, else `default`.
    pub fn take<T>(&mut self, name: &str, env: &str, default: T) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.take_optional(name, env)?.unwrap_or(default))
    }

    /// The value of `--name`, else of the variable `env`, if either is set.
    pub fn take_optional<T>(&mut self, name: &str, env: &str) -> anyhow::Result<Option<T>>
    where
        T: FromStr,
        T::Err: Display,
    {
        let (raw, source) = match self.0.remove(name) {
            Some(raw) => (raw, format!("--{name}")),
            None => match std::env::var(env) {
                Ok(raw) if !raw.trim().is_empty() => (raw, env.to_owned()),
                _ => return Ok(None),
            },
        };
        raw.trim().parse().map(Some).map_err(|e| anyhow::anyhow!("invalid {source} {raw:?}: {e}"))
    }

    /// A count that must be at least one.
    pub fn take_count(&mut self, name: &str, env: &str, default: usize) -> anyhow::Result<usize> {
        let count = self.take(name, env, default)?;
        if count == 0 {
            bail!("--{name} ({env}) must be at least 1");
        }
        Ok(count)
    }

    /// A duration in (possibly fractional) seconds, greater than zero.
    pub fn take_secs(&mut self, name: &str, env: &str, default: f64) -> anyhow::Result<Duration> {
        let secs: f64 = self.take(name, env, default)?;
        if !(secs.is_finite() && secs > 0.0) {
            bail!("--{name} ({env}) must be a positive number of seconds");
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// Fails if a flag was given that nothing took.
    pub fn finish(self) -> anyhow::Result<()> {
        match self.0.keys().next() {
            Some(name) => bail!("unknown flag --{name}; see --help"),
            None => Ok(()),
        }
    }
}

/// Settings every scenario shares.
#[derive(Debug)]
pub struct Common {
    /// How long each measured phase runs.
    pub phase: Duration,
    /// The `parley-api` binary to start, if not the workspace's release build.
    pub server: Option<PathBuf>,
}

impl Common {
    pub fn from_flags(flags: &mut Flags) -> anyhow::Result<Self> {
        Ok(Self {
            phase: flags.take_secs("secs", "PARLEY_BENCH_SECS", 5.0)?,
            server: flags.take_optional("server", "PARLEY_BENCH_SERVER")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> anyhow::Result<Flags> {
        Flags::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_take_both_spellings_and_reject_leftovers() {
        let mut f = flags(&["--secs", "2.5", "--users=7"]).unwrap();
        assert_eq!(f.take_secs("secs", "PARLEY_BENCH_TEST_UNSET_SECS", 5.0).unwrap(), Duration::from_millis(2500));
        assert_eq!(f.take_count("users", "PARLEY_BENCH_TEST_UNSET_USERS", 50).unwrap(), 7);
        assert_eq!(f.take_count("clients", "PARLEY_BENCH_TEST_UNSET_CLIENTS", 3).unwrap(), 3);
        f.finish().unwrap();

        let f = flags(&["--nope", "1"]).unwrap();
        assert!(f.finish().unwrap_err().to_string().contains("--nope"));
        assert!(flags(&["--secs"]).is_err());
        assert!(flags(&["stray"]).is_err());
        assert!(flags(&["--secs", "0"]).unwrap().take_secs("secs", "PARLEY_BENCH_TEST_UNSET_SECS", 5.0).is_err());
    }
}
