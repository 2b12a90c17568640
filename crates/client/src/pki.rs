//! The cluster's public-key infrastructure, as kubeadm lays it out: one CA
//! (kept when it already exists, so generating again re-issues certificates
//! without invalidating anything), the apiserver's serving certificate and
//! its client certificate towards kubelets (`apiserver-kubelet-client`),
//! and a client certificate plus a client config file for each component
//! and for an administrator. Kubernetes maps a client certificate's CN to the
//! user and its O entries to groups; the names below are the ones the
//! default RBAC roles are bound to. Used by `rkubectl certs generate` and by
//! the apiserver when it creates its PKI at first start.

use crate::ClientConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// What went wrong, naming the file or certificate and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(pub String);

/// The cluster CA named by the signing flags (`--cluster-signing-cert-file`,
/// `--cluster-signing-key-file`): its certificate's PEM and an issuer over its key,
/// for the apiserver's node-certificate call and the controller-manager's csrsigning
/// loop alike. Errors name the flag, the file and what is wrong with it.
pub fn load_signing_ca(cert: &Path, key: &Path) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    let read = |flag: &str, p: &Path| {
        std::fs::read_to_string(p).map_err(|e| PkiError(format!("cannot read {flag} {}: {e}", p.display())))
    };
    let ca_pem = read("--cluster-signing-cert-file", cert)?;
    let key_pem = read("--cluster-signing-key-file", key)?;
    let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| {
        PkiError(format!(
            "--cluster-signing-key-file {}: not a PEM private key: {e}",
            key.display()
        ))
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key_pair).map_err(|e| {
        PkiError(format!(
            "--cluster-signing-cert-file {}: not a PEM CA certificate: {e}",
            cert.display()
        ))
    })?;
    Ok((ca_pem, issuer))
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct PkiRequest {
    /// Where the files go (created if missing).
    pub dir: PathBuf,
    /// Extra names or IP addresses of the apiserver (localhost and
    /// 127.0.0.1 are always included).
    pub apiserver_sans: Vec<String>,
    /// Nodes to issue kubelet client certificates for.
    pub nodes: Vec<String>,
    /// The apiserver URL written into the client config files.
    pub apiserver_url: String,
    /// Lifetime of the issued (non-CA) certificates, in days.
    pub validity_days: i64,
}

/// The apiserver's identity when it calls kubelets (logs, exec, metrics):
/// `apiserver-kubelet-client.crt/.key`, CN `kube-apiserver-kubelet-client`,
/// O `system:masters`, as kubeadm issues it. Kubelets serving TLS admit
/// this user (or the group) and no one else.
pub const APISERVER_KUBELET_CLIENT_STEM: &str = "apiserver-kubelet-client";
pub const APISERVER_KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
pub const MASTERS_GROUP: &str = "system:masters";

/// A client identity the command issues: file stem, user (CN), groups (O).
pub fn client_identities(nodes: &[String]) -> Vec<(String, String, Vec<String>)> {
    let mut ids = vec![
        (
            "admin".to_string(),
            "admin".to_string(),
            vec!["system:masters".to_string()],
        ),
        ("kube-scheduler".into(), "system:kube-scheduler".into(), vec![]),
        (
            "kube-controller-manager".into(),
            "system:kube-controller-manager".into(),
            vec![],
        ),
        ("kube-proxy".into(), "system:kube-proxy".into(), vec![]),
        ("rkube-ingress".into(), "system:rkube-ingress".into(), vec![]),
        (
            "cloud-controller-manager".into(),
            "system:cloud-controller-manager".into(),
            vec![],
        ),
    ];
    for n in nodes {
        ids.push((
            format!("node-{n}"),
            format!("system:node:{n}"),
            vec!["system:nodes".into()],
        ));
    }
    ids
}

fn err(path: &Path, what: impl std::fmt::Display) -> PkiError {
    PkiError(format!("{}: {what}", path.display()))
}

