//! push and pull against a registry that speaks HTTPS: Debian's `docker-registry` (distribution
//! 2.8.2) with a certificate from a throwaway CA made with `openssl`. Trust comes from `--cert-dir`,
//! `$SSL_CERT_FILE` or nowhere (`--tls-verify=false`); a client certificate from `--cert-dir`.
use crate::harness::*;
use crate::registry::{free_port, registry_installed, serve_registry};

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// Runs openssl, panicking with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A throwaway CA (`<name>-ca.crt`, `<name>-ca.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=kiln test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.crt"),
        ],
    );
    dir.join(format!("{name}-ca.crt"))
}

/// A certificate `<name>.crt` + key `<name>.key` signed by CA `ca`, for a server at IP `ip` or,
/// without one, for a client.
fn make_leaf(dir: &Path, ca: &str, name: &str, ip: Option<IpAddr>) -> (PathBuf, PathBuf) {
    let (key, csr, crt, ext) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    let extensions = match ip {
        Some(ip) => format!("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip}\n"),
        None => "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n".to_string(),
    };
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}-ca.crt"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    (dir.join(crt), dir.join(key))
}

/// A directory for `--cert-dir` holding `files` (name, source).
fn cert_dir(parent: &Path, name: &str, files: &[(&str, &Path)]) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    for (file, source) in files {
        std::fs::copy(source, dir.join(file)).unwrap();
    }
    dir
}

