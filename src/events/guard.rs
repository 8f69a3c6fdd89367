//! Where webhooks may be sent: http or https URLs without credentials, whose host resolves
//! only outside the networks `webhooks.deny_networks` forbids (link-local cloud metadata
//! endpoints by default). Checked at subscription and again at each delivery's connection,
//! so a name that later resolves somewhere forbidden is refused then too.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// An IP network: address and prefix length.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (e.g. 169.254.0.0/16)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((net, width), (ip, ip_width)) = (bits(self.addr), bits(ip.to_canonical()));
        if width != ip_width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= width || (net >> shift) == (ip >> shift)
    }
}

pub fn denied(nets: &[Net], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

/// The addresses of `host:port` that are not denied; an error names why none is usable.
pub fn resolve(nets: &[Net], netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
    let all: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
    let allowed: Vec<SocketAddr> = all.iter().copied().filter(|a| !denied(nets, a.ip())).collect();
    if allowed.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            if all.is_empty() {
                "the host has no address"
            } else {
                "the host resolves only to addresses webhooks.deny_networks forbids"
            },
        ));
    }
    Ok(allowed)
}

/// A subscription's URL, checked: the normalised URL or what is wrong with it.
pub fn check_url(nets: &[Net], raw: &str) -> Result<String, String> {
    if raw.len() > 2048 {
        return Err("url is longer than 2048 characters".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("url is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("url must be http or https, not {:?}", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials; deliveries are signed with the subscription's secret".into());
    }
    let host = url.host_str().ok_or("url has no host")?;
    let port = url.port_or_known_default().ok_or("url has no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    resolve(
        nets,
        &format!(
            "{}:{port}",
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            }
        ),
    )
    .map_err(|e| format!("url host {host:?} cannot be used: {e}"))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_urls() {
        let nets: Vec<Net> = ["169.254.0.0/16", "10.0.0.0/8", "fe80::/10", "::1"]
            .iter()
            .map(|s| Net::parse(s).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert!(denied(&nets, "169.254.169.254".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(
            denied(&nets, "::ffff:10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}"))),
            "v4-mapped"
        );
        assert!(!denied(&nets, "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(Net::parse("10.0.0.0/33").is_err());
        assert!(Net::parse("nope").is_err());
        assert!(check_url(&nets, "http://127.0.0.1:9/hook").is_ok());
        assert!(check_url(&nets, "ftp://127.0.0.1/hook").is_err());
        assert!(check_url(&nets, "file:///etc/passwd").is_err());
        assert!(check_url(&nets, "http://169.254.169.254/latest").is_err());
        assert!(check_url(&nets, "http://10.9.9.9/").is_err());
        assert!(check_url(&nets, "http://[::1]:8080/").is_err());
        assert!(check_url(&nets, "http://user:pw@127.0.0.1/").is_err());
        assert!(check_url(&nets, "not a url").is_err());
    }
}
