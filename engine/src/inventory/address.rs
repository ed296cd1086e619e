//! Host names as written in inventories: `host:port` shorthands, bracketed
//! IPv6 addresses, and `web[01:50].example.org` ranges (Ansible's
//! `parse_address` and `expand_hostname_range`). Used by every static source.

/// Splits `host:port`, `[v6addr]:port`, or a bare IPv6 address. Returns the
/// host and the port, if one was given. With `allow_ranges`, brackets holding
/// a range (`web[1:3]:22`) are kept in the host part for later expansion.
pub fn parse_address(s: &str, allow_ranges: bool) -> Result<(String, Option<u16>), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty host name".into());
    }
    // `[2001:db8::1]` or `[2001:db8::1]:22`
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(close) = rest.find(']') {
            let inside = &rest[..close];
            if inside.matches(':').count() >= 2 {
                let after = &rest[close + 1..];
                if after.is_empty() {
                    return Ok((inside.to_string(), None));
                }
                return match after.strip_prefix(':') {
                    Some(p) => Ok((inside.to_string(), Some(parse_port(p)?))),
                    None => Err(format!("unexpected text '{after}' after IPv6 address")),
                };
            }
        }
    }
    // Colons outside brackets separate the port (or belong to an IPv6 address).
    let mut depth = 0i32;
    let mut colons = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => colons.push(i),
            _ => {}
        }
    }
    if !allow_ranges && s.contains('[') {
        return Err("host ranges are not allowed here".into());
    }
    match colons.len() {
        0 => Ok((s.to_string(), None)),
        1 => {
            let (host, port) = (&s[..colons[0]], &s[colons[0] + 1..]);
            if host.is_empty() {
                return Err("missing host name before ':'".into());
            }
            if port.is_empty() {
                return Err(
                    "ending in ':' is not allowed, this character is reserved to provide a port"
                        .into(),
                );
            }
            Ok((host.to_string(), Some(parse_port(port)?)))
        }
        // More than one colon: an unbracketed IPv6 address, which has no port.
        _ => Ok((s.to_string(), None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>().map_err(|_| format!("invalid port '{p}'"))
}

/// Expands the first `[beg:end]` or `[beg:end:step]` range in `pattern`, then
/// the rest recursively. Numeric ranges with a leading zero are zero-padded to
/// the width of `beg`; single letters give alphabetic ranges.
pub fn expand_host_pattern(pattern: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (pattern.find('['), pattern.find(']')) else {
        return Ok(vec![pattern.to_string()]);
    };
    if close < open || !pattern[open..close].contains(':') {
        return Ok(vec![pattern.to_string()]);
    }
    let (head, inside, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let parts: Vec<&str> = inside.split(':').collect();
    let (beg, end, step) = match parts.as_slice() {
        [b, e] => (*b, *e, "1"),
        [b, e, s] => (*b, *e, *s),
        _ => {
            return Err(format!(
                "host range '[{inside}]' must be [start:end] or [start:end:step]"
            ))
        }
    };
    let beg = if beg.is_empty() { "0" } else { beg };
    if end.is_empty() {
        return Err(format!("host range '[{inside}]' must specify an end value"));
    }
    let step: usize = match step.parse() {
        Ok(s) if s > 0 => s,
        _ => {
            return Err(format!(
                "host range step '{step}' must be a positive integer"
            ))
        }
    };
    let letters = |s: &str| s.len() == 1 && s.chars().all(|c| c.is_ascii_alphabetic());
    let items: Vec<String> = if letters(beg) && letters(end) {
        // Python's string.ascii_letters order: a-z then A-Z.
        const ASCII: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let (b, e) = (ASCII.find(beg).unwrap(), ASCII.find(end).unwrap());
        if b > e {
            return Err(format!("host range '[{inside}]' must have begin <= end"));
        }
        ASCII[b..=e]
            .chars()
            .step_by(step)
            .map(String::from)
            .collect()
    } else {
        let width = if beg.len() > 1 && beg.starts_with('0') {
            if beg.len() != end.len() {
                return Err(format!(
                    "host range '[{inside}]' must use equal-length begin and end when zero-padded"
                ));
            }
            beg.len()
        } else {
            0
        };
        let (b, e) = match (beg.parse::<u64>(), end.parse::<u64>()) {
            (Ok(b), Ok(e)) => (b, e),
            _ => {
                return Err(format!(
                    "host range '[{inside}]' is neither numeric nor a single-letter range"
                ))
            }
        };
        if b > e {
            return Err(format!("host range '[{inside}]' must have begin <= end"));
        }
        if (e - b) / step as u64 > MAX_EXPANSION as u64 {
            return Err(format!("host range '[{inside}]' is too large"));
        }
        (b..=e)
            .step_by(step)
            .map(|n| format!("{n:0width$}"))
            .collect()
    };
    // `head` and each item hold no range, so the names are the product of
    // the items and the tail's own expansion, made once. The product is
    // bounded like one range is: `h[0:999][0:999][0:999]` would otherwise
    // ask for a billion names, built in memory before anything else runs.
    let rest = expand_host_pattern(tail)?;
    let total = items.len().saturating_mul(rest.len());
    if total > MAX_EXPANSION {
        return Err(format!(
            "host pattern '{pattern}' expands to {total} names, more than the limit of {MAX_EXPANSION}"
        ));
    }
    // The names' text is bounded too: a long pattern with a few small
    // ranges stays under the count yet asks for gigabytes.
    let rest_bytes: usize = rest.iter().map(String::len).sum();
    let item_bytes: usize = items.iter().map(String::len).sum();
    let bytes = total
        .saturating_mul(head.len())
        .saturating_add(item_bytes.saturating_mul(rest.len()))
        .saturating_add(rest_bytes.saturating_mul(items.len()));
    if bytes > MAX_EXPANSION_BYTES {
        return Err(format!(
            "host pattern expands to {total} names of {bytes} bytes in all, more than the limit of {MAX_EXPANSION_BYTES} bytes"
        ));
    }
    let mut out = Vec::with_capacity(total);
    for item in &items {
        for r in &rest {
            out.push(format!("{head}{item}{r}"));
        }
    }
    Ok(out)
}

/// The most names one host pattern may expand to.
pub const MAX_EXPANSION: usize = 1_000_000;

/// The most text (the names' bytes added up) one host pattern may expand to:
/// a million names of 64 bytes.
pub const MAX_EXPANSION_BYTES: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_ranges_expand_as_a_product() {
        assert_eq!(
            expand_host_pattern("h[1:2]-[a:b]x").unwrap(),
            vec!["h1-ax", "h1-bx", "h2-ax", "h2-bx"]
        );
        assert_eq!(
            expand_host_pattern("db[01:02][c:d]").unwrap(),
            vec!["db01c", "db01d", "db02c", "db02d"]
        );
    }

    /// Found by the `host_pattern` fuzz target: three ranges whose product
    /// is 42 million names made the expansion run for minutes.
    #[test]
    fn a_product_past_the_limit_is_refused() {
        let err = expand_host_pattern("[:111]h:ad2[b:Y][3:7524]:aWe").unwrap_err();
        assert!(err.contains("more than the limit of 1000000"), "{err}");
        let err = expand_host_pattern("h[0:999][0:999][0:9]").unwrap_err();
        assert!(err.contains("expands to 10000000 names"), "{err}");
        assert_eq!(
            expand_host_pattern("h[0:999][0:999]").unwrap().len(),
            1_000_000
        );
    }

    /// Found by the `host_pattern` fuzz target (finding 14): a 2 KB pattern
    /// with nineteen `[:1]` ranges stays under the name limit (524 288
    /// names) but asked for over 2 GB of text and hit libFuzzer's memory
    /// limit.
    #[test]
    fn a_long_pattern_past_the_byte_limit_is_refused() {
        let pattern = format!("{}{}", "h".repeat(2000), "[:1]x".repeat(19));
        let err = expand_host_pattern(&pattern).unwrap_err();
        assert!(
            err.contains("more than the limit of 67108864 bytes"),
            "{err}"
        );
        // The same ranges on a short name are fine.
        let names = expand_host_pattern(&"[:1]x".repeat(19)).unwrap();
        assert_eq!(names.len(), 1 << 19);
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(
            parse_address("db:2200", true).unwrap(),
            ("db".into(), Some(2200))
        );
        assert_eq!(
            parse_address("web[1:3]:22", true).unwrap(),
            ("web[1:3]".into(), Some(22))
        );
        assert_eq!(
            parse_address("fe80::1", true).unwrap(),
            ("fe80::1".into(), None)
        );
        assert_eq!(
            parse_address("[fe80::1]:2222", true).unwrap(),
            ("fe80::1".into(), Some(2222))
        );
        assert!(parse_address("db:", true).is_err());
        assert!(parse_address("db:http", true).is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(
            expand_host_pattern("w[08:10]").unwrap(),
            ["w08", "w09", "w10"]
        );
        assert_eq!(expand_host_pattern("w[8:10]").unwrap(), ["w8", "w9", "w10"]);
        assert_eq!(expand_host_pattern("[a:c]x").unwrap(), ["ax", "bx", "cx"]);
        assert_eq!(
            expand_host_pattern("s[1:10:4]").unwrap(),
            ["s1", "s5", "s9"]
        );
        assert_eq!(
            expand_host_pattern("r[1:2]c[a:b]").unwrap(),
            ["r1ca", "r1cb", "r2ca", "r2cb"]
        );
        assert!(expand_host_pattern("w[3:1]").is_err());
        assert!(expand_host_pattern("w[01:100]").is_err());
    }
}
