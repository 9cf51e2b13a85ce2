//! The `Web { ... }` block of ctrackd.conf into a [`WebConfig`]. The
//! daemon's config has checked the key names and value kinds already
//! (its table of known keys); this reads the values and their ranges.

use super::WebConfig;
use crate::conf::{Checker, ConfigError, Item, path, single, uint};

impl WebConfig {
    /// Reads the `Web` block; errors name the file, line and key.
    pub fn from_block(c: &Checker, it: &Item) -> Result<WebConfig, ConfigError> {
        let mut w = WebConfig::default();
        for x in it.items() {
            match x.key.as_str() {
                "Address" => {
                    let v = single(c, x)?;
                    w.address = v.parse().map_err(|_| {
                        c.err(
                            x,
                            format!("bad value `{v}' for `Address': an IPv4 or IPv6 address"),
                        )
                    })?;
                }
                "Port" => w.port = uint(c, x, 1, 65535)? as u16,
                "TokenFile" => w.token_file = Some(path(c, x)?),
                "ReadTokenFile" => w.read_token_file = Some(path(c, x)?),
                "ServerName" => w.server_names.push(single(c, x)?.to_string()),
                "CounterInterval" => {
                    w.counter_interval = std::time::Duration::from_secs(uint(c, x, 0, 3600)?)
                }
                "DHCPLeases" => w.dhcp_leases = Some(path(c, x)?),
                "Hosts" => w.hosts = Some(path(c, x)?),
                "MaxConnections" => w.limits.max_conns = uint(c, x, 1, 100)? as usize,
                "Workers" => w.limits.workers = uint(c, x, 1, 64)? as usize,
                _ => {}
            }
        }
        Ok(w)
    }
}
