//! Fails fast when a package source cannot be reached, instead of letting
//! apt retry for minutes: the user learns which source and what to do.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Result};

use super::sources::AptSource;

/// Host and port of an http(s) URI; None for local sources (file:, copy:).
pub fn host_port(uri: &str) -> Option<(String, u16)> {
    let (scheme, rest) = uri.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            p.parse().ok().map(|p| (h.to_string(), p))
        }
        _ => Some((authority.to_string(), default_port)),
    }
}

/// What a user can do when this source is out of reach.
pub fn remedy(uri: &str) -> &'static str {
    if uri.contains("pkgs.k8s.io") {
        "give the Kubernetes and CRI-O packages as an offline bundle (--k8s-bundle DIR with the .deb files), or build without them (--without-kubernetes)"
    } else if uri.contains("ubuntu") {
        "use a reachable Ubuntu mirror (--mirror URL), or build the Debian profile (--distro debian-13)"
    } else {
        "check the network or proxy, or pass a reachable mirror (--mirror URL)"
    }
}

/// Resolves and connects to every remote source, each within `timeout`.
pub fn check_sources(sources: &[AptSource], timeout: Duration) -> Result<()> {
    for s in sources {
        let Some((host, port)) = host_port(&s.uri) else {
            continue;
        };
        if let Err(why) = probe(&host, port, timeout) {
            bail!(
                "cannot reach the package source {} ({why}); {}",
                s.uri,
                remedy(&s.uri)
            );
        }
    }
    Ok(())
}

fn probe(host: &str, port: u16, timeout: Duration) -> std::result::Result<(), String> {
    // Name resolution has no timeout of its own: bound it with a thread.
    let (tx, rx) = mpsc::channel();
    let target = format!("{host}:{port}");
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    let addrs = match rx.recv_timeout(timeout) {
        Ok(Ok(a)) if !a.is_empty() => a,
        Ok(Ok(_)) => return Err(format!("{host} has no address")),
        Ok(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
        Err(_) => {
            return Err(format!(
                "resolving {host} took longer than {}s",
                timeout.as_secs()
            ))
        }
    };
    let mut last = String::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            host_port("http://mirror.example/debian"),
            Some(("mirror.example".into(), 80))
        );
        assert_eq!(
            host_port("https://pkgs.k8s.io/core:/stable:/v1.31/deb/"),
            Some(("pkgs.k8s.io".into(), 443))
        );
        assert_eq!(
            host_port("http://127.0.0.1:3142/debian"),
            Some(("127.0.0.1".into(), 3142))
        );
        assert_eq!(host_port("file:///srv/mirror"), None);
    }

    #[test]
    fn unreachable_source_fails_fast_and_says_what_to_do() {
        // Port 9 on loopback: nothing listens there, the connection is refused at once.
        let src = AptSource {
            uri: "http://127.0.0.1:9/pkgs.k8s.io/core".into(),
            suites: vec!["/".into()],
            components: vec![],
            signed_by: PathBuf::from("/dev/null"),
        };
        let started = std::time::Instant::now();
        let err = check_sources(&[src], Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(err.contains("127.0.0.1:9"), "{err}");
        assert!(err.contains("--k8s-bundle"), "{err}");
    }

    #[test]
    fn unresolvable_host_is_named() {
        let src = AptSource {
            uri: "http://habuild-no-such-host.invalid/ubuntu".into(),
            suites: vec!["noble".into()],
            components: vec![],
            signed_by: PathBuf::from("/dev/null"),
        };
        let err = check_sources(&[src], Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(err.contains("habuild-no-such-host.invalid"), "{err}");
        assert!(err.contains("--distro debian-13"), "{err}");
    }
}