/// The cluster CA: loaded from `dir/ca.crt` + `dir/ca.key`, or created.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), PkiError> {
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if crt.exists() && key.exists() {
            let key_pem = std::fs::read_to_string(&key).map_err(|e| err(&key, e))?;
            let key_pair =
                KeyPair::from_pem(&key_pem).map_err(|e| err(&key, format!("not a PEM private key: {e}")))?;
            let crt_pem = std::fs::read_to_string(&crt).map_err(|e| err(&crt, e))?;
            let issuer = Issuer::from_ca_cert_pem(&crt_pem, key_pair)
                .map_err(|e| err(&crt, format!("not a PEM CA certificate: {e}")))?;
            return Ok((CertificateAuthority { issuer }, false));
        }
        if crt.exists() != key.exists() {
            return Err(PkiError(format!(
                "{} has only one of ca.crt and ca.key: restore the other or remove both to create a new CA",
                dir.display()
            )));
        }
        let key_pair = KeyPair::generate().map_err(|e| PkiError(format!("generating the CA key: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("rkube-ca", &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| PkiError(format!("signing the CA certificate: {e}")))?;
        write_file(&crt, cert.pem().as_bytes(), 0o644)?;
        write_file(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
        Ok((
            CertificateAuthority {
                issuer: Issuer::new(params, key_pair),
            },
            true,
        ))
    }

    /// Issues a certificate; returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        common_name: &str,
        organizations: &[String],
        sans: &[String],
        server: bool,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, String), PkiError> {
        let usage = if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        };
        self.issue_for(
            common_name,
            organizations,
            sans,
            vec![usage],
            not_before,
            not_after,
        )
    }

    /// Issues a certificate good both for serving and as a client, as an etcd member's
    /// peer certificate must be (it answers its peers and dials them with the same one).
    pub fn issue_peer(
        &self,
        common_name: &str,
        sans: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, String), PkiError> {
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue_for(common_name, &[], sans, usages, not_before, not_after)
    }

    fn issue_for(
        &self,
        common_name: &str,
        organizations: &[String],
        sans: &[String],
        usages: Vec<ExtendedKeyUsagePurpose>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, String), PkiError> {
        let fail = |e: rcgen::Error| PkiError(format!("issuing the certificate of {common_name}: {e}"));
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name, organizations);
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName).map_err(|_| {
                    PkiError(format!(
                        "--apiserver-san {s:?} is neither an IP address nor a DNS name"
                    ))
                }),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn dn(cn: &str, orgs: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// Reads the PEM file `path` that `what` (a flag, a config key) names;
/// the errors say which and why.
pub fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, PkiError> {
    let bytes =
        std::fs::read(path).map_err(|e| PkiError(format!("cannot read {what} {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(PkiError(format!("{what} {}: not a PEM file", path.display())));
    }
    Ok(bytes)
}

/// The identity a DER certificate carries as Kubernetes reads client
/// certificates: the subject's CommonName (the user; `None` when absent
/// or empty) and its Organizations (the groups). The error says why it
/// cannot be parsed.
pub fn certificate_subject(der: &[u8]) -> Result<(Option<String>, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot be parsed: {e}"))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok((user, groups))
}

/// How long before a certificate expires the daemons and rkubectl start
/// warning (kubeadm's `certs check-expiration` shows the same horizon).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A warning for each certificate in the PEM `bytes` (`what`, naming the file
/// or flag) that expires within [`EXPIRY_WARNING_DAYS`] of `now` or has
/// expired, saying when and what to do; nothing for the others.
pub fn expiry_warnings(what: &str, bytes: &[u8], now: OffsetDateTime) -> Vec<String> {
    let mut warnings = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes).flatten() {
        let Ok(cert) = pem.parse_x509() else { continue };
        let not_after = cert.validity().not_after.timestamp();
        let Ok(at) = OffsetDateTime::from_unix_timestamp(not_after) else {
            continue;
        };
        let left = at - now;
        if left > Duration::days(EXPIRY_WARNING_DAYS) {
            continue;
        }
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string();
        let when = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| at.to_string());
        let fix =
            "renew it (`rkubectl certs renew`, see the README's Security section) and restart what uses it";
        warnings.push(if left <= Duration::ZERO {
            format!("{what} (CN {cn:?}) expired at {when}: {fix}")
        } else {
            format!(
                "{what} (CN {cn:?}) expires at {when}, in {} days: {fix}",
                left.whole_days()
            )
        });
    }
    warnings
}

/// [`expiry_warnings`] for a file; one that cannot be read gives none (its
/// users report that themselves).
pub fn file_expiry_warnings(what: &str, path: &Path, now: OffsetDateTime) -> Vec<String> {
    match std::fs::read(path) {
        Ok(bytes) => expiry_warnings(&format!("{what} {}", path.display()), &bytes, now),
        Err(_) => Vec::new(),
    }
}

/// Logs `check()`'s warnings now and then once a day while the runtime
/// runs: a daemon's certificates are files an operator renews in place, so
/// each look reads them again.
pub fn log_warnings_daily(check: impl Fn() -> Vec<String> + Send + 'static) {
    for w in check() {
        tracing::warn!("{w}");
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
                for w in check() {
                    tracing::warn!("{w}");
                }
            }
        });
    }
}

