//! Egress by host name, decided: the operator's `egress` section, the hosts a
//! manifest asks for, and what is granted (the operator's allowlist narrowed
//! to the request). Pure functions; the proxy that enforces them is
//! `host/egress.rs`, the network namespace that leaves it the only way out is
//! made in `child.rs`.
//!
//! A pattern is `host:port`:
//! - `api.example.com:443`: that name (case-insensitive, one trailing dot ignored);
//! - `*.example.org:443`: every name below `example.org` (not `example.org` itself);
//! - `pypi.org:*`: any port;
//! - `203.0.113.7:443`, `[2001:db8::1]:443`: that address, as a literal. An IP
//!   literal is reachable only when it is listed as one.
//!
//! A name whose addresses are not public (loopback, private, link-local,
//! shared, multicast, reserved) is refused unless `resolve` pins it or its
//! address is listed as a literal: the worker must not reach the host's own
//! services through a name someone else's DNS points at them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The port the proxy listens on inside the worker's own network namespace
/// (nothing else listens there, so a fixed port is always free).
pub const PROXY_PORT: u16 = 3128;

/// The manifest field in which an extension asks for hosts (our own field;
/// the reference ignores unknown fields).
pub const MANIFEST_FIELD: &str = "egress";

/// The operator's `egress` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EgressSection {
    /// `host:port` patterns.
    pub allow: Vec<String>,
    /// Names pinned to addresses for the proxy's own lookups (as curl's `--resolve`).
    pub resolve: BTreeMap<String, IpAddr>,
    /// Overrides of the proxy's bounds.
    pub limits: EgressLimitOverrides,
}

/// `egress.limits` in the operator policy; every field optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EgressLimitOverrides {
    pub connections: Option<u32>,
    pub bytes_per_connection: Option<u64>,
    pub idle_seconds: Option<u64>,
    pub connect_seconds: Option<u64>,
}

/// The proxy's bounds for one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EgressLimits {
    /// Connections open at once through the proxy.
    pub connections: u32,
    /// Bytes one connection may carry, both ways together; it is cut after that.
    pub bytes_per_connection: u64,
    /// A connection with no byte either way for this long is closed.
    pub idle_seconds: u64,
    /// Time to resolve and connect upstream (and for the worker to send its request head).
    pub connect_seconds: u64,
}

impl Default for EgressLimits {
    fn default() -> Self {
        EgressLimits {
            connections: 64,
            bytes_per_connection: 1 << 30,
            idle_seconds: 60,
            connect_seconds: 10,
        }
    }
}

impl EgressLimits {
    fn overridden_by(mut self, o: &EgressLimitOverrides) -> Result<EgressLimits, String> {
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(format!("egress.limits.{name} must be at least 1"))
            } else {
                Ok(v)
            }
        };
        if let Some(v) = o.connections {
            self.connections = positive("connections", v.into())? as u32;
        }
        if let Some(v) = o.bytes_per_connection {
            self.bytes_per_connection = positive("bytes_per_connection", v)?;
        }
        if let Some(v) = o.idle_seconds {
            self.idle_seconds = positive("idle_seconds", v)?;
        }
        if let Some(v) = o.connect_seconds {
            self.connect_seconds = positive("connect_seconds", v)?;
        }
        Ok(self)
    }
}

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HostPattern {
    /// One name, lower case, without a trailing dot.
    Name(String),
    /// Every name ending in `.` + this suffix.
    Below(String),
    /// One address (IPv4-mapped IPv6 addresses are kept as IPv4).
    Ip(IpAddr),
}

