//! IPv4 networks as the manifest uses them (no crate needed for /prefix math
//! on four bytes).

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// The network of `prefix` bits that contains `addr`.
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Self {
        let c = Ipv4Cidr { addr, prefix };
        Ipv4Cidr {
            addr: c.network(),
            prefix,
        }
    }
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.network())
    }
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

/// As written in the manifest ("10.88.0.0/16"), e.g. for templates.
impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses "a.b.c.d/n"; the address must be the network address itself.
pub fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a network like \"10.88.0.0/16\""))?;
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("{a:?} in {s:?} is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{p:?} in {s:?} is not a prefix length 0..=32"))?;
    let c = Ipv4Cidr { addr, prefix };
    if c.network() != addr {
        return Err(format!(
            "{s:?} has host bits set; did you mean {}/{prefix}?",
            c.network()
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c = parse_cidr("10.10.197.0/24").unwrap();
        assert!(c.contains("10.10.197.98".parse().unwrap()));
        assert!(!c.contains("10.10.198.1".parse().unwrap()));
        assert_eq!(c.broadcast().to_string(), "10.10.197.255");
        assert!(parse_cidr("10.88.0.0/16")
            .unwrap()
            .overlaps(&parse_cidr("10.88.4.0/24").unwrap()));
        assert!(!parse_cidr("10.88.0.0/16")
            .unwrap()
            .overlaps(&parse_cidr("10.96.0.0/12").unwrap()));
    }

    #[test]
    fn cidr_errors() {
        assert!(parse_cidr("10.88.0.1/16")
            .unwrap_err()
            .contains("host bits"));
        assert!(parse_cidr("10.88.0.0")
            .unwrap_err()
            .contains("not a network"));
        assert!(parse_cidr("10.88.0.0/33").unwrap_err().contains("prefix"));
    }
}
