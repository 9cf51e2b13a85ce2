//! The `WAN { ... }` block of ctrackd's config, as a plain struct
//! ([`WanConfig::from_block`] reads the block the daemon's config grammar
//! parsed):
//!
//! ```text
//! WAN {
//!     Interface pppoe-wan      # one line per interface, several allowed
//!     Interface wan2
//!     Debounce 1000            # ms to wait for the changes to settle
//!     Flush stale              # stale (default) | all-wan | all
//! }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::conf::{Checker, ConfigError, Item, single};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Default debounce: long enough to see a reconnect's add and delete as
/// one change, short enough for keepalives to recover within 2 s.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(1000);
/// Default cap on the wait of an interface that keeps changing.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
/// Default wait before retrying a flush that failed.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(5);
/// Largest accepted debounce.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(60);

/// Which flows a WAN change deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FlushMode {
    /// Only flows using an address the WAN no longer has (the default).
    #[default]
    Stale,
    /// Also every flow through the watched WAN interfaces: any flow with
    /// one of their old or current addresses in either tuple.
    AllWan,
    /// The whole table.
    All,
}

impl FlushMode {
    /// The config word: `stale`, `all-wan` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushMode::Stale => "stale",
            FlushMode::AllWan => "all-wan",
            FlushMode::All => "all",
        }
    }
}

impl fmt::Display for FlushMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FlushMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "stale" => Ok(FlushMode::Stale),
            "all-wan" => Ok(FlushMode::AllWan),
            "all" => Ok(FlushMode::All),
            _ => Err(format!(
                "invalid Flush value '{s}' (expected stale, all-wan or all)"
            )),
        }
    }
}

/// Settings of the WAN watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WanConfig {
    /// Device names to watch (`pppoe-wan`, `eth1`, ...), not OpenWrt's
    /// logical names.
    pub interfaces: Vec<String>,
    /// Quiet time after the last change before flushing.
    pub debounce: Duration,
    /// The longest a flush waits after the first change of a burst, even
    /// if changes keep coming.
    pub max_delay: Duration,
    /// Wait before retrying a flush that failed.
    pub retry: Duration,
    /// What to delete.
    pub flush: FlushMode,
}

impl Default for WanConfig {
    fn default() -> Self {
        WanConfig {
            interfaces: Vec::new(),
            debounce: DEFAULT_DEBOUNCE,
            max_delay: DEFAULT_MAX_DELAY,
            retry: DEFAULT_RETRY,
            flush: FlushMode::Stale,
        }
    }
}

/// Checks an interface name the way the kernel would accept it.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > IFNAME_MAX
        || name == "."
        || name == ".."
        || name.bytes().any(|b| b == b'/' || b == b':' || b <= b' ')
    {
        return Err(format!(
            "invalid interface name '{name}' (1 to {IFNAME_MAX} characters, no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

impl WanConfig {
    /// Applies one `Key value` line of the block (keys case-insensitive,
    /// as conntrackd's). Errors name the key and say what is expected.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        match key.to_ascii_lowercase().as_str() {
            "interface" => {
                check_ifname(value)?;
                if !self.interfaces.iter().any(|i| i == value) {
                    self.interfaces.push(value.to_string());
                }
            }
            "debounce" => {
                let ms: u64 = value.parse().map_err(|_| {
                    format!("invalid Debounce '{value}' (milliseconds, 0 to 60000)")
                })?;
                let d = Duration::from_millis(ms);
                if d > MAX_DEBOUNCE {
                    return Err(format!(
                        "invalid Debounce '{value}' (milliseconds, 0 to 60000)"
                    ));
                }
                self.debounce = d;
                self.max_delay = self.max_delay.max(d);
            }
            "flush" => self.flush = value.parse()?,
            _ => return Err(format!("unknown key '{key}' in WAN block")),
        }
        Ok(())
    }

    /// Checks the whole block once it is read.
    pub fn validate(&self) -> Result<(), String> {
        if self.interfaces.is_empty() {
            return Err("WAN block without an Interface".into());
        }
        for i in &self.interfaces {
            check_ifname(i)?;
        }
        if self.debounce > MAX_DEBOUNCE {
            return Err("Debounce above 60000 ms".into());
        }
        Ok(())
    }

    /// Reads the `WAN` block: each `Key value` through [`WanConfig::set`],
    /// then [`WanConfig::validate`]; errors name the file, line and key.
    pub fn from_block(c: &Checker, it: &Item) -> Result<WanConfig, ConfigError> {
        let mut w = WanConfig::default();
        for x in it.items() {
            let v = single(c, x)?;
            w.set(&x.key, v).map_err(|e| c.err(x, e))?;
        }
        w.validate().map_err(|e| c.err(it, e))?;
        Ok(w)
    }

    /// True when `name` is one of the watched interfaces.
    pub fn watches(&self, name: &str) -> bool {
        self.interfaces.iter().any(|i| i == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = WanConfig::default();
        assert_eq!(c.debounce, Duration::from_millis(1000));
        assert_eq!(c.flush, FlushMode::Stale);
        assert!(c.validate().is_err(), "no interface");
    }

    #[test]
    fn keys_and_errors() {
        let mut c = WanConfig::default();
        c.set("Interface", "pppoe-wan").unwrap();
        c.set("interface", "wan2").unwrap();
        c.set("INTERFACE", "wan2").unwrap();
        c.set("Debounce", "250").unwrap();
        c.set("Flush", "all-wan").unwrap();
        assert_eq!(c.interfaces, ["pppoe-wan", "wan2"]);
        assert_eq!(c.debounce, Duration::from_millis(250));
        assert_eq!(c.flush, FlushMode::AllWan);
        assert!(c.validate().is_ok());
        assert!(c.watches("wan2") && !c.watches("lan"));
        for (k, v, want) in [
            ("Interface", "", "invalid interface name"),
            ("Interface", "a-very-long-name-x", "invalid interface name"),
            ("Interface", "eth0:1", "invalid interface name"),
            ("Debounce", "1s", "invalid Debounce '1s'"),
            ("Debounce", "60001", "invalid Debounce"),
            ("Debounce", "-1", "invalid Debounce"),
            ("Flush", "some", "invalid Flush value 'some'"),
            ("Flash", "all", "unknown key 'Flash'"),
        ] {
            let e = c.set(k, v).unwrap_err();
            assert!(e.contains(want), "{k} {v}: {e}");
        }
        for m in [FlushMode::Stale, FlushMode::AllWan, FlushMode::All] {
            assert_eq!(m.as_str().parse::<FlushMode>().unwrap(), m);
        }
        assert_eq!("ALL".parse::<FlushMode>().unwrap(), FlushMode::All);
    }
}
