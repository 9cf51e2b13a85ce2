//! The system's protocol names (/etc/protocols), as conntrack looks them
//! up: for `-p NAME` and the text output of protocols the kernel has no
//! module for (the CLI), and for `Protocol NAME` in the daemon's Filter.

/// The protocol number of `name` (or one of its aliases), if the file
/// lists it.
pub fn number(name: &str) -> Option<u8> {
    let text = std::fs::read_to_string("/etc/protocols").ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(pname), Some(num)) = (words.next(), words.next()) else {
            continue;
        };
        if pname == name || words.any(|alias| alias == name) {
            return num.parse().ok();
        }
    }
    None
}

/// The name the file gives protocol `num`.
pub fn name(num: u8) -> Option<String> {
    let text = std::fs::read_to_string("/etc/protocols").ok()?;
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let name = words.next()?;
        (words.next()?.parse::<u8>().ok()? == num).then(|| name.to_string())
    })
}
