//! Parsers for single manifest values (pure): each says what is wrong
//! with a value, never which key it came from (the section does that).

pub(super) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// "52:54:00:AB:cd:EF" → "52:54:00:ab:cd:ef". A NIC's own address only:
/// six colon-separated hex octets, neither multicast/broadcast nor all zero
/// (those never belong to one card, so a .link file matching them would
/// name nothing, or the wrong thing).
pub fn parse_mac(s: &str) -> Result<String, String> {
    let octets: Vec<Option<u8>> = s
        .split(':')
        .map(|o| {
            // from_str_radix alone would take "+f".
            (o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u8::from_str_radix(o, 16).ok())
                .flatten()
        })
        .collect();
    let bad = || format!("{s:?} is not a MAC address like \"52:54:00:12:34:56\"");
    if octets.len() != 6 || octets.iter().any(Option::is_none) {
        return Err(bad());
    }
    let octets: Vec<u8> = octets.into_iter().flatten().collect();
    if octets[0] & 1 == 1 {
        return Err(format!(
            "{s:?} is a multicast or broadcast address, not a NIC's own"
        ));
    }
    if octets.iter().all(|&o| o == 0) {
        return Err(format!("{s:?} is the all-zero address, not a NIC's own"));
    }
    Ok(octets
        .iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A bootstrap token TTL in the Go duration form kubeadm reads, limited to
/// hours, minutes and seconds ("24h", "1h30m", "90m"); returns seconds.
/// Zero ("never expires") is refused: the token would stay a valid join
/// credential on every card for ever.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like \"24h\", \"2h30m\" or \"90m\"");
    let (mut total, mut digits, mut units) = (0u64, String::new(), String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let scale = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        // Each unit once, largest first, each with a number.
        if digits.is_empty()
            || units.contains(c)
            || units.chars().any(|u| "hms".find(u) > "hms".find(c))
        {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        units.push(c);
        digits.clear();
    }
    if !digits.is_empty() || units.is_empty() {
        return Err(bad());
    }
    if total < 60 {
        return Err(format!(
            "{s:?} is shorter than a minute: the token must outlive kubeadm init and the joins"
        ));
    }
    Ok(total)
}

/// A `sha256:<64 hex>` value as written by a user (any hex case).
pub fn parse_sha256_pin(s: &str) -> Option<String> {
    let hex = s.trim().strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

pub(super) fn is_version(s: &str, parts: usize) -> bool {
    let p: Vec<&str> = s.split('.').collect();
    p.len() == parts
        && p.iter()
            .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
}