/// One `host:port` pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub host: HostPattern,
    /// `None`: any port.
    pub port: Option<u16>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Name(n) => write!(f, "{n}")?,
            HostPattern::Below(s) => write!(f, "*.{s}")?,
            HostPattern::Ip(IpAddr::V6(a)) => write!(f, "[{a}]")?,
            HostPattern::Ip(a) => write!(f, "{a}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => write!(f, ":*"),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An address as the allowlist compares it: IPv4-mapped IPv6 as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// What a host in a request or a pattern is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// Reads a host as a request or pattern names it: an IP literal (IPv6 in
/// brackets or bare), or a DNS name in ASCII, normalized. Refuses the other
/// spellings of addresses that resolvers accept (`127.1`, `2130706433`,
/// `0x7f.0.0.1`), so an address is always recognized as one.
pub fn parse_host(host: &str) -> Result<Host, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Host::Ip(canonical(ip)));
    }
    if bare != host {
        return Err(format!("'{host}' is not an IPv6 address"));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(format!("'{host}' is not a host name"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for l in &labels {
        if l.is_empty()
            || l.len() > 63
            || !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "'{host}' is not a host name (letters, digits, '-' and '_' between dots; non-ASCII names in their xn-- form)"
            ));
        }
    }
    let last = labels[labels.len() - 1];
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(format!(
            "'{host}' is an address in a non-standard form; write it as a dotted-quad or IPv6 literal"
        ));
    }
    Ok(Host::Name(name))
}

/// Parses one `host:port` pattern.
pub fn parse_rule(pattern: &str) -> Result<Rule, String> {
    let bad = |why: String| format!("egress pattern '{pattern}': {why}");
    let Some((host, port)) = pattern.rsplit_once(':') else {
        return Err(bad(
            "needs a port: host:port, host:* for any port".to_string()
        ));
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(bad(
            "an IPv6 address is written in brackets: [::1]:443".into()
        ));
    }
    let port = match port {
        "*" => None,
        p => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => Some(n),
            _ => return Err(bad(format!("'{p}' is not a port (1-65535 or *)"))),
        },
    };
    let host = if host == "*" {
        return Err(bad(
            "'*' would allow every host; without an egress section network.outbound already does"
                .into(),
        ));
    } else if let Some(suffix) = host.strip_prefix("*.") {
        match parse_host(suffix).map_err(bad)? {
            Host::Name(n) => HostPattern::Below(n),
            Host::Ip(_) => return Err(bad("a wildcard covers names, not addresses".into())),
        }
    } else if host.contains('*') {
        return Err(bad(
            "'*' is allowed only as a whole first label ('*.example.org')".into(),
        ));
    } else {
        match parse_host(host).map_err(bad)? {
            Host::Name(n) => HostPattern::Name(n),
            Host::Ip(ip) => HostPattern::Ip(ip),
        }
    };
    Ok(Rule { host, port })
}

fn below(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

fn port_matches(rule: Option<u16>, port: u16) -> bool {
    rule.is_none_or(|p| p == port)
}

impl Rule {
    /// Whether this rule admits `host` (already parsed) on `port`.
    pub fn admits(&self, host: &Host, port: u16) -> bool {
        port_matches(self.port, port)
            && match (&self.host, host) {
                (HostPattern::Name(a), Host::Name(b)) => a == b,
                (HostPattern::Below(s), Host::Name(b)) => below(b, s),
                (HostPattern::Ip(a), Host::Ip(b)) => a == b,
                _ => false,
            }
    }

    /// The patterns both rules admit (a rule or nothing).
    pub fn intersect(&self, other: &Rule) -> Option<Rule> {
        let port = match (self.port, other.port) {
            (None, p) | (p, None) => p,
            (Some(a), Some(b)) if a == b => Some(a),
            _ => return None,
        };
        use HostPattern::*;
        let host = match (&self.host, &other.host) {
            (Name(a), Name(b)) if a == b => Name(a.clone()),
            (Name(a), Below(s)) | (Below(s), Name(a)) if below(a, s) => Name(a.clone()),
            (Below(s), Below(t)) if s == t || below(s, t) => Below(s.clone()),
            (Below(s), Below(t)) if below(t, s) => Below(t.clone()),
            (Ip(a), Ip(b)) if a == b => Ip(*a),
            _ => return None,
        };
        Some(Rule { host, port })
    }
}

/// Whether an address is on the public internet. Not public: unspecified,
/// loopback, private (RFC 1918, IPv6 ULA), link-local, shared (100.64/10),
/// benchmarking, IETF protocol assignments, documentation, multicast,
/// broadcast and reserved ranges, and IPv6 forms that embed such an IPv4
/// address (mapped, compatible, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => v4_public(a),
        IpAddr::V6(a) => v6_public(a),
    }
}

