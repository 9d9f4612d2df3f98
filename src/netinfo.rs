//! What a person types to reach this server: the machine's host name and the addresses other
//! devices on the network can use (interfaces that are up; no loopback, no link-local, no
//! container bridges), and the URLs to open for a listening address. Used by the start-up line
//! and by `--tls-self-signed` (the names the certificate covers). Calls nothing else of chatd.

use std::net::{IpAddr, SocketAddr};

/// Interface name prefixes of virtual bridges no other machine reaches this one through.
const VIRTUAL: [&str; 8] = [
    "docker", "br-", "veth", "virbr", "lxcbr", "cni", "flannel", "podman",
];

/// Addresses of this machine that other devices on the network may reach, IPv4 first.
pub fn lan_addresses() -> Vec<IpAddr> {
    let Ok(ifaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = ifaces
        .iter()
        .filter(|i| !VIRTUAL.iter().any(|p| i.name.starts_with(p)))
        .filter(|i| !matches!(i.oper_status, if_addrs::IfOperStatus::Down))
        .map(|i| i.ip())
        .filter(|ip| reachable(*ip))
        .collect();
    out.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    out.dedup();
    out
}

/// Whether another device could use `ip` to reach this one.
fn reachable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            // fe80::/10 needs a zone (%eth0) no browser takes in a URL.
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// This machine's host name, if it has one.
pub fn hostname() -> Option<String> {
    let uts = rustix::system::uname();
    let name = uts.nodename().to_str().ok()?.trim().to_string();
    (!name.is_empty() && name != "(none)").then_some(name)
}

fn url(scheme: &str, ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    }
}

/// The URLs a person can open for a server listening on `bound`: (on this machine, from other
/// devices). Bound to every interface (`0.0.0.0`, `::`): `localhost` and each LAN address
/// (`lan`; IPv4 ones only for `0.0.0.0`); bound to loopback: `localhost` only; bound to one
/// address: that address.
pub fn open_urls(scheme: &str, bound: SocketAddr, lan: &[IpAddr]) -> (Vec<String>, Vec<String>) {
    let port = bound.port();
    let localhost = format!("{scheme}://localhost:{port}");
    let ip = bound.ip();
    if ip.is_unspecified() {
        let others = lan
            .iter()
            .filter(|a| ip.is_ipv6() || a.is_ipv4())
            .map(|a| url(scheme, *a, port))
            .collect();
        (vec![localhost], others)
    } else if ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
    {
        (vec![localhost], Vec::new())
    } else if ip.is_loopback() {
        (vec![url(scheme, ip, port)], Vec::new())
    } else {
        (Vec::new(), vec![url(scheme, ip, port)])
    }
}

/// The start-up line's advice: "open URL on this machine, or URL, URL from other devices".
pub fn open_advice(scheme: &str, bound: SocketAddr, lan: &[IpAddr]) -> String {
    let (here, others) = open_urls(scheme, bound, lan);
    match (here.is_empty(), others.is_empty()) {
        (false, true) => format!("open {} in a browser on this machine", here.join(", ")),
        (true, false) => format!("open {} in a browser", others.join(", ")),
        (false, false) => format!(
            "open {} in a browser on this machine, or {} from other devices",
            here.join(", "),
            others.join(", ")
        ),
        (true, true) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lan() -> Vec<IpAddr> {
        vec![
            "192.168.1.20".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
            "fd00::20".parse().unwrap(),
        ]
    }

    #[test]
    fn urls_for_each_kind_of_binding() {
        let (here, others) = open_urls("http", "0.0.0.0:8080".parse().unwrap(), &lan());
        assert_eq!(here, ["http://localhost:8080"]);
        assert_eq!(others, ["http://192.168.1.20:8080", "http://10.0.0.5:8080"]);
        let (_, others) = open_urls("https", "[::]:8443".parse().unwrap(), &lan());
        assert_eq!(
            others,
            [
                "https://192.168.1.20:8443",
                "https://10.0.0.5:8443",
                "https://[fd00::20]:8443"
            ]
        );
        let (here, others) = open_urls("http", "127.0.0.1:9000".parse().unwrap(), &lan());
        assert_eq!(
            (here, others.len()),
            (vec!["http://localhost:9000".to_string()], 0)
        );
        let (here, others) = open_urls("http", "192.168.1.20:80".parse().unwrap(), &lan());
        assert!(here.is_empty());
        assert_eq!(others, ["http://192.168.1.20:80"]);
        assert_eq!(
            open_advice("http", "0.0.0.0:8080".parse().unwrap(), &[]),
            "open http://localhost:8080 in a browser on this machine"
        );
    }

    #[test]
    fn only_addresses_others_can_reach() {
        assert!(reachable("192.168.1.2".parse().unwrap()));
        assert!(!reachable("127.0.0.1".parse().unwrap()));
        assert!(!reachable("169.254.3.4".parse().unwrap()));
        assert!(!reachable("fe80::1".parse().unwrap()));
        assert!(reachable("2001:db8::1".parse().unwrap()));
        for ip in lan_addresses() {
            assert!(reachable(ip), "{ip}");
        }
    }
}
