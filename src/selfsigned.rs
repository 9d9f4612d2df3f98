//! `--tls-self-signed`: https on a LAN without a public certificate. chatd keeps a small
//! certificate authority of its own in `<data-dir>/tls/` (`ca.pem`, `ca-key.pem` mode 0600,
//! `ca-names.txt`), made on first use and valid for 10 years, and at every start signs a
//! server certificate (in memory, valid 397 days) for this machine's current names and
//! addresses (`netinfo`). A person trusts the CA once per device (docs/OPERATIONS.md); the
//! server certificate can then change with the machine's addresses without new warnings.
//!
//! The CA is name-constrained to local names and private address ranges (plus the names and
//! addresses the machine had when it was made), so a copy of its key cannot impersonate other
//! sites to the devices that trust it. Names outside those are left out of the server
//! certificate (with a log line); delete `tls/` to make a new CA.
//!
//! Uses rcgen (ring backend) to make certificates; `tls` serves them. Calls `netinfo`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::model::now_ms;

/// Where the CA lives inside the data directory.
pub const DIR: &str = "tls";
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const CA_NAMES: &str = "ca-names.txt";

/// What the start-up line tells about the certificate.
pub struct Info {
    /// The CA certificate to install on devices.
    pub ca_path: PathBuf,
    /// SHA-256 of the CA certificate, as `AB:CD:…` (what devices show when installing it).
    pub fingerprint: String,
    /// The CA certificate (DER), served at `/ca.crt`.
    pub ca_der: Vec<u8>,
    /// The names and addresses the server certificate covers.
    pub names: Vec<String>,
}

/// Private and local address ranges every CA permits.
const RANGES: [&str; 10] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "0.0.0.0/32",
];

/// Local DNS names and suffixes every CA permits (mDNS `.local`, home routers' suffixes).
const SUFFIXES: [&str; 7] = [
    "localhost",
    "local",
    "lan",
    "home",
    "home.arpa",
    "internal",
    "intranet",
];

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("cannot make the self-signed certificate ({what}): {e}")
}

/// Sets a certificate's validity: from yesterday for `days` days (UTC dates; one day back so a
/// device whose clock is a little behind accepts it).
fn validity(params: &mut CertificateParams, days: i64) {
    let day = |offset: i64| {
        let ms = (now_ms() as i64 + offset * 86_400_000).max(0) as u64;
        let (y, m, d, ..) = crate::admin::civil_utc(ms);
        // civil_utc only yields real dates.
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    params.not_before = day(-1);
    params.not_after = day(days);
}

/// The CA's distinguished name, derived from its key so it can be rebuilt from the key alone.
fn ca_name(key: &KeyPair) -> DistinguishedName {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
    let id: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "chatd");
    dn.push(DnType::CommonName, format!("chatd local CA {id}"));
    dn
}

/// SHA-256 of a certificate as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A name constraint's subtrees, from `ca-names.txt` lines (`dns NAME`, `ip CIDR`).
fn subtrees(lines: &str) -> Vec<GeneralSubtree> {
    lines
        .lines()
        .filter_map(|l| match l.trim().split_once(' ') {
            Some(("dns", n)) => Some(GeneralSubtree::DnsName(n.trim().to_string())),
            Some(("ip", c)) => c
                .trim()
                .parse::<CidrSubnet>()
                .ok()
                .map(GeneralSubtree::IpAddress),
            _ => None,
        })
        .collect()
}

/// Whether a DNS name or address falls under the CA's constraints.
fn permitted(san: &SanType, allowed: &[GeneralSubtree]) -> bool {
    allowed.iter().any(|t| match (san, t) {
        (SanType::DnsName(n), GeneralSubtree::DnsName(c)) => {
            let n = n.as_str().to_ascii_lowercase();
            let c = c.to_ascii_lowercase();
            n == c || n.ends_with(&format!(".{c}"))
        }
        (SanType::IpAddress(ip), GeneralSubtree::IpAddress(net)) => in_subnet(*ip, net),
        _ => false,
    })
}

fn in_subnet(ip: IpAddr, net: &CidrSubnet) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), CidrSubnet::V4(n, m)) => a
            .octets()
            .iter()
            .zip(n)
            .zip(m)
            .all(|((a, n), m)| a & m == n & m),
        (IpAddr::V6(a), CidrSubnet::V6(n, m)) => a
            .octets()
            .iter()
            .zip(n)
            .zip(m)
            .all(|((a, n), m)| a & m == n & m),
        _ => false,
    }
}

/// The names the server certificate should cover: localhost, the host name (and
/// `name.local`), loopback, the listening address if specific, and the LAN addresses.
fn wanted_names(bound: SocketAddr, lan: &[IpAddr]) -> Vec<SanType> {
    let mut dns = vec!["localhost".to_string()];
    if let Some(h) = crate::netinfo::hostname() {
        let h = h.to_ascii_lowercase();
        if !h.ends_with(".local") && !h.contains('.') {
            dns.push(format!("{h}.local"));
        }
        dns.push(h);
    }
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    if !bound.ip().is_unspecified() {
        ips.push(bound.ip());
    }
    ips.extend(lan.iter().copied());
    ips.dedup();
    let mut out: Vec<SanType> = dns
        .into_iter()
        .filter_map(|d| d.try_into().ok().map(SanType::DnsName))
        .collect();
    out.extend(ips.into_iter().map(SanType::IpAddress));
    out
}

