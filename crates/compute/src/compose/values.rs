//! Compose's small value grammars: durations (`1m30s`), byte sizes (`64m`), port specs
//! (`127.0.0.1:8080-8081:80-81/tcp`) and restart policies (`on-failure:3`).
//!
//! Pure functions from text to values; errors are plain messages the caller prefixes with the
//! field path. Nothing here knows about services or the host.

use std::time::Duration;

use super::{PortSpec, Protocol, RestartPolicy};

/// Parses a Go-style duration as compose writes them: `30s`, `1m30s`, `1.5h`, `500ms`, `10us`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (use forms like 30s, 1m30s, 500ms)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total > 100.0 * 365.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a byte size: a plain number of bytes or a number with `b`, `k`/`kb`, `m`/`mb`,
/// `g`/`gb` (binary multiples, case-insensitive).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?} (use forms like 64m, 1g, 512k)");
    let t = s.trim().to_ascii_lowercase();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let value: f64 = t[..digits].parse().map_err(|_| bad())?;
    let scale: u64 = match t[digits..].trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses `tcp`, `udp` or `sctp`.
pub(crate) fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(format!("unknown protocol {s:?} (tcp, udp or sctp)")),
    }
}

/// Parses `80` or `8000-8010` into an inclusive range of non-zero ports.
pub(crate) fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("invalid port {p:?}")),
            Ok(n) => Ok(n),
        }
    };
    match s.split_once('-') {
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("invalid port range {s:?}"));
            }
            Ok((a, b))
        }
    }
}

/// Parses the short port syntax `[[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/PROTOCOL]` where either
/// port may be a range. The host IP is accepted and ignored (nothing binds on the host).
pub(crate) fn parse_port_short(spec: &str) -> Result<Vec<PortSpec>, String> {
    let spec = spec.trim();
    let (body, protocol) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, parse_protocol(p)?),
        None => (spec, Protocol::Tcp),
    };
    // Strip a host IP: `[v6]:…` or `a.b.c.d:HOST:CONTAINER` / `a.b.c.d::CONTAINER`.
    let ports = if let Some(after) = body.strip_prefix('[') {
        let (_ip, rest) = after
            .split_once("]:")
            .ok_or_else(|| format!("invalid port spec {spec:?}"))?;
        rest
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => body,
            3 => {
                let ip_len = parts[0].len() + 1;
                &body[ip_len..]
            }
            _ => {
                return Err(format!(
                    "invalid port spec {spec:?} (put an IPv6 host address in brackets)"
                ))
            }
        }
    };
    let (host, container) = match ports.rsplit_once(':') {
        Some((h, c)) => (Some(h), c),
        None => (None, ports),
    };
    let (c_start, c_end) = parse_port_range(container)?;
    let container_len = (c_end - c_start) as usize + 1;
    let host = host.filter(|h| !h.is_empty());
    let mut out = Vec::with_capacity(container_len);
    match host {
        None => {
            for p in c_start..=c_end {
                out.push(PortSpec {
                    container_port: p,
                    published: None,
                    protocol,
                });
            }
        }
        Some(h) => {
            let (h_start, h_end) = parse_port_range(h)?;
            let host_len = (h_end - h_start) as usize + 1;
            if host_len == container_len {
                for i in 0..container_len as u16 {
                    out.push(PortSpec {
                        container_port: c_start + i,
                        published: Some(h_start + i),
                        protocol,
                    });
                }
            } else if container_len == 1 {
                // Docker picks one host port of the range: the machine port is not known in
                // advance, so the container port stands for it.
                out.push(PortSpec {
                    container_port: c_start,
                    published: None,
                    protocol,
                });
            } else {
                return Err(format!(
                    "invalid port spec {spec:?}: host and container ranges differ in length"
                ));
            }
        }
    }
    Ok(out)
}

/// Parses `no`, `always`, `on-failure[:N]` or `unless-stopped`.
pub(crate) fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    match s {
        "no" | "" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: None }),
        _ => {
            if let Some(n) = s.strip_prefix("on-failure:") {
                let n: u32 = n
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid restart policy {s:?}"))?;
                return Ok(RestartPolicy::OnFailure {
                    max_retries: Some(n),
                });
            }
            Err(format!(
                "invalid restart policy {s:?} (no, always, on-failure[:N] or unless-stopped)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(c: u16, h: Option<u16>, protocol: Protocol) -> PortSpec {
        PortSpec {
            container_port: c,
            published: h,
            protocol,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "10", "10x", "1m-3s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("2b").unwrap(), 2);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5t").is_err());
    }

    #[test]
    fn short_ports() {
        use Protocol::*;
        assert_eq!(parse_port_short("80").unwrap(), vec![p(80, None, Tcp)]);
        assert_eq!(
            parse_port_short("8080:80").unwrap(),
            vec![p(80, Some(8080), Tcp)]
        );
        assert_eq!(
            parse_port_short("127.0.0.1:8080:80").unwrap(),
            vec![p(80, Some(8080), Tcp)]
        );
        assert_eq!(
            parse_port_short("127.0.0.1::80").unwrap(),
            vec![p(80, None, Tcp)]
        );
        assert_eq!(
            parse_port_short("[::1]:8080:80").unwrap(),
            vec![p(80, Some(8080), Tcp)]
        );
        assert_eq!(parse_port_short("53/udp").unwrap(), vec![p(53, None, Udp)]);
        assert_eq!(
            parse_port_short("8000-8001:9000-9001/tcp").unwrap(),
            vec![p(9000, Some(8000), Tcp), p(9001, Some(8001), Tcp)]
        );
        assert_eq!(
            parse_port_short("3000-3002").unwrap(),
            vec![p(3000, None, Tcp), p(3001, None, Tcp), p(3002, None, Tcp)]
        );
        assert_eq!(
            parse_port_short("8000-8010:80").unwrap(),
            vec![p(80, None, Tcp)]
        );
        for bad in [
            "",
            "0",
            "70000",
            "80/icmp",
            "1-2:3-5",
            "a:b",
            "::1:80:80",
            "9-3",
        ] {
            assert!(parse_port_short(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies() {
        assert_eq!(parse_restart("no").unwrap(), RestartPolicy::No);
        assert_eq!(parse_restart("always").unwrap(), RestartPolicy::Always);
        assert_eq!(
            parse_restart("unless-stopped").unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert_eq!(
            parse_restart("on-failure").unwrap(),
            RestartPolicy::OnFailure { max_retries: None }
        );
        assert_eq!(
            parse_restart("on-failure:3").unwrap(),
            RestartPolicy::OnFailure {
                max_retries: Some(3)
            }
        );
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_restart("on-failure:x").is_err());
    }
}
