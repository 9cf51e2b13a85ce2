//! Connection label names, from xtables' connlabel.conf (`<bit> <name>`).

/// Where conntrack and iptables read label names.
pub const CONNLABEL_CONF: &str = "/etc/xtables/connlabel.conf";

/// Bit number to name mapping of connection labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelMap {
    names: Vec<Option<String>>,
}

impl LabelMap {
    /// Parses connlabel.conf text. Lines are `<bit> <name>`; `#` starts a
    /// comment; bits at or above 1024 and duplicate names are skipped, as
    /// libnetfilter_conntrack does.
    pub fn parse(text: &str) -> LabelMap {
        let mut names: Vec<Option<String>> = Vec::new();
        for line in text.lines() {
            let line = line.trim_start();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let digits_end = line
                .find(|c: char| !c.is_ascii_digit() && c != 'x' && c != 'X')
                .unwrap_or(line.len());
            let (num, rest) = line.split_at(digits_end);
            let Some(bit) = parse_c_ulong(num).filter(|&b| b < 1024) else {
                continue;
            };
            let name = rest.trim();
            if name.is_empty() || names.iter().flatten().any(|n| n == name) {
                continue;
            }
            let bit = bit as usize;
            if names.len() <= bit {
                names.resize(bit + 1, None);
            }
            names[bit] = Some(name.to_string());
        }
        LabelMap { names }
    }

    /// Loads the map of a connlabel.conf file ([`CONNLABEL_CONF`], or the
    /// one `--labelmap` names). An error (a missing file) means, as in
    /// conntrack, that labels are not printed and names are unknown.
    pub fn load(path: &str) -> std::io::Result<LabelMap> {
        std::fs::read_to_string(path).map(|t| LabelMap::parse(&t))
    }

    /// The name of a bit, if it has one.
    pub fn name(&self, bit: usize) -> Option<&str> {
        self.names.get(bit).and_then(|n| n.as_deref())
    }

    /// The bit of a name.
    pub fn bit(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }
}

/// Parses an unsigned number as C's `strtoul(s, _, 0)`: `0x` hex, leading
/// `0` octal, else decimal. Rejects empty input and trailing garbage.
pub fn parse_c_ulong(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connlabel_conf() {
        let m = LabelMap::parse("# comment\n0 eth0-in\n1\tvpn \n 5 vpn\n2000 big\nx bad\n");
        assert_eq!(m.name(0), Some("eth0-in"));
        assert_eq!(m.name(1), Some("vpn"));
        assert_eq!(m.name(5), None);
        assert_eq!(m.bit("vpn"), Some(1));
        assert_eq!(m.bit("big"), None);
    }

    #[test]
    fn c_numbers() {
        assert_eq!(parse_c_ulong("0x10"), Some(16));
        assert_eq!(parse_c_ulong("010"), Some(8));
        assert_eq!(parse_c_ulong("10"), Some(10));
        assert_eq!(parse_c_ulong("0"), Some(0));
        assert_eq!(parse_c_ulong("1a"), None);
        assert_eq!(parse_c_ulong(""), None);
    }
}
