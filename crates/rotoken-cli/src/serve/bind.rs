//! Listening addresses as written (`localhost:8080`, `127.0.0.1:0`,
//! `[::1]:8080`): the host is kept for the default issuer, so the issuer
//! says what the user typed, and names resolve to their addresses
//! (IPv4 first) when bound.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use tokio::net::TcpListener;

use crate::output::CliError;

/// A `host:port` to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BindAddr {
    /// An IP address or a name, without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not host:port (for example localhost:8080 or 127.0.0.1:0)");
        let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?.to_string(),
            None if host.contains(':') => return Err(bad()),
            None => host.to_owned(),
        };
        let name_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !name_ok {
            return Err(bad());
        }
        Ok(Self { host, port })
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl BindAddr {
    /// True if the host is a loopback address or `localhost`.
    #[cfg(test)]
    pub(crate) fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `http://host:port` with the port actually bound.
    pub(crate) fn http_url(&self, bound_port: u16) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.to_ascii_lowercase()
        };
        format!("http://{host}:{bound_port}")
    }

    /// Resolves the host (IPv4 addresses first) and listens on the first
    /// address that accepts.
    ///
    /// # Errors
    ///
    /// `bind_failed` with the operating system's reason.
    pub(crate) async fn listen(&self) -> Result<(TcpListener, SocketAddr), CliError> {
        let fail = |reason: String| CliError::refused("bind_failed", format!("could not listen on {self}: {reason}"));
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| fail(e.to_string()))?
            .collect();
        addrs.sort_by_key(SocketAddr::is_ipv6);
        let mut last = None;
        for addr in addrs {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    let local = l.local_addr().map_err(|e| fail(e.to_string()))?;
                    return Ok((l, local));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(fail(last.map_or_else(
            || "the name has no address".to_owned(),
            |e| e.to_string(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_kept_as_written() {
        let b: BindAddr = "localhost:8080".parse().unwrap();
        assert_eq!((b.host.as_str(), b.port), ("localhost", 8080));
        assert!(b.is_loopback());
        assert_eq!(b.http_url(8080), "http://localhost:8080");
        let b: BindAddr = "[::1]:0".parse().unwrap();
        assert_eq!(b.to_string(), "[::1]:0");
        assert_eq!(b.http_url(4000), "http://[::1]:4000");
        assert!(!"0.0.0.0:80".parse::<BindAddr>().unwrap().is_loopback());
        for bad in ["8080", "localhost", "::1:80", "a b:80", ":80", "host:99999"] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn localhost_binds_a_loopback_address() {
        let b: BindAddr = "localhost:0".parse().unwrap();
        let (_l, addr) = b.listen().await.unwrap();
        assert!(addr.ip().is_loopback());
    }
}