fn san_text(s: &SanType) -> String {
    match s {
        SanType::DnsName(n) => n.as_str().to_string(),
        SanType::IpAddress(ip) => ip.to_string(),
        other => format!("{other:?}"),
    }
}

/// Makes the CA: a new key, name constraints for local names, private ranges and `wanted`
/// (this machine's names and addresses now), valid 10 years. Returns (cert PEM, key PEM,
/// constraints file).
fn make_ca(wanted: &[SanType]) -> Result<(String, String, String), String> {
    let key = KeyPair::generate().map_err(err("key"))?;
    let mut names = String::new();
    for s in SUFFIXES {
        names.push_str(&format!("dns {s}\n"));
    }
    for r in RANGES {
        names.push_str(&format!("ip {r}\n"));
    }
    for w in wanted {
        match w {
            SanType::DnsName(n) if !permitted(w, &subtrees(&names)) => {
                names.push_str(&format!("dns {}\n", n.as_str()));
            }
            SanType::IpAddress(ip) if !permitted(w, &subtrees(&names)) => {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                names.push_str(&format!("ip {ip}/{prefix}\n"));
            }
            _ => {}
        }
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(&key);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: subtrees(&names),
        excluded_subtrees: Vec::new(),
    });
    validity(&mut params, 3650);
    let cert = params.self_signed(&key).map_err(err("authority"))?;
    Ok((cert.pem(), key.serialize_pem(), names))
}

/// Writes `data` to `path` readable by the owner only.
fn write_private(path: &Path, data: &str) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Loads the CA from `<data_dir>/tls/` (making it the first time) and signs a server
/// certificate for the machine's names and addresses now.
pub fn load_or_create(
    data_dir: &Path,
    bound: SocketAddr,
    lan: &[IpAddr],
) -> Result<(crate::tls::Tls, Info), String> {
    let dir = data_dir.join(DIR);
    let (ca_path, key_path, names_path) = (dir.join(CA_CERT), dir.join(CA_KEY), dir.join(CA_NAMES));
    let wanted = wanted_names(bound, lan);
    if !key_path.exists() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (cert, key, names) = make_ca(&wanted)?;
        // The key first: a CA certificate without its key would be useless.
        write_private(&key_path, &key)?;
        write_private(&names_path, &names)?;
        std::fs::write(&ca_path, &cert)
            .map_err(|e| format!("cannot write {}: {e}", ca_path.display()))?;
        tracing::info!(dir = %dir.display(), "made a certificate authority for --tls-self-signed");
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            format!(
                "cannot read {} ({e}); delete {} to make a new certificate authority",
                p.display(),
                dir.display()
            )
        })
    };
    let ca_pem = read(&ca_path)?;
    let key = KeyPair::from_pem(&read(&key_path)?).map_err(err("reading the CA key"))?;
    let allowed = subtrees(&read(&names_path)?);
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;

    let (covered, left_out): (Vec<SanType>, Vec<SanType>) =
        wanted.into_iter().partition(|s| permitted(s, &allowed));
    if !left_out.is_empty() {
        tracing::warn!(
            "the certificate authority in {} does not cover {}; delete that directory to make a new one (devices must then trust it again)",
            dir.display(),
            left_out.iter().map(san_text).collect::<Vec<_>>().join(", ")
        );
    }
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = ca_name(&key);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let issuer = Issuer::new(ca_params, &key);

    let leaf_key = KeyPair::generate().map_err(err("key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "chatd");
    dn.push(
        DnType::CommonName,
        covered
            .first()
            .map(san_text)
            .unwrap_or_else(|| "chatd".into()),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = covered.clone();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    // Apple platforms refuse server certificates valid for more than 398 days.
    validity(&mut params, 397);
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .map_err(err("server certificate"))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let tls = crate::tls::Tls::from_der(vec![leaf.der().clone(), ca_der.clone()], key_der)?;
    Ok((
        tls,
        Info {
            ca_path,
            fingerprint: fingerprint(ca_der.as_ref()),
            ca_der: ca_der.to_vec(),
            names: covered.iter().map(san_text).collect(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_cover_local_names_and_private_ranges_only() {
        let mut names = String::new();
        for s in SUFFIXES {
            names.push_str(&format!("dns {s}\n"));
        }
        for r in RANGES {
            names.push_str(&format!("ip {r}\n"));
        }
        let allowed = subtrees(&names);
        let dns = |n: &str| SanType::DnsName(n.to_string().try_into().unwrap());
        let ip = |a: &str| SanType::IpAddress(a.parse().unwrap());
        for ok in [
            dns("localhost"),
            dns("pi.local"),
            dns("chat.home.arpa"),
            ip("192.168.1.20"),
            ip("10.1.2.3"),
            ip("fd00::1"),
            ip("::1"),
        ] {
            assert!(permitted(&ok, &allowed), "{ok:?}");
        }
        for no in [
            dns("example.com"),
            dns("bank.example"),
            dns("evillocal"),
            ip("8.8.8.8"),
            ip("2001:db8::1"),
        ] {
            assert!(!permitted(&no, &allowed), "{no:?}");
        }
    }
}