/// A daemon's client config: its client certificate and cluster CA, checked daily.
pub fn log_expiry_daily(config: ClientConfig) {
    log_warnings_daily(move || config.certificate_warnings());
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| err(path, format!("cannot write: {e}")))?;
    f.write_all(bytes)
        .map_err(|e| err(path, format!("cannot write: {e}")))?;
    Ok(())
}

/// The key that signs ServiceAccount tokens, in a PKI directory (kubeadm
/// calls it the same); the apiserver's `--service-account-signing-key-file`.
pub const SERVICE_ACCOUNT_KEY: &str = "sa.key";

/// Creates `DIR/sa.key` (ECDSA P-256, PKCS#8 PEM, mode 0600) unless it
/// exists: tokens signed before a restart stay valid because the key is
/// kept. Returns whether it was created.
pub fn ensure_service_account_key(dir: &Path) -> Result<bool, PkiError> {
    let path = dir.join(SERVICE_ACCOUNT_KEY);
    if path.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError(format!("generating the ServiceAccount token signing key: {e}")))?;
    write_file(&path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(true)
}

/// Writes every file; returns their paths (the CA only when created).
pub fn generate(args: &PkiRequest) -> Result<Vec<PathBuf>, PkiError> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    if args.validity_days <= 0 {
        return Err(PkiError("--validity-days must be at least 1".into()));
    }
    let (ca, created) = CertificateAuthority::load_or_create(dir)?;
    let mut written = Vec::new();
    if created {
        written.extend([dir.join("ca.crt"), dir.join("ca.key")]);
    }
    if ensure_service_account_key(dir)? {
        written.push(dir.join(SERVICE_ACCOUNT_KEY));
    }
    let now = OffsetDateTime::now_utc();
    let (from, until) = (now - Duration::hours(1), now + Duration::days(args.validity_days));
    // Loopback, and what pods call the API at, as Kubernetes' serving certificate has it:
    // the `kubernetes` Service's names and its address in the default service range
    // (10.96.0.1; another range needs its first address as an --apiserver-san).
    let mut sans: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
    ]
    .map(String::from)
    .to_vec();
    sans.extend(args.apiserver_sans.iter().filter(|s| !s.is_empty()).cloned());
    sans.dedup();
    let (crt, key) = ca.issue("rkube-apiserver", &[], &sans, true, from, until)?;
    for (name, bytes, mode) in [("apiserver.crt", crt, 0o644), ("apiserver.key", key, 0o600)] {
        write_file(&dir.join(name), bytes.as_bytes(), mode)?;
        written.push(dir.join(name));
    }
    // The apiserver's client certificate towards kubelets: no client
    // config file, the apiserver takes it with --kubelet-client-certificate.
    let (crt, key) = ca.issue(
        APISERVER_KUBELET_CLIENT_USER,
        &[MASTERS_GROUP.to_string()],
        &[],
        false,
        from,
        until,
    )?;
    for (ext, bytes, mode) in [("crt", crt, 0o644), ("key", key, 0o600)] {
        let path = dir.join(format!("{APISERVER_KUBELET_CLIENT_STEM}.{ext}"));
        write_file(&path, bytes.as_bytes(), mode)?;
        written.push(path);
    }
    for (stem, user, groups) in client_identities(&args.nodes) {
        let (crt, key) = ca.issue(&user, &groups, &[], false, from, until)?;
        let (crt_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        write_file(&crt_path, crt.as_bytes(), 0o644)?;
        write_file(&key_path, key.as_bytes(), 0o600)?;
        // Paths relative to the config file, so the directory can move.
        let config = ClientConfig {
            server: args.apiserver_url.clone(),
            certificate_authority: Some(PathBuf::from("ca.crt")),
            client_certificate: Some(PathBuf::from(format!("{stem}.crt"))),
            client_key: Some(PathBuf::from(format!("{stem}.key"))),
            ..ClientConfig::default()
        };
        let conf = dir.join(format!("{stem}.conf"));
        // a standard kubeconfig: rkube's programs and kubectl both read it
        crate::kubeconfig::Kubeconfig::single("rkube", &config)
            .save(&conf)
            .map_err(|e| PkiError(format!("writing the client config: {e}")))?;
        written.extend([crt_path, key_path, conf]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_within_30_days_of_expiry_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let issue = |cn: &str, days: i64| {
            ca.issue(
                cn,
                &[],
                &[],
                false,
                now - Duration::days(400),
                now + Duration::days(days),
            )
            .unwrap()
            .0
        };
        let soon = issue("soon", 12);
        let warnings = expiry_warnings("the client certificate admin.crt", soon.as_bytes(), now);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("the client certificate admin.crt (CN \"soon\") expires at ")
                && warnings[0].contains(", in 11 days: renew it (`rkubectl certs renew`"),
            "{}",
            warnings[0]
        );
        assert!(expiry_warnings("x", issue("later", 31).as_bytes(), now).is_empty());
        let gone = expiry_warnings("x", issue("gone", -1).as_bytes(), now);
        assert!(gone[0].starts_with("x (CN \"gone\") expired at "), "{gone:?}");
        // a bundle: each certificate on its own; the 10-year CA is not
        let bundle = format!(
            "{soon}{}",
            std::fs::read_to_string(dir.path().join("ca.crt")).unwrap()
        );
        assert_eq!(expiry_warnings("bundle", bundle.as_bytes(), now).len(), 1);
        // a file names itself; one that cannot be read gives nothing (its user says why)
        std::fs::write(dir.path().join("soon.crt"), &soon).unwrap();
        let from_file = file_expiry_warnings("--tls-cert-file", &dir.path().join("soon.crt"), now);
        assert!(from_file[0].starts_with(&format!("--tls-cert-file {}/soon.crt", dir.path().display())));
        assert!(file_expiry_warnings("x", &dir.path().join("missing.crt"), now).is_empty());
        // a client config: its client certificate and its CA
        let config = ClientConfig {
            certificate_authority: Some(dir.path().join("ca.crt")),
            client_certificate_data: Some(soon.into_bytes()),
            ..ClientConfig::default()
        };
        let w = config.certificate_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("the client certificate (CN \"soon\")"), "{w:?}");
    }

    #[test]
    fn generate_writes_the_apiserver_kubelet_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(&PkiRequest {
            dir: dir.path().to_path_buf(),
            apiserver_sans: vec![],
            nodes: vec!["n1".into()],
            apiserver_url: "https://127.0.0.1:6443".into(),
            validity_days: 1,
        })
        .unwrap();
        let crt = dir.path().join("apiserver-kubelet-client.crt");
        let key = dir.path().join("apiserver-kubelet-client.key");
        assert!(written.contains(&crt) && written.contains(&key), "{written:?}");
        // the apiserver does not talk to itself: no client config for it
        assert!(!dir.path().join("apiserver-kubelet-client.conf").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let pem = std::fs::read(&crt).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let (cn, o) = certificate_subject(&pem.contents).unwrap();
        assert_eq!(cn.as_deref(), Some("kube-apiserver-kubelet-client"));
        assert_eq!(o, ["system:masters"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }
}