fn v4_public(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(o0 == 0
        || o0 == 10
        || o0 == 127
        || (o0 == 100 && (64..128).contains(&o1))
        || (o0 == 169 && o1 == 254)
        || (o0 == 172 && (16..32).contains(&o1))
        || (o0 == 192 && o1 == 0 && o2 == 0)
        || (o0 == 192 && o1 == 0 && o2 == 2)
        || (o0 == 192 && o1 == 168)
        || (o0 == 198 && (o1 == 18 || o1 == 19))
        || (o0 == 198 && o1 == 51 && o2 == 100)
        || (o0 == 203 && o1 == 0 && o2 == 113)
        || o0 >= 224)
}

fn v6_public(a: Ipv6Addr) -> bool {
    let s = a.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if a.is_unspecified() || a.is_loopback() {
        return false;
    }
    match s[0] {
        0 if s[1..6] == [0; 5] => v4_public(embedded(s[6], s[7])), // IPv4-compatible
        0x64 if s[1] == 0xff9b && s[2..6] == [0; 4] => v4_public(embedded(s[6], s[7])), // NAT64
        0x2002 => v4_public(embedded(s[1], s[2])),                 // 6to4
        0x2001 if s[1] == 0xdb8 => false,                          // documentation
        x if x & 0xfe00 == 0xfc00 => false,                        // unique local
        x if x & 0xffc0 == 0xfe80 => false,                        // link-local
        x if x & 0xffc0 == 0xfec0 => false,                        // site-local (deprecated)
        x if x & 0xff00 == 0xff00 => false,                        // multicast
        _ => true,
    }
}

/// Everything decided about one worker's egress. Printable; enforced by the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressPlan {
    /// The granted patterns: the operator's, narrowed to the request.
    pub allow: Vec<Rule>,
    /// What the manifest asked for (`None`: it did not ask, and gets the operator's list).
    pub requested: Option<Vec<String>>,
    /// Requested patterns the operator's allowlist does not cover at all.
    pub not_granted: Vec<String>,
    /// Names pinned by the operator.
    pub resolve: BTreeMap<String, IpAddr>,
    pub limits: EgressLimits,
    /// Where the worker finds the proxy (in its own network namespace).
    pub proxy: SocketAddr,
}

/// What an allowed request connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A name pinned by `resolve`: this address only.
    Pinned { name: String, addr: IpAddr },
    /// A name for the proxy to resolve; only public addresses (or listed literals) are used.
    Lookup { name: String },
    /// A listed IP literal.
    Literal(IpAddr),
}

impl EgressPlan {
    /// Decides a request for `host:port`; `Err` is the one-line reason.
    pub fn check(&self, host: &str, port: u16) -> Result<Target, String> {
        let parsed = parse_host(host)?;
        if !self.allow.iter().any(|r| r.admits(&parsed, port)) {
            return Err(match &parsed {
                Host::Ip(_) => {
                    format!("{host}:{port} is an IP address the egress allowlist does not list")
                }
                Host::Name(_) => {
                    let other_port = self
                        .allow
                        .iter()
                        .any(|r| r.port.is_some() && r.admits(&parsed, r.port.unwrap_or(port)));
                    if other_port {
                        format!("{host}:{port}: port {port} is not allowed for this host")
                    } else {
                        format!("{host}:{port} is not in the egress allowlist")
                    }
                }
            });
        }
        Ok(match parsed {
            Host::Ip(ip) => Target::Literal(ip),
            Host::Name(name) => match self.resolve.get(&name) {
                Some(addr) => Target::Pinned { addr: *addr, name },
                None => Target::Lookup { name },
            },
        })
    }

    /// Whether a looked-up address of an allowed name may be connected to:
    /// public, or listed as a literal for this port.
    pub fn address_allowed(&self, addr: IpAddr, port: u16) -> bool {
        is_public(addr)
            || self
                .allow
                .iter()
                .any(|r| r.admits(&Host::Ip(canonical(addr)), port))
    }