/// A registry serving HTTPS with a certificate for its IP from CA `server`; killed on drop.
struct TlsRegistry {
    child: Child,
    ip: IpAddr,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRegistry {
    /// The registry on `ip`, with its CA `server-ca.crt` in `self.pki()`; with `client_ca`, it
    /// asks for a client certificate signed by that CA. None (with a message) when docker-registry
    /// or openssl is missing.
    fn start(ip: IpAddr, client_ca: bool) -> Option<TlsRegistry> {
        if !registry_installed() || !have_tool("openssl") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        make_ca(&pki, "server");
        let (crt, key) = make_leaf(&pki, "server", "registry", Some(ip));
        let client_yaml = if client_ca {
            let ca = make_ca(&pki, "client");
            format!("    clientcas:\n      - {}\n", ca.display())
        } else {
            String::new()
        };
        let port = free_port(ip);
        let tls_yaml = format!("  tls:\n    certificate: {}\n    key: {}\n{client_yaml}", crt.display(), key.display());
        let child = serve_registry(dir.path(), ip, port, &tls_yaml, "");
        Some(TlsRegistry { child, ip, port, dir })
    }

    /// Where the CAs and certificates are.
    fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    fn host(&self) -> String {
        match self.ip {
            IpAddr::V4(v4) => format!("{v4}:{}", self.port),
            IpAddr::V6(v6) => format!("[{v6}]:{}", self.port),
        }
    }

    fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// Repositories the registry stores (none before a push got through).
    fn repositories(&self) -> Vec<String> {
        let dir = self.dir.path().join("data/docker/registry/v2/repositories");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kiln with its own DOCKER_CONFIG and no inherited trust settings; `env` is added.
fn run(kiln: &Kiln, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = kiln.cmd(args);
    cmd.env("DOCKER_CONFIG", kiln.path("docker-config")).env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().expect("run kiln")
}

fn ok(kiln: &Kiln, args: &[&str], env: &[(&str, &Path)]) -> String {
    expect_success(args, run(kiln, args, env))
}

/// Asserts failure and returns stderr.
fn fails(kiln: &Kiln, args: &[&str], env: &[(&str, &Path)]) -> String {
    expect_failure(args, run(kiln, args, env))
}

/// One stderr line that names the registry and says the certificate is not trusted.
fn assert_untrusted(stderr: &str, registry: &TlsRegistry) {
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(&registry.host()), "registry not named: {stderr}");
    assert!(stderr.contains("certificate not trusted"), "{stderr}");
    assert!(stderr.contains("--tls-verify=false"), "no fix offered: {stderr}");
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[test]
fn registry_tls_cert_dir_with_the_ca_pushes_and_pulls_the_same_image() {
    let Some(registry) = TlsRegistry::start(LOOPBACK, false) else { return };
    let kiln = Kiln::new();
    let certs = cert_dir(kiln.dir.path(), "certs", &[("ca.crt", &registry.pki().join("server-ca.crt"))]);
    let certs = certs.to_str().unwrap();
    let reference = registry.reference("kiln/busybox:1");
    let id = kiln.import_busybox(&reference);

    // Without a certs directory a loopback registry is plain HTTP, which this one refuses.
    let stderr = fails(&kiln, &["push", &reference], &[]);
    assert!(stderr.contains(&registry.host()) && stderr.contains("HTTPS") && stderr.contains("--cert-dir"), "{stderr}");
    assert!(registry.repositories().is_empty());

    let pushed = ok(&kiln, &["push", "--cert-dir", certs, &reference], &[]);
    assert!(pushed.contains(": Pushed") && pushed.contains(": digest: sha256:"), "{pushed}");
    assert_eq!(registry.repositories(), ["kiln"]);
    let found = ok(&kiln, &["search", "--cert-dir", certs, &format!("{}/busy", registry.host())], &[]);
    assert!(found.contains(&registry.reference("kiln/busybox")), "{found}");

    ok(&kiln, &["rmi", &reference], &[]);
    let pulled = ok(&kiln, &["pull", "--cert-dir", certs, &reference], &[]);
    assert!(pulled.contains(": Pull complete"), "{pulled}");
    assert_eq!(kiln.image_id(&reference), id);
    kiln.assert_fsck_clean();
}

#[test]
fn registry_tls_cert_dir_with_another_ca_is_refused_in_one_line() {
    let Some(registry) = TlsRegistry::start(LOOPBACK, false) else { return };
    let kiln = Kiln::new();
    let other_ca = make_ca(kiln.dir.path(), "other");
    let certs = cert_dir(kiln.dir.path(), "certs", &[("ca.crt", &other_ca)]);
    let reference = registry.reference("kiln/busybox:1");
    kiln.import_busybox(&reference);

    let out = run(&kiln, &["push", "--cert-dir", certs.to_str().unwrap(), &reference], &[]);
    assert_ne!(out.status.code(), Some(0), "push succeeded: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_untrusted(&stderr, &registry);
    assert!(stderr.contains(certs.to_str().unwrap()), "the fix names the cert dir: {stderr}");
    assert!(registry.repositories().is_empty(), "{:?}", registry.repositories());

    // Pull says the same; garbage in the cert dir is an error naming the file.
    let stderr = fails(&kiln, &["pull", "--cert-dir", certs.to_str().unwrap(), &reference], &[]);
    assert_untrusted(&stderr, &registry);
    std::fs::write(certs.join("junk.crt"), "not a certificate\n").unwrap();
    let stderr = fails(&kiln, &["push", "--cert-dir", certs.to_str().unwrap(), &reference], &[]);
    assert!(stderr.contains(&certs.join("junk.crt").display().to_string()), "{stderr}");
    assert!(registry.repositories().is_empty());
}

#[test]
fn registry_tls_verify_false_reaches_a_tls_registry_without_its_ca() {
    let Some(registry) = TlsRegistry::start(LOOPBACK, false) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("insecure/busybox:1");
    let id = kiln.import_busybox(&reference);
    let pushed = ok(&kiln, &["push", "--tls-verify=false", &reference], &[]);
    assert!(pushed.contains(": Pushed"), "{pushed}");
    assert_eq!(registry.repositories(), ["insecure"]);
    ok(&kiln, &["rmi", &reference], &[]);
    ok(&kiln, &["pull", "--tls-verify=false", &reference], &[]);
    assert_eq!(kiln.image_id(&reference), id);
    kiln.assert_fsck_clean();
}

/// This machine's first non-loopback IPv4 address, from `hostname -I`.
fn own_address() -> Option<IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ip = text
        .split_whitespace()
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback() && TcpListener::bind((*ip, 0)).is_ok());
    if ip.is_none() {
        eprintln!("skipping: no non-loopback IPv4 address to listen on (hostname -I: {:?})", text.trim());
    }
    ip
}

#[test]
fn registry_tls_ssl_cert_file_makes_a_non_loopback_registry_verify() {
    let Some(ip) = own_address() else { return };
    let Some(registry) = TlsRegistry::start(ip, false) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("kiln/busybox:1");
    let id = kiln.import_busybox(&reference);

    // The system's roots do not know this CA.
    let stderr = fails(&kiln, &["push", &reference], &[]);
    assert_untrusted(&stderr, &registry);
    assert!(stderr.contains(&format!("/etc/docker/certs.d/{}/ca.crt", registry.host())), "{stderr}");
    assert!(registry.repositories().is_empty());

    // A bundle holding it (after another CA, as a system bundle would) makes it trusted.
    let other = make_ca(kiln.dir.path(), "other");
    let bundle = kiln.path("bundle.pem");
    let text = std::fs::read_to_string(other).unwrap()
        + &std::fs::read_to_string(registry.pki().join("server-ca.crt")).unwrap();
    std::fs::write(&bundle, text).unwrap();
    let env = [("SSL_CERT_FILE", bundle.as_path())];
    ok(&kiln, &["push", &reference], &env);
    assert_eq!(registry.repositories(), ["kiln"]);
    ok(&kiln, &["rmi", &reference], &[]);
    ok(&kiln, &["pull", &reference], &env);
    assert_eq!(kiln.image_id(&reference), id);
}

#[test]
fn registry_tls_client_certificate_from_cert_dir_is_presented() {
    let Some(registry) = TlsRegistry::start(LOOPBACK, true) else { return };
    let kiln = Kiln::new();
    let pki = registry.pki();
    let (client_crt, client_key) = make_leaf(&pki, "client", "client", None);
    let server_ca = pki.join("server-ca.crt");
    let reference = registry.reference("mtls/busybox:1");
    let id = kiln.import_busybox(&reference);

    // Without a client certificate the registry ends the handshake.
    let no_client = cert_dir(kiln.dir.path(), "ca-only", &[("ca.crt", &server_ca)]);
    let stderr = fails(&kiln, &["push", "--cert-dir", no_client.to_str().unwrap(), &reference], &[]);
    assert!(stderr.contains(&registry.host()) && stderr.contains("refused the TLS client certificate"), "{stderr}");
    assert!(stderr.contains("client.cert") && stderr.contains(no_client.to_str().unwrap()), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(registry.repositories().is_empty());

    // A key that is not the certificate's: an error naming the certificate, not a crash.
    let (_, stray_key) = make_leaf(&pki, "client", "stray", None);
    let mismatched = cert_dir(
        kiln.dir.path(),
        "mismatched",
        &[("ca.crt", &server_ca), ("client.cert", &client_crt), ("client.key", &stray_key)],
    );
    let out = run(&kiln, &["push", "--cert-dir", mismatched.to_str().unwrap(), &reference], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(&mismatched.join("client.cert").display().to_string()), "{stderr}");

    let certs = cert_dir(
        kiln.dir.path(),
        "certs",
        &[("ca.crt", &server_ca), ("client.cert", &client_crt), ("client.key", &client_key)],
    );
    let certs = certs.to_str().unwrap();
    ok(&kiln, &["push", "--cert-dir", certs, &reference], &[]);
    assert_eq!(registry.repositories(), ["mtls"]);
    ok(&kiln, &["rmi", &reference], &[]);
    ok(&kiln, &["pull", "--cert-dir", certs, &reference], &[]);
    assert_eq!(kiln.image_id(&reference), id);
}

#[test]
fn registry_tls_insecure_registries_and_an_https_mirror_from_the_config_file() {
    let Some(registry) = TlsRegistry::start(LOOPBACK, false) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("library/busybox:latest");
    let id = kiln.import_busybox(&reference);
    // Not listed: refused as without --tls-verify=false.
    let err = fails(&kiln, &["push", &reference], &[]);
    assert!(err.contains(&registry.host()) && err.contains("HTTPS"), "{err}");
    // insecure-registries (a CIDR range holding its address) is --tls-verify=false for it.
    std::fs::write(kiln.config_path(), r#"{"insecure-registries": ["127.0.0.0/8"]}"#).unwrap();
    let pushed = ok(&kiln, &["push", &reference], &[]);
    assert!(pushed.contains(": Pushed"), "{pushed}");

    // The same registry as an https:// docker.io mirror: trusted only through the config.
    let other = Kiln::new();
    let mirror = format!("https://{}", registry.host());
    std::fs::write(other.config_path(), serde_json::json!({"registry-mirrors": [mirror]}).to_string()).unwrap();
    let err = fails(&other, &["pull", "-q", "busybox"], &[]);
    assert!(err.contains("after the mirrors failed") && err.contains("invalid peer certificate"), "{err}");
    let config = serde_json::json!({"registry-mirrors": [mirror], "insecure-registries": [registry.host()]});
    std::fs::write(other.config_path(), config.to_string()).unwrap();
    ok(&other, &["pull", "-q", "busybox"], &[]);
    assert_eq!(other.image_id("busybox"), id);
    other.assert_fsck_clean();
}
