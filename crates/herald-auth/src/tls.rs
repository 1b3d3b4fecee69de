//! TLS for every listener: loading an operator's certificate and key (PEM), and generating a
//! development CA and server certificate (`herald cert dev`, or on the first start of a server
//! with a TLS listener and no certificate configured). rustls with the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Makes ring the process's TLS provider, for code that builds TLS clients without naming one
/// (reqwest). Idempotent: a provider already installed stays.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a development certificate was written.
#[derive(Debug, Clone)]
pub struct DevCert {
    /// The CA certificate clients should trust (`ssl_cafile`, `ssl.ca.location`).
    pub ca: PathBuf,
    /// The server's certificate chain (server certificate, then the CA).
    pub cert: PathBuf,
    /// The server's private key (mode 0600).
    pub key: PathBuf,
}

impl DevCert {
    /// The file names used inside a directory.
    pub fn in_dir(dir: &Path) -> DevCert {
        DevCert {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    pub fn exists(&self) -> bool {
        self.ca.is_file() && self.cert.is_file() && self.key.is_file()
    }
}

/// Whether a TLS listener asks clients for certificates (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates.
    #[default]
    None,
    /// Clients may present one; those that do are the principal it names.
    Requested,
    /// Clients must present one signed by the client CA.
    Required,
}

/// The principal a client certificate stands for: `CN` of its subject (as Kafka's
/// `ssl.principal.mapping.rules = RULE:^CN=(.*?),.*$/$1/`), or the whole subject if it has none.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let name = cn.unwrap_or_else(|| subject.to_string());
    (!name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)).then_some(name)
}

/// The rustls server configuration for a certificate chain and key in PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    server_config_with_clients(cert, key, None, ClientAuth::None)
}

/// [`server_config`], verifying client certificates against the CAs in `client_ca` when
/// `client_auth` asks for them.
pub fn server_config_with_clients(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {} holds no CERTIFICATE block",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("TLS private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (client_auth, client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(
                "tls.client_auth needs tls.client_ca, the CA that signs client certificates".into(),
            );
        }
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read the client CA {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("client CA {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if mode == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client CA {}: {e}", ca.display()))?,
            )
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate {} and its key: {e}", cert.display()))?;
    Ok(Arc::new(config))
}

/// The names a development certificate is valid for: localhost, the loopback addresses, this
/// machine's host name, and `extra`.
pub fn dev_hosts(extra: &[String]) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            hosts.push(h.to_owned());
        }
    }
    for h in extra {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    hosts
}

/// Generates a development CA and a server certificate for `hosts` (signed by that CA), writing
/// `ca.pem`, `cert.pem` and `key.pem` into `dir`. Valid for about ten years; for development
/// only — the CA key is not kept, so nothing else can be signed with it.
pub fn generate_dev(dir: &Path, hosts: &[String]) -> Result<DevCert, String> {
    generate_dev_with_clients(dir, hosts, &[])
}

/// [`generate_dev`], also writing a client certificate `client-NAME.pem` with its key
/// `client-NAME-key.pem` for each of `clients` (subject `CN=NAME`, for mTLS listeners).
pub fn generate_dev_with_clients(
    dir: &Path,
    hosts: &[String],
    clients: &[String],
) -> Result<DevCert, String> {
    for c in clients {
        if c.is_empty()
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        {
            return Err(format!(
                "client name {c:?} must be letters, digits, - _ . or @"
            ));
        }
    }
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| format!("generating a development certificate: {e}");
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(3650);
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Herald development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(err)?;
    let mut leaf = CertificateParams::new(hosts.to_vec()).map_err(err)?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("localhost", |h| h.as_str()),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = until;
    let cert = leaf.signed_by(&key, &issuer).map_err(err)?;
    let mut client_certs = Vec::new();
    for name in clients {
        let ckey = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = now - time::Duration::days(1);
        p.not_after = until;
        let c = p.signed_by(&ckey, &issuer).map_err(err)?;
        client_certs.push((name, c.pem(), ckey.serialize_pem()));
    }

    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = DevCert::in_dir(dir);
    let write = |path: &Path, text: &str, private: bool| -> Result<(), String> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        opts.open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&out.ca, &ca_cert.pem(), false)?;
    write(
        &out.cert,
        &format!("{}{}", cert.pem(), ca_cert.pem()),
        false,
    )?;
    write(&out.key, &key.serialize_pem(), true)?;
    for (name, cert, key) in client_certs {
        write(&dir.join(format!("client-{name}.pem")), &cert, false)?;
        write(&dir.join(format!("client-{name}-key.pem")), &key, true)?;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let dev = generate_dev(dir.path(), &dev_hosts(&["herald.test".into()])).unwrap();
        assert!(dev.exists());
        assert!(server_config(&dev.cert, &dev.key).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dev.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        }
        let e = server_config(&dir.path().join("missing.pem"), &dev.key).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let e = server_config(&dev.key, &dev.key).unwrap_err();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        let e = server_config(&dev.cert, &dev.cert).unwrap_err();
        assert!(e.contains("private key"), "{e}");
    }

    #[test]
    fn client_certificates_name_their_principal() {
        let dir = tempfile::tempdir().unwrap();
        let dev =
            generate_dev_with_clients(dir.path(), &dev_hosts(&[]), &["svc-a".into()]).unwrap();
        let pem = dir.path().join("client-svc-a.pem");
        let cert = CertificateDer::from_pem_file(&pem).unwrap();
        assert_eq!(principal_of(&cert).as_deref(), Some("svc-a"));
        let server = CertificateDer::from_pem_file(&dev.cert).unwrap();
        assert_eq!(principal_of(&server).as_deref(), Some("localhost"));
        assert!(
            server_config_with_clients(&dev.cert, &dev.key, Some(&dev.ca), ClientAuth::Required)
                .is_ok()
        );
        let e = server_config_with_clients(&dev.cert, &dev.key, None, ClientAuth::Required)
            .unwrap_err();
        assert!(e.contains("client_ca"), "{e}");
        assert!(generate_dev_with_clients(dir.path(), &[], &["a b".into()]).is_err());
        assert_eq!(principal_of(&CertificateDer::from(vec![1u8, 2, 3])), None);
    }
}