    /// The worker's proxy variables.
    pub fn environment(&self) -> Vec<(String, String)> {
        let url = format!("http://{}", self.proxy);
        let mut env = Vec::new();
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            env.push((k.to_string(), url.clone()));
            env.push((k.to_ascii_lowercase(), url.clone()));
        }
        env.push(("NO_PROXY".into(), String::new()));
        env.push(("no_proxy".into(), String::new()));
        env
    }
}

/// The hosts a manifest asks for, from its raw `egress` value: a list of
/// patterns. Anything else is refused (the request exists to narrow what is
/// granted; a malformed one must not widen it silently).
pub fn requested(value: &Value) -> Result<Vec<Rule>, String> {
    let items = value.as_array().ok_or_else(|| {
        format!("manifest field \"{MANIFEST_FIELD}\" must be a list of \"host:port\" patterns")
    })?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| {
                    format!(
                        "manifest field \"{MANIFEST_FIELD}\": {v} is not a \"host:port\" string"
                    )
                })
                .and_then(parse_rule)
        })
        .collect()
}

/// Checks an operator section (at load time).
pub fn check_section(section: &EgressSection) -> Result<(), String> {
    for p in &section.allow {
        parse_rule(p)?;
    }
    for name in section.resolve.keys() {
        match parse_host(name) {
            Ok(Host::Name(_)) => {}
            Ok(Host::Ip(_)) => {
                return Err(format!(
                    "egress.resolve: '{name}' is an address, not a name"
                ))
            }
            Err(e) => return Err(format!("egress.resolve: {e}")),
        }
    }
    EgressLimits::default().overridden_by(&section.limits)?;
    Ok(())
}

