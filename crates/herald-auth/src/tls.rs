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

/// The rustls server configuration for a certificate chain and key in PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
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
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
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
}
