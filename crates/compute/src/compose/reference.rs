//! Image references, normalized as the Docker engine reads them.
//!
//! Owns turning a compose `image:` (`nginx`, `nginx:1.25`, `quay.io/team/app@sha256:…`) into an
//! [`ImageRef`]: registry host, repository path, tag and digest, with Docker's defaults applied
//! (no host means `docker.io`, a one-part Docker Hub name lives under `library/`, no tag means
//! `latest`). The policy decides on the normalized form, and the runtime talks to the engine
//! only in the canonical form (`docker.io/library/nginx:latest`), which the engine can never
//! mistake for the id of an image someone else made on it.
//!
//! Nothing here resolves a name or contacts a registry.

use std::fmt;
use std::net::Ipv4Addr;

/// Docker Hub, as the engine names it.
pub const DOCKER_HUB: &str = "docker.io";

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ImageRef {
    /// Registry host, with its port when one is given, lower case (`docker.io`,
    /// `registry.example.com:5000`).
    pub registry: String,
    /// Path of the repository in the registry (`library/nginx`).
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// The digest (`sha256:…`), when the reference pins one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference as the engine would normalize it; the error says what is wrong.
    pub fn parse(reference: &str) -> Result<ImageRef, String> {
        if reference.is_empty() || reference.len() > 255 {
            return Err("empty or too long".into());
        }
        if !reference.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
                // IPv6 registry hosts are written in brackets; refused later, named first.
                || matches!(b, b'[' | b']')
        }) {
            return Err("unexpected character".into());
        }
        let (name, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        if let Some(d) = digest {
            let ok = d.split_once(':').is_some_and(|(algo, hex)| {
                !algo.is_empty()
                    && algo
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    && hex.len() >= 32
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !ok {
                return Err(format!("invalid digest {d:?}"));
            }
        }
        // Docker: the part before the first '/' is a registry host when it looks like one.
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':', '['])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_ascii_lowercase(), rest)
            }
            _ => (DOCKER_HUB.to_string(), name),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let (path, tag) = match rest.rfind(':') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.as_bytes()[0] != b'.'
                && t.as_bytes()[0] != b'-'
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(format!("invalid tag {t:?}"));
            }
        }
        if path.is_empty() {
            return Err("no repository name".into());
        }
        for component in path.split('/') {
            let bytes = component.as_bytes();
            let ok = !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes.iter().all(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                });
            if !ok {
                return Err(if component.bytes().any(|b| b.is_ascii_uppercase()) {
                    "repository names must be lowercase".into()
                } else {
                    format!("invalid repository name component {component:?}")
                });
            }
        }
        if path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a 64-digit hexadecimal name is an image id, not a repository".into());
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// `registry/repository` (`docker.io/library/nginx`): the name a pull asks for.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The full canonical reference: `docker.io/library/nginx:latest`, `…@sha256:…`.
    pub fn canonical(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The registry host without its port.
    pub fn registry_host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.split(':').next().unwrap_or(r)
    }

    /// Whether the registry is named by an IP address (`10.0.0.1:5000`, `[::1]:5000`).
    pub fn registry_is_ip(&self) -> bool {
        let host = self.registry_host();
        self.registry.starts_with('[')
            || host.parse::<Ipv4Addr>().is_ok()
            || host.parse::<std::net::Ipv6Addr>().is_ok()
            // Numeric forms the C resolver reads as IPv4 (`2130706433`, `0x7f.1`).
            || host.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b'x' | b'X'))
                && host.bytes().next().is_some_and(|b| b.is_ascii_digit())
    }

    /// Whether the registry names this host (`localhost`, `*.localhost`).
    pub fn registry_is_local(&self) -> bool {
        let host = self.registry_host();
        host == "localhost" || host.ends_with(".localhost")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// The registry name as configured (`index.docker.io` is Docker Hub), lower case.
pub(crate) fn normalize_registry(registry: &str) -> String {
    let r = registry.trim().trim_end_matches('/').to_ascii_lowercase();
    if r == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        ImageRef::parse(s).unwrap().canonical()
    }

    #[test]
    fn docker_defaults_apply() {
        assert_eq!(canon("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(canon("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(canon("library/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            canon("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            canon("stratus-test/busybox:latest"),
            "docker.io/stratus-test/busybox:latest"
        );
        assert_eq!(
            canon("quay.io/team/app@sha256:0123456789abcdef0123456789abcdef"),
            "quay.io/team/app@sha256:0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            canon("registry.example.com:5000/a/b:v1"),
            "registry.example.com:5000/a/b:v1"
        );
        let r = ImageRef::parse("Registry.Example.com/a").unwrap();
        assert_eq!(r.registry, "registry.example.com");
        assert_eq!(r.name(), "registry.example.com/a");
    }

    #[test]
    fn registry_kinds() {
        let r = |s: &str| ImageRef::parse(s).unwrap();
        for ip in [
            "127.0.0.1:5000/x",
            "10.0.0.1/x",
            "169.254.169.254/x",
            "[::1]:5000/x",
            "[fe80::1]/x",
            "2130706433:80/x",
            "0x7f.1/x",
        ] {
            assert!(r(ip).registry_is_ip(), "{ip}");
        }
        assert!(!r("nginx").registry_is_ip());
        assert!(!r("quay.io/a").registry_is_ip());
        assert!(!r("1and1.example/a").registry_is_ip());
        assert!(r("localhost:5000/x").registry_is_local());
        assert!(r("localhost/x").registry_is_local());
        assert!(r("a.localhost/x").registry_is_local());
        assert_eq!(r("[::1]:5000/x").registry_host(), "::1");
        assert_eq!(r("a.example:5000/x").registry_host(), "a.example");
    }

    #[test]
    fn bad_references() {
        for bad in [
            "",
            "Upper/Case",
            "a/Upper",
            "-a",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256:xyz",
            "a b",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        // An upper-case first component is a registry host to Docker; the path stays lowercase.
        assert_eq!(ImageRef::parse("Upper/case").unwrap().registry, "upper");
    }
}