/// The plan for a worker: the operator's section narrowed to the manifest's
/// request (`None`: no request). `Err` names what is wrong.
pub fn plan(section: &EgressSection, request: Option<&Value>) -> Result<EgressPlan, String> {
    let operator: Vec<Rule> = section
        .allow
        .iter()
        .map(|p| parse_rule(p))
        .collect::<Result<_, _>>()?;
    let resolve = section
        .resolve
        .iter()
        .map(|(name, addr)| match parse_host(name) {
            Ok(Host::Name(n)) => Ok((n, canonical(*addr))),
            Ok(Host::Ip(_)) => Err(format!(
                "egress.resolve: '{name}' is an address, not a name"
            )),
            Err(e) => Err(format!("egress.resolve: {e}")),
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let limits = EgressLimits::default().overridden_by(&section.limits)?;
    let (allow, requested, not_granted) = match request {
        None => (dedup(operator), None, Vec::new()),
        Some(value) => {
            let asked = requested(value)?;
            let mut granted = Vec::new();
            let mut refused = Vec::new();
            for r in &asked {
                let mut any = false;
                for o in &operator {
                    if let Some(i) = r.intersect(o) {
                        granted.push(i);
                        any = true;
                    }
                }
                if !any {
                    refused.push(r.to_string());
                }
            }
            (
                dedup(granted),
                Some(asked.iter().map(Rule::to_string).collect()),
                refused,
            )
        }
    };
    Ok(EgressPlan {
        allow,
        requested,
        not_granted,
        resolve,
        limits,
        proxy: SocketAddr::from((Ipv4Addr::LOCALHOST, PROXY_PORT)),
    })
}

fn dedup(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    for r in rules {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

impl EgressPlan {
    /// Lines for `ext-runner policy`.
    pub fn render(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        let granted: Vec<String> = self.allow.iter().map(Rule::to_string).collect();
        let mut s = format!(
            "\negress (proxy {} in the worker's own network namespace; nothing else is reachable):\n",
            self.proxy
        );
        match &self.requested {
            Some(r) => s += &format!("  requested: {}\n", list(r)),
            None => s += "  requested: (no \"egress\" field: the operator's allowlist)\n",
        }
        s += &format!("  granted: {}\n", list(&granted));
        if !self.not_granted.is_empty() {
            s += &format!(
                "  not granted (outside the operator's allowlist): {}\n",
                self.not_granted.join(", ")
            );
        }
        for (n, a) in &self.resolve {
            s += &format!("  resolve: {n} -> {a}\n");
        }
        let l = &self.limits;
        s += &format!(
            "  limits: {} connections at once, {} bytes per connection, {} s idle, {} s to connect\n",
            l.connections, l.bytes_per_connection, l.idle_seconds, l.connect_seconds
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(s: &str) -> Rule {
        parse_rule(s).unwrap()
    }

    fn section(allow: &[&str]) -> EgressSection {
        EgressSection {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn patterns_parse_and_print_back() {
        for p in [
            "api.example.com:443",
            "*.example.org:443",
            "pypi.org:*",
            "203.0.113.7:443",
            "[2001:db8::1]:8443",
            "under_score.example:80",
        ] {
            assert_eq!(rule(p).to_string(), p);
        }
        assert_eq!(
            rule("API.Example.COM.:443").to_string(),
            "api.example.com:443"
        );
        assert_eq!(rule("[::ffff:127.0.0.1]:80").to_string(), "127.0.0.1:80");
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for (p, why) in [
            ("api.example.com", "needs a port"),
            ("api.example.com:0", "not a port"),
            ("api.example.com:70000", "not a port"),
            ("api.example.com:+80", "not a port"),
            ("*:443", "every host"),
            ("a*.example.com:443", "whole first label"),
            ("*.1.2.3.4:443", "covers names"),
            ("*.1.2.3:443", "non-standard form"),
            ("::1:443", "brackets"),
            ("[example.com]:443", "not an IPv6"),
            ("127.1:80", "non-standard form"),
            ("2130706433:80", "non-standard form"),
            ("0x7f000001:80", "non-standard form"),
            ("bücher.example:443", "xn--"),
            ("a..b:443", "not a host name"),
            (":443", "not a host name"),
        ] {
            let e = parse_rule(p).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn names_wildcards_ports_and_literals_match_as_documented() {
        let r = rule("*.example.org:443");
        let name = |s: &str| parse_host(s).unwrap();
        assert!(r.admits(&name("a.example.org"), 443));
        assert!(r.admits(&name("A.B.Example.org."), 443));
        assert!(!r.admits(&name("example.org"), 443));
        assert!(!r.admits(&name("aexample.org"), 443));
        assert!(!r.admits(&name("a.example.org"), 80));
        assert!(!r.admits(&name("a.example.org.evil.com"), 443));
        assert!(rule("pypi.org:*").admits(&name("pypi.org"), 8080));
        let lit = rule("127.0.0.1:80");
        assert!(lit.admits(&name("127.0.0.1"), 80));
        assert!(lit.admits(&name("[::ffff:127.0.0.1]"), 80));
        assert!(lit.admits(&name("::ffff:127.0.0.1"), 80));
        assert!(!lit.admits(&name("localhost"), 80));
        // A name rule never admits an address, however it resolves.
        assert!(!rule("localhost:80").admits(&name("127.0.0.1"), 80));
    }

    #[test]
    fn check_gives_a_target_or_a_reason() {
        let mut s = section(&["api.test:443", "*.cdn.test:*", "10.1.2.3:8080"]);
        s.resolve
            .insert("api.test".into(), "127.0.0.1".parse().unwrap());
        let p = plan(&s, None).unwrap();
        assert_eq!(
            p.check("API.test", 443).unwrap(),
            Target::Pinned {
                name: "api.test".into(),
                addr: "127.0.0.1".parse().unwrap()
            }
        );
        assert_eq!(
            p.check("x.cdn.test", 1234).unwrap(),
            Target::Lookup {
                name: "x.cdn.test".into()
            }
        );
        assert_eq!(
            p.check("10.1.2.3", 8080).unwrap(),
            Target::Literal("10.1.2.3".parse().unwrap())
        );
        let e = p.check("api.test", 80).unwrap_err();
        assert!(e.contains("port 80 is not allowed"), "{e}");
        let e = p.check("evil.test", 443).unwrap_err();
        assert!(e.contains("not in the egress allowlist"), "{e}");
        let e = p.check("127.0.0.1", 443).unwrap_err();
        assert!(e.contains("IP address"), "{e}");
        let e = p.check("2130706433", 443).unwrap_err();
        assert!(e.contains("non-standard"), "{e}");
        assert!(!p.address_allowed("127.0.0.1".parse().unwrap(), 443));
        assert!(p.address_allowed("10.1.2.3".parse().unwrap(), 8080));
        assert!(!p.address_allowed("10.1.2.3".parse().unwrap(), 8081));
        assert!(p.address_allowed("93.184.216.34".parse().unwrap(), 1));
    }

    #[test]
    fn public_and_not_public_addresses() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a} counted as public");
        }
        for a in [
            "1.1.1.1",
            "172.32.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a} counted as not public");
        }
    }

    #[test]
    fn a_request_narrows_and_never_widens() {
        let s = section(&["api.example.com:443", "*.example.org:*", "pypi.org:*"]);
        let p = plan(
            &s,
            Some(&json!([
                "api.example.com:443",
                "*.files.example.org:443",
                "pypi.org:443",
                "evil.com:443",
                "*.example.com:443"
            ])),
        )
        .unwrap();
        let granted: Vec<String> = p.allow.iter().map(Rule::to_string).collect();
        assert_eq!(
            granted,
            [
                "api.example.com:443",
                "*.files.example.org:443",
                "pypi.org:443"
            ]
        );
        // A wider request than the operator's gets the operator's narrower rule.
        let p = plan(
            &section(&["a.example.com:443"]),
            Some(&json!(["*.example.com:*"])),
        )
        .unwrap();
        assert_eq!(p.allow, vec![rule("a.example.com:443")]);
        // "*.example.com" came in, nothing else was asked: evil.com is not granted.
        let p = plan(&s, Some(&json!(["evil.com:443"]))).unwrap();
        assert!(p.allow.is_empty());
        assert_eq!(p.not_granted, ["evil.com:443"]);
        // No request: the operator's list.
        assert_eq!(plan(&s, None).unwrap().allow.len(), 3);
        // An empty request: nothing.
        assert!(plan(&s, Some(&json!([]))).unwrap().allow.is_empty());
    }

    #[test]
    fn malformed_requests_and_sections_are_refused() {
        let s = section(&["api.example.com:443"]);
        for bad in [
            json!("api.example.com:443"),
            json!({"hosts": []}),
            json!([1]),
            json!(["nope"]),
        ] {
            assert!(plan(&s, Some(&bad)).is_err(), "{bad}");
        }
        assert!(check_section(&section(&["*:*"])).is_err());
        let mut r = section(&[]);
        r.resolve
            .insert("1.2.3.4".into(), "127.0.0.1".parse().unwrap());
        assert!(check_section(&r).is_err());
        let mut l = section(&[]);
        l.limits.connections = Some(0);
        assert!(check_section(&l).unwrap_err().contains("connections"));
        let ok: EgressSection = serde_json::from_value(json!({
            "allow": ["a.test:80"], "resolve": {"a.test": "127.0.0.1"},
            "limits": {"connections": 2, "bytes_per_connection": 10, "idle_seconds": 1}
        }))
        .unwrap();
        check_section(&ok).unwrap();
        let p = plan(&ok, None).unwrap();
        assert_eq!(p.limits.connections, 2);
        assert_eq!(p.limits.connect_seconds, 10);
        assert!(serde_json::from_value::<EgressSection>(json!({"allowed": []})).is_err());
    }

    #[test]
    fn the_worker_gets_every_proxy_variable_and_an_empty_no_proxy() {
        let env: BTreeMap<String, String> = plan(&section(&["a.test:80"]), None)
            .unwrap()
            .environment()
            .into_iter()
            .collect();
        for k in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            assert_eq!(env[k], "http://127.0.0.1:3128");
        }
        assert_eq!(env["NO_PROXY"], "");
        assert_eq!(env["no_proxy"], "");
    }
}
