//! A blocking client for the OCI distribution API over `ureq`: the `/v2/` ping, manifests, blobs
//! (GET with redirects and resume, HEAD, chunked upload) and the auth flow.
//!
//! Every response is untrusted: bodies are read through limits, error bodies are cut at 64 KiB,
//! and credentials go only to the registry host itself (and its token realm), never to the host a
//! blob download is redirected to.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ureq::http::{Response, StatusCode};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::Body;

use super::auth::{Challenge, Credentials};
use super::RegistryError;
use crate::{Digest, Error, Result};

/// Manifests and indexes larger than this are refused (containerd uses about the same).
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// Error bodies are read up to this much, then cut.
pub const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// Token responses are small JSON documents.
const TOKEN_LIMIT: u64 = 1 << 20;
const MAX_REDIRECTS: usize = 10;
/// Attempts for an idempotent request that fails with a connection error, 5xx, 408 or 429.
const MAX_ATTEMPTS: u32 = 5;
/// Upload chunk: one PATCH each, held in memory while it is sent.
pub const UPLOAD_CHUNK: usize = 16 << 20;

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The environment variable that sets every network timeout of a registry client, in seconds.
pub const TIMEOUT_ENV: &str = "KILN_NET_TIMEOUT";

/// How long a registry connection may take to do anything. Every request has all of them; a
/// request that runs out is retried like a dropped connection, then reported with the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Setting up a connection (TCP and TLS).
    pub connect: Duration,
    /// Between two reads or two writes that make progress: a registry (or proxy) that stops
    /// reading an upload or stops sending a body is given up on after this long.
    pub idle: Duration,
    /// From the end of the request to the end of the response headers.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { connect: Duration::from_secs(30), idle: Duration::from_secs(60), response: Duration::from_secs(120) }
    }
}

impl Timeouts {
    /// The defaults, or `$KILN_NET_TIMEOUT` seconds (`30`, `0.5`) for every one of them.
    pub fn from_env() -> Result<Timeouts> {
        match std::env::var_os(TIMEOUT_ENV) {
            None => Ok(Timeouts::default()),
            Some(value) => Timeouts::parse(&value.to_string_lossy()),
        }
    }

    fn parse(text: &str) -> Result<Timeouts> {
        let what = format!("{TIMEOUT_ENV}={}", cut(text, 40));
        let seconds: f64 = text
            .trim()
            .trim_end_matches('s')
            .parse()
            .map_err(|_| Error::invalid(what.clone(), "not a number of seconds (such as 30 or 0.5)"))?;
        if !seconds.is_finite() || !(0.001..=86_400.0).contains(&seconds) {
            return Err(Error::invalid(what, "the timeout must be between 0.001 and 86400 seconds"));
        }
        let limit = Duration::from_secs_f64(seconds);
        Ok(Timeouts { connect: limit, idle: limit, response: limit })
    }

    /// What ran out, for the one line that reports it.
    fn describe(&self, timeout: ureq::Timeout) -> String {
        use ureq::Timeout as T;
        let secs = |d: Duration| format!("{} s", (d.as_secs_f64() * 1000.0).round() / 1000.0);
        let what = match timeout {
            T::Connect | T::Resolve => format!("could not connect within {} (connect timeout", secs(self.connect)),
            T::PerWrite | T::SendRequest | T::SendBody | T::Await100 => {
                format!("the server read nothing for {} (idle timeout", secs(self.idle))
            }
            T::PerRead | T::RecvBody => format!("the server sent nothing for {} (idle timeout", secs(self.idle)),
            T::RecvResponse => format!("no response within {} (response timeout", secs(self.response)),
            other => format!("the {other} limit ran out (timeout"),
        };
        format!("timed out: {what}, set by {TIMEOUT_ENV})")
    }

    /// An I/O error while a body was read or written, with a timeout named as one.
    fn describe_io(&self, e: &io::Error) -> String {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
            Some(ureq::Error::Timeout(timeout)) => self.describe(*timeout),
            Some(ureq::Error::Io(io)) => io.to_string(),
            Some(other) => other.to_string(),
            None => e.to_string(),
        }
    }

    /// A wait before a retry: never longer than the idle timeout (a server already given that
    /// long is not helped by waiting longer).
    /// A `Retry-After` the server sent is kept as it is.
    fn backoff(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        let wait = backoff(attempt, retry_after);
        if retry_after.is_some_and(|v| v.trim().parse::<u64>().is_ok()) {
            return wait;
        }
        wait.min(self.idle.max(Duration::from_millis(50)))
    }
}

/// How to reach a registry. HTTPS is checked against the machine's CAs plus the registry's certs
/// directory; a loopback registry without a certs directory is reached over plain HTTP.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// `--tls-verify=false` (docker's "insecure registry"): HTTPS without certificate checks,
    /// falling back to plain HTTP.
    pub insecure: bool,
    /// Credentials to use instead of the docker config's (for `login`).
    pub credentials: Option<Credentials>,
    /// `--cert-dir`: the registry's certificates (`*.crt` CAs, a `*.cert` + `*.key` client
    /// certificate) are in this directory instead of `/etc/containers/certs.d/<registry>/` and
    /// `/etc/docker/certs.d/<registry>/`.
    pub cert_dir: Option<PathBuf>,
    /// docker.io's pull-through mirrors (`registry-mirrors`), tried in order before docker.io
    /// by [`super::pull_with_mirrors`].
    pub mirrors: Vec<super::Mirror>,
    /// `insecure-registries`: registries reached as with `insecure`.
    pub insecure_registries: Vec<super::InsecureRegistry>,
}

/// A manifest or index as the registry sent it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// The digest of `bytes` (computed, never taken from the registry's header).
    pub digest: Digest,
}

pub struct Client {
    agent: ureq::Agent,
    /// `http://127.0.0.1:5000` or `https://registry-1.docker.io`.
    base: String,
    /// The registry as references name it (`127.0.0.1:5000`, `docker.io`), for messages.
    registry: String,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
    timeouts: Timeouts,
}

#[derive(Default)]
struct AuthState {
    /// The challenge of the `/v2/` ping, or of the last 401.
    challenge: Option<Challenge>,
    /// Bearer tokens by scope, with when they stop being used (`expires_in` less a margin).
    tokens: HashMap<String, (String, Instant)>,
}

/// What a request needs the token to allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

struct Req<'a> {
    method: &'static str,
    url: String,
    repo: Option<&'a str>,
    access: Access,
    headers: Vec<(&'static str, String)>,
    body: Option<&'a [u8]>,
    /// Safe to send again after a connection error or a 5xx.
    idempotent: bool,
}

impl<'a> Req<'a> {
    fn new(method: &'static str, url: String, repo: Option<&'a str>, access: Access) -> Req<'a> {
        let idempotent = matches!(method, "GET" | "HEAD");
        Req { method, url, repo, access, headers: Vec::new(), body: None, idempotent }
    }
}

/// True for names docker treats as local: plain HTTP is used for them.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of_authority(registry);
    host == "localhost"
        || host == "::1"
        || host.parse::<std::net::Ipv4Addr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

fn host_of_authority(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// `scheme://authority` of an absolute URL.
fn origin_of(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..].find(['/', '?', '#']).map(|i| after_scheme + i).unwrap_or(url.len());
    Some(&url[..end])
}

/// Resolves a `Location` header against the URL of the request that returned it.
pub fn resolve_location(request_url: &str, location: &str) -> std::result::Result<String, String> {
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(location.to_string());
    }
    if location.contains("://") || lower.starts_with("file:") || lower.starts_with("data:") {
        return Err(format!("refusing a redirect to a non-HTTP URL ({})", cut(location, 100)));
    }
    let origin = origin_of(request_url).ok_or("request URL has no origin")?;
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = &request_url[..request_url.find("://").unwrap_or(0)];
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{origin}{location}"));
    }
    let path_end = request_url.find(['?', '#']).unwrap_or(request_url.len());
    let dir_end = request_url[..path_end].rfind('/').map(|i| i + 1).unwrap_or(path_end);
    Ok(format!("{}{location}", &request_url[..dir_end.max(origin.len())]))
}

fn cut(text: &str, n: usize) -> String {
    crate::digest::truncate_for_message(&text.chars().take(n + 1).collect::<String>())
}

fn header<'r>(resp: &'r Response<Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn transport_error(e: &ureq::Error, timeouts: &Timeouts) -> String {
    match e {
        ureq::Error::Io(io) => timeouts.describe_io(io),
        ureq::Error::Timeout(timeout) => timeouts.describe(*timeout),
        other => other.to_string(),
    }
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

fn backoff(attempt: u32, retry_after: Option<&str>) -> Duration {
    if let Some(secs) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Duration::from_secs(secs.min(60));
    }
    // 250 ms, 750 ms, 2.25 s, …, with a little jitter from the clock.
    let base = 250u64 * 3u64.pow(attempt.min(6));
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_millis() as u64 % 50)
        .unwrap_or(0);
    Duration::from_millis(base.min(60_000) + jitter)
}

impl Client {
    /// Connects to `registry` (`127.0.0.1:5000`, `docker.io`, `ghcr.io`): picks the scheme, pings
    /// `/v2/` and learns how the registry wants to be authenticated.
    ///
    /// HTTPS is verified against the machine's CAs and the registry's certs directory
    /// (`options.cert_dir`, else `certs.d/<registry>/`). A loopback registry without a certs
    /// directory is reached over plain HTTP, or with `insecure` over HTTPS without checks first.
    pub fn connect(registry: &str, options: ClientOptions) -> Result<Client> {
        crate::reference::check_registry_port(registry)?;
        let mut options = options;
        options.insecure |= super::mirror::is_insecure(registry, &options.insecure_registries);
        let endpoint = if registry == crate::reference::DEFAULT_DOMAIN { "registry-1.docker.io" } else { registry };
        let credentials = match options.credentials {
            Some(c) => Some(c),
            None => super::auth::credentials_for(registry)?,
        };
        let timeouts = Timeouts::from_env()?;
        let certs = registry_certs(registry, options.cert_dir.as_deref(), &CERTS_D)?;
        let roots = certs.as_ref().map_or_else(|| roots_with(&[]), |c| roots_with(&c.cas));
        let client_cert = certs.as_ref().and_then(|c| c.client.clone());
        let make = |scheme: &str, verify: bool| Client {
            agent: agent(tls_config(verify, &roots, client_cert.as_ref().map(|(cert, _)| cert)), &timeouts),
            base: format!("{scheme}://{endpoint}"),
            registry: registry.to_string(),
            credentials: credentials.clone(),
            auth: Mutex::new(AuthState::default()),
            timeouts,
        };
        let fix = trust_fix(registry, options.cert_dir.as_deref());
        if is_loopback(registry) && certs.is_none() && !options.insecure {
            let client = make("http", true);
            client.ping().map_err(|e| match e {
                PingError::Transport(why) => client.error(None, format!("cannot reach the registry: {why}")),
                PingError::SpeaksHttps => client.error(None, format!("the registry speaks only HTTPS: {fix}")),
                PingError::Other(e) => e,
            })?;
            return Ok(client);
        }
        let client = make("https", !options.insecure);
        match client.ping() {
            Ok(()) => Ok(client),
            Err(PingError::Transport(why)) if options.insecure => {
                let fallback = make("http", true);
                fallback.ping().map_err(|e| match e {
                    PingError::Transport(again) => {
                        client.error(None, format!("cannot reach the registry over HTTPS ({why}) or HTTP ({again})"))
                    }
                    PingError::SpeaksHttps => client.error(None, format!("HTTPS failed: {why}")),
                    PingError::Other(e) => e,
                })?;
                Ok(fallback)
            }
            Err(PingError::Transport(why)) if why.contains("invalid peer certificate") => {
                Err(client.error(None, format!("TLS certificate not trusted ({why}): {fix}")))
            }
            Err(PingError::Transport(why)) if refused_client_certificate(&why) => {
                let place = match options.cert_dir.as_deref() {
                    Some(dir) => dir.display().to_string(),
                    None => format!("/etc/docker/certs.d/{registry}/"),
                };
                Err(client.error(
                    None,
                    format!(
                        "the registry refused the TLS client certificate ({why}): \
                         put one it accepts in {place} as client.cert and client.key"
                    ),
                ))
            }
            Err(PingError::Transport(why)) if why.contains("corrupt message") => Err(client.error(
                None,
                format!("the registry does not speak HTTPS ({why}): for plain HTTP use --tls-verify=false"),
            )),
            Err(PingError::Transport(why)) => Err(client.error(None, format!("cannot reach the registry: {why}"))),
            Err(PingError::SpeaksHttps) => Err(client.error(None, "GET /v2/ answered 400")),
            Err(PingError::Other(e)) => Err(e),
        }
    }

    /// Connects to a docker.io mirror at its URL (with its own credentials and certificates, by
    /// its `host[:port]`); an `https://` mirror listed in `insecure-registries` (or with
    /// `insecure`) is reached without certificate checks.
    pub fn connect_mirror(mirror: &super::Mirror, options: &ClientOptions) -> Result<Client> {
        let authority = mirror.authority();
        let insecure = options.insecure || super::mirror::is_insecure(authority, &options.insecure_registries);
        let timeouts = Timeouts::from_env()?;
        let certs = registry_certs(authority, options.cert_dir.as_deref(), &CERTS_D)?;
        let roots = certs.as_ref().map_or_else(|| roots_with(&[]), |c| roots_with(&c.cas));
        let client_cert = certs.as_ref().and_then(|c| c.client.clone());
        let client = Client {
            agent: agent(tls_config(!insecure, &roots, client_cert.as_ref().map(|(cert, _)| cert)), &timeouts),
            base: mirror.base_url(),
            registry: authority.to_string(),
            credentials: super::auth::credentials_for(authority)?,
            auth: Mutex::new(AuthState::default()),
            timeouts,
        };
        client.ping().map_err(|e| match e {
            PingError::Transport(why) => client.error(None, format!("cannot reach the mirror: {why}")),
            PingError::SpeaksHttps => {
                client.error(None, format!("the mirror speaks only HTTPS: use https:// in {mirror}"))
            }
            PingError::Other(e) => e,
        })?;
        Ok(client)
    }

    /// The registry as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn error(&self, repo: Option<&str>, why: impl Into<String>) -> Error {
        let what = match repo {
            Some(repo) => format!("{}/{repo}", self.registry),
            None => self.registry.clone(),
        };
        Error::from(RegistryError { what, why: why.into() })
    }

    /// `GET /v2/`: 200 (anonymous access) or 401 with the challenge to answer from now on.
    fn ping(&self) -> std::result::Result<(), PingError> {
        let url = format!("{}/v2/", self.base);
        let mut resp =
            self.agent.get(&url).call().map_err(|e| PingError::Transport(transport_error(&e, &self.timeouts)))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 => {
                let challenge = self.challenge_of(&resp, None).map_err(PingError::Other)?;
                self.auth.lock().expect("auth lock").challenge = challenge;
                let _ = read_error_body(&mut resp);
                Ok(())
            }
            status => {
                let body = read_error_body(&mut resp);
                // Go's TLS server answering a plain HTTP request.
                if status == 400 && self.base.starts_with("http://") && body.contains("HTTPS server") {
                    return Err(PingError::SpeaksHttps);
                }
                Err(PingError::Other(self.error(None, format!("GET /v2/ answered {status}{body}"))))
            }
        }
    }

    /// Checks that the credentials are accepted (for `login`): a token for basic or bearer auth,
    /// or a `/v2/` that answers 200 with them.
    pub fn check_login(&self) -> Result<()> {
        let challenge = self.auth.lock().expect("auth lock").challenge.clone();
        let Some(challenge) = challenge else { return Ok(()) };
        if challenge.scheme == "bearer" {
            self.fetch_token(&challenge, None, None)?;
            return Ok(());
        }
        let url = format!("{}/v2/", self.base);
        let mut request = self.agent.get(&url);
        if let Some(creds) = &self.credentials {
            request = request.header("Authorization", creds.basic_header());
        }
        let mut resp = request.call().map_err(|e| self.error(None, transport_error(&e, &self.timeouts)))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 => Err(self.error(None, "login failed: unauthorized (wrong user name or password)")),
            status => {
                let body = read_error_body(&mut resp);
                Err(self.error(None, format!("login failed: GET /v2/ answered {status}{body}")))
            }
        }
    }

    fn challenge_of(&self, resp: &Response<Body>, repo: Option<&str>) -> Result<Option<Challenge>> {
        match header(resp, "www-authenticate") {
            None => Ok(None),
            Some(text) => Challenge::parse(text).map(Some).map_err(|why| self.error(repo, why)),
        }
    }

    /// Fetches a bearer token from the challenge's realm for `scope` (the challenge's own scope
    /// when the registry named one). Credentials go only to an HTTPS realm, or to a plain-HTTP one
    /// on loopback.
    fn fetch_token(&self, challenge: &Challenge, scope: Option<&str>, repo: Option<&str>) -> Result<String> {
        let realm = challenge.param("realm").ok_or_else(|| self.error(repo, "bearer challenge without a realm"))?;
        let lower = realm.to_ascii_lowercase();
        if !lower.starts_with("https://") && !lower.starts_with("http://") {
            return Err(self.error(repo, format!("token realm is not an HTTP URL: {}", cut(realm, 100))));
        }
        let scope = challenge.param("scope").or(scope);
        let key = scope.unwrap_or("").to_string();
        if let Some((token, until)) = self.auth.lock().expect("auth lock").tokens.get(&key) {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let mut url = realm.to_string();
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", encode_query(service)));
        }
        if let Some(scope) = scope {
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                query.push(format!("scope={}", encode_query(s)));
            }
        }
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query.join("&"));
        }
        let realm_origin = origin_of(realm).unwrap_or("");
        let credentials_allowed =
            lower.starts_with("https://") || is_loopback(realm_origin.split("://").nth(1).unwrap_or(""));
        let mut request = self.agent.get(&url);
        if let (Some(creds), true) = (&self.credentials, credentials_allowed) {
            request = request.header("Authorization", creds.basic_header());
        }
        let mut resp = request
            .call()
            .map_err(|e| self.error(repo, format!("token server: {}", transport_error(&e, &self.timeouts))))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = read_error_body(&mut resp);
            let why = if status == 401 || status == 403 {
                format!("authentication failed at the token server ({status}){body}")
            } else {
                format!("token server answered {status}{body}")
            };
            return Err(self.error(repo, why));
        }
        let body = read_limited(resp.body_mut().as_reader(), TOKEN_LIMIT)
            .map_err(|e| self.error(repo, format!("reading token: {}", self.timeouts.describe_io(&e))))?
            .ok_or_else(|| self.error(repo, "token response is over 1 MiB"))?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| self.error(repo, format!("token response is not JSON: {e}")))?;
        let token = value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(repo, "token response has no token"))?
            .to_string();
        // The spec's default lifetime is 60 s; renew 10 s early so a token never expires in flight.
        let lifetime = value.get("expires_in").and_then(|v| v.as_u64()).filter(|s| *s >= 20).unwrap_or(60);
        let until = Instant::now() + Duration::from_secs(lifetime - 10);
        self.auth.lock().expect("auth lock").tokens.insert(key, (token.clone(), until));
        Ok(token)
    }

    fn scope(repo: &str, access: Access) -> String {
        match access {
            Access::Pull => format!("repository:{repo}:pull"),
            Access::Push => format!("repository:{repo}:pull,push"),
        }
    }

    /// The Authorization header for a request, from what the registry asked for.
    fn authorization(&self, repo: Option<&str>, access: Access) -> Result<Option<String>> {
        let challenge = self.auth.lock().expect("auth lock").challenge.clone();
        match challenge {
            Some(c) if c.scheme == "bearer" => {
                let scope = repo.map(|r| Self::scope(r, access));
                // The ping's challenge carries no scope; ask for the one this request needs.
                let c = Challenge {
                    scheme: c.scheme.clone(),
                    params: {
                        let mut p = c.params.clone();
                        p.remove("scope");
                        p
                    },
                };
                Ok(Some(format!("Bearer {}", self.fetch_token(&c, scope.as_deref(), repo)?)))
            }
            Some(c) if c.scheme == "basic" => Ok(self.credentials.as_ref().map(Credentials::basic_header)),
            _ => Ok(None),
        }
    }

    /// Sends a request with auth, answering one 401 by fetching a token for the challenge it
    /// carries, and retrying idempotent requests on connection errors, 5xx, 408 and 429.
    fn send(&self, req: &Req<'_>) -> Result<Response<Body>> {
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let auth = self.authorization(req.repo, req.access)?;
            let result = self.send_once(req, auth.as_deref());
            match result {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 && !reauthenticated {
                        reauthenticated = true;
                        let challenge = self.challenge_of(&resp, req.repo)?;
                        let _ = read_error_body(&mut resp);
                        let Some(challenge) = challenge else {
                            return Err(self.error(req.repo, "authentication required (401 without a challenge)"));
                        };
                        if challenge.scheme == "bearer" {
                            let scope = req.repo.map(|r| Self::scope(r, req.access));
                            let scope_key = challenge.param("scope").or(scope.as_deref()).unwrap_or("").to_string();
                            let mut state = self.auth.lock().expect("auth lock");
                            state.tokens.remove(&scope_key);
                            state.challenge = Some(Challenge {
                                scheme: challenge.scheme.clone(),
                                params: challenge
                                    .params
                                    .iter()
                                    .filter(|(k, _)| *k != "scope")
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            });
                            drop(state);
                            // Fetch a token for exactly the scope the registry asked for.
                            let token = self.fetch_token(&challenge, scope.as_deref(), req.repo)?;
                            let mut resp = self.send_once(req, Some(&format!("Bearer {token}"))).map_err(|why| {
                                self.error(req.repo, format!("{} {}: {why}", req.method, redact(&req.url)))
                            })?;
                            if resp.status().as_u16() == 401 {
                                let _ = read_error_body(&mut resp);
                                return Err(self.error(
                                    req.repo,
                                    format!("authentication required (insufficient scope {})", scope_key),
                                ));
                            }
                            return Ok(resp);
                        }
                        if challenge.scheme == "basic" && self.credentials.is_some() && auth.is_none() {
                            self.auth.lock().expect("auth lock").challenge = Some(challenge);
                            continue;
                        }
                        let why = if self.credentials.is_some() {
                            "authentication failed: unauthorized"
                        } else {
                            "authentication required: run `kiln login` first"
                        };
                        return Err(self.error(req.repo, why));
                    }
                    if status == 401 {
                        let _ = read_error_body(&mut resp);
                        return Err(self.error(req.repo, "authentication failed: unauthorized"));
                    }
                    if req.idempotent && retryable_status(status) && attempt + 1 < MAX_ATTEMPTS {
                        let wait = self.timeouts.backoff(attempt, header(&resp, "retry-after"));
                        let _ = read_error_body(&mut resp);
                        attempt += 1;
                        std::thread::sleep(wait);
                        continue;
                    }
                    return Ok(resp);
                }
                Err(why) => {
                    if req.idempotent && attempt + 1 < MAX_ATTEMPTS {
                        std::thread::sleep(self.timeouts.backoff(attempt, None));
                        attempt += 1;
                        continue;
                    }
                    return Err(self.error(req.repo, format!("{} {}: {why}", req.method, redact(&req.url))));
                }
            }
        }
    }

    fn send_once(&self, req: &Req<'_>, auth: Option<&str>) -> std::result::Result<Response<Body>, String> {
        let mut builder = ureq::http::Request::builder().method(req.method).uri(&req.url);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if let Some(auth) = auth {
            builder = builder.header("Authorization", auth);
        }
        let result = match req.body {
            Some(body) => {
                let request = builder.body(body).map_err(|e| e.to_string())?;
                self.agent.run(request)
            }
            None => {
                let request = builder.body(()).map_err(|e| e.to_string())?;
                self.agent.run(request)
            }
        };
        result.map_err(|e| transport_error(&e, &self.timeouts))
    }

    fn url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.base)
    }

    /// GETs a manifest or index by tag or digest, refusing bodies over 4 MiB. When `reference`
    /// is a digest, the body must hash to it.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        let mut req = Req::new("GET", self.url(repo, &format!("manifests/{reference}")), Some(repo), Access::Pull);
        req.headers.push(("Accept", MANIFEST_ACCEPT.to_string()));
        let mut resp = self.send(&req)?;
        let status = resp.status().as_u16();
        if status == 404 {
            let body = read_error_body(&mut resp);
            return Err(self.error(Some(repo), format!("manifest {reference} not found{body}")));
        }
        if status != 200 {
            let body = read_error_body(&mut resp);
            return Err(self.error(Some(repo), format!("GET manifest {reference} answered {status}{body}")));
        }
        if resp.body().content_length().is_some_and(|n| n > MANIFEST_LIMIT) {
            return Err(self.error(Some(repo), format!("manifest {reference} exceeds 4 MiB")));
        }
        let content_type =
            header(&resp, "content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        let bytes = read_limited(resp.body_mut().as_reader(), MANIFEST_LIMIT)
            .map_err(|e| {
                self.error(Some(repo), format!("reading manifest {reference}: {}", self.timeouts.describe_io(&e)))
            })?
            .ok_or_else(|| self.error(Some(repo), format!("manifest {reference} exceeds 4 MiB")))?;
        let digest = Digest::of(&bytes);
        if let Ok(expected) = Digest::parse(reference) {
            if expected != digest {
                return Err(self.error(Some(repo), format!("manifest {expected}: digest mismatch (got {digest})")));
            }
        }
        Ok(FetchedManifest { bytes, content_type, digest })
    }

    /// GETs a whole small blob (a config), checking its size and digest.
    pub fn get_small_blob(&self, repo: &str, digest: &Digest, size: u64, limit: u64) -> Result<Vec<u8>> {
        if size > limit {
            return Err(self.error(Some(repo), format!("blob {digest}: {size} bytes is over the {limit}-byte limit")));
        }
        let mut bytes = Vec::new();
        self.open_blob(repo, digest, size)?
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(Some(repo), format!("blob {digest}: {}", self.timeouts.describe_io(&e))))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(self.error(Some(repo), format!("blob {digest}: digest mismatch (got {actual})")));
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming: at most `size` bytes plus one are read (so a longer body is
    /// noticed and an endless one is cut), a dropped connection is resumed with `Range`.
    pub fn open_blob<'c>(&'c self, repo: &'c str, digest: &Digest, size: u64) -> Result<BlobStream<'c>> {
        let reader = self.blob_get(repo, digest, 0)?;
        Ok(BlobStream {
            client: self,
            repo,
            digest: digest.clone(),
            limit: size + 1,
            offset: 0,
            inner: Some(reader),
            resumes: 0,
        })
    }

    /// GET of a blob from `offset`, following redirects (at most 10; credentials only to the
    /// registry's own host).
    fn blob_get(&self, repo: &str, digest: &Digest, offset: u64) -> Result<ureq::BodyReader<'static>> {
        let mut url = self.url(repo, &format!("blobs/{digest}"));
        let mut req = Req::new("GET", url.clone(), Some(repo), Access::Pull);
        if offset > 0 {
            req.headers.push(("Range", format!("bytes={offset}-")));
        }
        let mut resp = self.send(&req)?;
        let own_origin = origin_of(&self.base).unwrap_or(&self.base).to_string();
        let mut redirects = 0;
        loop {
            let status = resp.status();
            if status.is_redirection() {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(
                        self.error(Some(repo), format!("blob {digest}: stopped after {MAX_REDIRECTS} redirects"))
                    );
                }
                let location = header(&resp, "location")
                    .ok_or_else(|| self.error(Some(repo), format!("blob {digest}: redirect without a Location")))?
                    .to_string();
                let _ = read_error_body(&mut resp);
                let next = resolve_location(&url, &location)
                    .map_err(|why| self.error(Some(repo), format!("blob {digest}: {why}")))?;
                url = next;
                let same_host = origin_of(&url) == Some(own_origin.as_str());
                let mut follow = Req::new("GET", url.clone(), if same_host { Some(repo) } else { None }, Access::Pull);
                follow.headers = req.headers.clone();
                resp = if same_host {
                    self.send(&follow)?
                } else {
                    // Another host (blob storage): no Authorization header at all.
                    let mut attempt = 0;
                    loop {
                        match self.send_once(&follow, None) {
                            Ok(r) => break r,
                            Err(_) if attempt + 1 < MAX_ATTEMPTS => {
                                std::thread::sleep(self.timeouts.backoff(attempt, None));
                                attempt += 1;
                            }
                            Err(why) => {
                                return Err(self.error(Some(repo), format!("blob {digest}: {}: {why}", redact(&url))))
                            }
                        }
                    }
                };
                continue;
            }
            let ok = if offset > 0 { status == StatusCode::PARTIAL_CONTENT } else { status == StatusCode::OK };
            if !ok {
                if offset > 0 && status == StatusCode::OK {
                    // The server ignored Range: skip what we already have.
                    let mut reader = resp.into_body().into_reader();
                    io::copy(&mut (&mut reader).take(offset), &mut io::sink()).map_err(|e| {
                        self.error(Some(repo), format!("blob {digest}: {}", self.timeouts.describe_io(&e)))
                    })?;
                    return Ok(reader);
                }
                let body = read_error_body(&mut resp);
                let why = if status.as_u16() == 404 {
                    format!("blob {digest} not found{body}")
                } else {
                    format!("GET blob {digest} answered {}{body}", status.as_u16())
                };
                return Err(self.error(Some(repo), why));
            }
            return Ok(resp.into_body().into_reader());
        }
    }

    /// Every tag of a repository (`/tags/list`, following `Link` pages).
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.paged_list(Some(repo), &self.url(repo, "tags/list?n=1000"), "tags")
    }

    /// Every repository the registry lists in `/v2/_catalog`.
    pub fn catalog(&self) -> Result<Vec<String>> {
        self.paged_list(None, &format!("{}/v2/_catalog?n=1000", self.base), "repositories")
    }

    /// A JSON list spread over pages linked by `Link: <url>; rel="next"`: at most 100 pages and
    /// 100,000 names, a page seen twice ends the walk (RG-17).
    fn paged_list(&self, repo: Option<&str>, first: &str, field: &str) -> Result<Vec<String>> {
        const PAGE_LIMIT: usize = 100;
        const NAME_LIMIT: usize = 100_000;
        let mut names = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut url = first.to_string();
        for _ in 0..PAGE_LIMIT {
            if !seen.insert(url.clone()) {
                break;
            }
            let req = Req::new("GET", url.clone(), repo, Access::Pull);
            let mut resp = self.send(&req)?;
            let status = resp.status().as_u16();
            if status != 200 {
                let body = read_error_body(&mut resp);
                return Err(self.error(repo, format!("GET {} answered {status}{body}", redact(&url))));
            }
            let next = header(&resp, "link").and_then(next_link).and_then(|l| resolve_location(&url, &l).ok());
            let body = read_limited(resp.body_mut().as_reader(), MANIFEST_LIMIT)
                .map_err(|e| self.error(repo, format!("reading {field}: {}", self.timeouts.describe_io(&e))))?
                .ok_or_else(|| self.error(repo, format!("a page of {field} exceeds 4 MiB")))?;
            let value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| self.error(repo, format!("{field} list is not JSON: {e}")))?;
            for name in value.get(field).and_then(|t| t.as_array()).into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    names.push(name.to_string());
                }
            }
            if names.len() > NAME_LIMIT {
                return Err(self.error(repo, format!("more than {NAME_LIMIT} {field}")));
            }
            match next {
                Some(n) if origin_of(&n) == origin_of(&self.base) => url = n,
                _ => break,
            }
        }
        Ok(names)
    }

    /// HEAD of a blob: whether the registry has it.
    pub fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let req = Req::new("HEAD", self.url(repo, &format!("blobs/{digest}")), Some(repo), Access::Push);
        let mut resp = self.send(&req)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => {
                let body = read_error_body(&mut resp);
                Err(self.error(Some(repo), format!("HEAD blob {digest} answered {status}{body}")))
            }
        }
    }

    /// Uploads a blob in chunks: POST for a session, one PATCH per chunk (the `Range` the
    /// registry answers is checked after each, and the latest `Location` always used), then
    /// `PUT ?digest=` so the registry verifies it. What is read is hashed and must be `digest`.
    ///
    /// A failed chunk (connection lost, 5xx) is resumed where the registry says the session
    /// stands (a `GET` of the upload URL); when it cannot say, or its `Range` is not what was
    /// sent, a new session starts from 0. At most 5 recoveries per blob.
    ///
    /// `just_hashed`: the caller computed `digest` from these very bytes a moment ago (a layer it
    /// has just compressed), so they are not hashed a second time; the registry still verifies
    /// the digest on the final PUT.
    #[allow(clippy::too_many_arguments)]
    pub fn upload_blob<R: Read + Seek>(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        mut content: R,
        just_hashed: bool,
        session: Option<String>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let hasher = (!just_hashed).then(<sha2::Sha256 as sha2::Digest>::new);
        let mut hash = UploadHash { hasher, upto: 0 };
        let mut session: Option<(String, u64)> = session.map(|location| (location, 0));
        let mut recoveries = 0u32;
        loop {
            let (mut location, mut offset) = match session.take() {
                Some(s) => s,
                None => (self.start_upload(repo, digest)?, 0),
            };
            let failure = match self.upload_from(
                repo,
                digest,
                size,
                &mut content,
                &mut hash,
                &mut location,
                &mut offset,
                progress,
            ) {
                Ok(()) => return Ok(()),
                Err(UploadFailure::Fatal(e)) => return Err(e),
                Err(UploadFailure::Retry(why)) => (why, true),
                Err(UploadFailure::Restart(why)) => (why, false),
            };
            recoveries += 1;
            if recoveries >= MAX_ATTEMPTS {
                return Err(self.error(
                    Some(repo),
                    format!("blob {digest}: upload failed after {recoveries} attempts: {}", failure.0),
                ));
            }
            std::thread::sleep(self.timeouts.backoff(recoveries - 1, None));
            if self.has_blob(repo, digest).unwrap_or(false) {
                return Ok(());
            }
            if failure.1 {
                session = self.upload_status(repo, &location, size);
            }
        }
    }

    /// Asks the registry to mount `digest` from repository `from` (cross-repository blob mount).
    /// `Ok(None)`: mounted (and confirmed with HEAD). `Ok(Some(location))`: the registry started
    /// an upload session instead, to be used for the upload.
    pub fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<Option<String>> {
        let url = self.url(repo, &format!("blobs/uploads/?mount={digest}&from={}", encode_query(from)));
        let mut req = Req::new("POST", url, Some(repo), Access::Push);
        req.body = Some(&[]);
        req.idempotent = true;
        let mut resp = self.send(&req)?;
        match resp.status().as_u16() {
            201 => {
                let _ = read_error_body(&mut resp);
                if self.has_blob(repo, digest)? {
                    Ok(None)
                } else {
                    Err(self.error(Some(repo), format!("blob {digest}: mounted from {from} but HEAD does not find it")))
                }
            }
            _ => self.upload_location(&mut resp, repo, digest, 202, "POST (mount)").map(Some),
        }
    }

    fn start_upload(&self, repo: &str, digest: &Digest) -> Result<String> {
        let mut req = Req::new("POST", self.url(repo, "blobs/uploads/"), Some(repo), Access::Push);
        req.body = Some(&[]);
        req.idempotent = true;
        let mut resp = self.send(&req)?;
        self.upload_location(&mut resp, repo, digest, 202, "POST")
    }

    /// Where an upload session stands: its latest Location and the next offset, or None when
    /// it should be started again (unknown session, or a `Range` of `0-0`, which distribution
    /// answers both for 0 and 1 bytes).
    fn upload_status(&self, repo: &str, location: &str, size: u64) -> Option<(String, u64)> {
        let req = Req::new("GET", location.to_string(), Some(repo), Access::Push);
        let mut resp = self.send(&req).ok()?;
        if resp.status().as_u16() != 204 {
            let _ = read_error_body(&mut resp);
            return None;
        }
        let end = range_end(header(&resp, "range")?)?;
        let next = header(&resp, "location").and_then(|l| resolve_location(location, l).ok())?;
        let _ = read_error_body(&mut resp);
        if origin_of(&next) != origin_of(&self.base) || end == 0 || end + 1 > size {
            return None;
        }
        Some((next, end + 1))
    }

    #[allow(clippy::too_many_arguments)]
    fn upload_from<R: Read + Seek>(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        content: &mut R,
        hash: &mut UploadHash,
        location: &mut String,
        offset: &mut u64,
        progress: &mut dyn FnMut(u64),
    ) -> std::result::Result<(), UploadFailure> {
        let fatal = |why: String| UploadFailure::Fatal(self.error(Some(repo), format!("blob {digest}: {why}")));
        content.seek(io::SeekFrom::Start(*offset)).map_err(|e| fatal(format!("reading from the store: {e}")))?;
        let mut buffer = vec![0u8; UPLOAD_CHUNK.min(size.max(1) as usize)];
        loop {
            let n = read_full(content, &mut buffer).map_err(|e| fatal(format!("reading from the store: {e}")))?;
            if n == 0 {
                break;
            }
            hash.add(*offset, &buffer[..n]);
            let end = *offset + n as u64 - 1;
            let mut patch = Req::new("PATCH", location.clone(), Some(repo), Access::Push);
            patch.headers.push(("Content-Type", "application/octet-stream".into()));
            patch.headers.push(("Content-Range", format!("{offset}-{end}")));
            patch.body = Some(&buffer[..n]);
            let mut resp = self.send(&patch).map_err(|e| UploadFailure::Retry(reason(e)))?;
            let status = resp.status().as_u16();
            if status == 416 || retryable_status(status) {
                let body = read_error_body(&mut resp);
                return Err(UploadFailure::Retry(format!("PATCH {offset}-{end} answered {status}{body}")));
            }
            let range = header(&resp, "range").map(str::to_string);
            *location = self.upload_location(&mut resp, repo, digest, 202, "PATCH").map_err(UploadFailure::Fatal)?;
            if range.as_deref().and_then(range_end) != Some(end) {
                // Debian's registry 2.8.2 never answers 416: a Range that is not what was sent
                // means the session holds something else, so it is abandoned.
                return Err(UploadFailure::Restart(format!(
                    "after chunk {offset}-{end} the registry reports Range {:?}",
                    range.unwrap_or_default()
                )));
            }
            *offset = end + 1;
            progress(*offset);
        }
        if hash.upto != size {
            return Err(fatal(format!("the store's copy is {} bytes, expected {size}", hash.upto)));
        }
        if let Some(hasher) = &hash.hasher {
            let actual = Digest::from_hasher(hasher.clone());
            if actual != *digest {
                return Err(fatal(format!("the store's copy hashes to {actual}; run `kiln system fsck`")));
            }
        }
        let separator = if location.contains('?') { '&' } else { '?' };
        let mut put = Req::new("PUT", format!("{location}{separator}digest={digest}"), Some(repo), Access::Push);
        put.body = Some(&[]);
        let mut resp = self.send(&put).map_err(|e| UploadFailure::Retry(reason(e)))?;
        let status = resp.status().as_u16();
        if retryable_status(status) {
            let body = read_error_body(&mut resp);
            return Err(UploadFailure::Retry(format!("PUT answered {status}{body}")));
        }
        if status != 201 {
            let body = read_error_body(&mut resp);
            return Err(fatal(format!("PUT answered {status}{body}")));
        }
        if let Some(reported) = header(&resp, "docker-content-digest") {
            if reported != digest.to_string() {
                return Err(fatal(format!("the registry stored it as {}", cut(reported, 80))));
            }
        }
        Ok(())
    }

    fn upload_location(
        &self,
        resp: &mut Response<Body>,
        repo: &str,
        digest: &Digest,
        expected: u16,
        what: &str,
    ) -> Result<String> {
        let status = resp.status().as_u16();
        if status != expected {
            let body = read_error_body(resp);
            return Err(self.error(Some(repo), format!("blob {digest}: upload {what} answered {status}{body}")));
        }
        let location = header(resp, "location")
            .ok_or_else(|| self.error(Some(repo), format!("blob {digest}: upload {what} answered without a Location")))?
            .to_string();
        let _ = read_error_body(resp);
        let base = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let url = resolve_location(&base, &location).map_err(|why| self.error(Some(repo), why))?;
        // The upload session must stay on the registry: it carries our credentials.
        if origin_of(&url) != origin_of(&self.base) {
            return Err(self.error(
                Some(repo),
                format!("blob {digest}: upload Location points at another host ({})", redact(&url)),
            ));
        }
        Ok(url)
    }

    /// PUTs a manifest under `tag`; returns the digest the registry reports (checked against ours).
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) -> Result<Digest> {
        let mut req = Req::new("PUT", self.url(repo, &format!("manifests/{tag}")), Some(repo), Access::Push);
        req.headers.push(("Content-Type", media_type.to_string()));
        req.body = Some(bytes);
        req.idempotent = true;
        let mut resp = self.send(&req)?;
        let status = resp.status().as_u16();
        if status != 201 {
            let body = read_error_body(&mut resp);
            let why = if status == 413 {
                format!("manifest of {} bytes refused as too large (413){body}", bytes.len())
            } else {
                format!("PUT manifest {tag} answered {status}{body}")
            };
            return Err(self.error(Some(repo), why));
        }
        let digest = Digest::of(bytes);
        if let Some(reported) = header(&resp, "docker-content-digest") {
            if reported != digest.to_string() {
                return Err(self
                    .error(Some(repo), format!("manifest {digest}: the registry stored it as {}", cut(reported, 80))));
            }
        }
        Ok(digest)
    }
}

/// One result of Docker Hub's search API.
#[derive(Clone, Debug, Default)]
pub struct SearchResult {
    pub name: String,
    pub description: String,
    pub stars: u64,
    pub official: bool,
    pub automated: bool,
}

/// Docker Hub's search (`index.docker.io/v1/search`), which has no distribution-spec equivalent.
pub fn docker_hub_search(term: &str, limit: usize) -> Result<Vec<SearchResult>> {
    let fail = |why: String| Error::Registry { what: "docker.io".into(), why };
    let url = format!("https://index.docker.io/v1/search?q={}&n={}", encode_query(term), limit.clamp(1, 100));
    let timeouts = Timeouts::from_env()?;
    let mut resp = agent(tls_config(true, &roots_with(&[]), None), &timeouts)
        .get(&url)
        .call()
        .map_err(|e| fail(format!("search: {}", transport_error(&e, &timeouts))))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = read_error_body(&mut resp);
        return Err(fail(format!("search answered {status}{body}")));
    }
    let body = read_limited(resp.body_mut().as_reader(), MANIFEST_LIMIT)
        .map_err(|e| fail(format!("search: {e}")))?
        .ok_or_else(|| fail("search results exceed 4 MiB".into()))?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| fail(format!("search: not JSON: {e}")))?;
    let results = value.get("results").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    Ok(results
        .iter()
        .take(limit)
        .map(|r| SearchResult {
            name: r.get("name").and_then(|v| v.as_str()).unwrap_or("").to_string(),
            description: r.get("description").and_then(|v| v.as_str()).unwrap_or("").replace(['\n', '\r'], " "),
            stars: r.get("star_count").and_then(|v| v.as_u64()).unwrap_or(0),
            official: r.get("is_official").and_then(|v| v.as_bool()).unwrap_or(false),
            automated: r.get("is_automated").and_then(|v| v.as_bool()).unwrap_or(false),
        })
        .collect())
}

/// An error's reason without the registry it names (for a message that names it already).
fn reason(e: Error) -> String {
    match e {
        Error::Registry { why, .. } => why,
        other => other.to_string(),
    }
}

enum UploadFailure {
    /// Ask the registry where the session stands and go on from there.
    Retry(String),
    /// Start a new session.
    Restart(String),
    Fatal(Error),
}

/// The running hash of an upload (None when the caller has just hashed the bytes), and how far
/// it got; chunks sent again after a recovery are not counted twice.
struct UploadHash {
    hasher: Option<sha2::Sha256>,
    upto: u64,
}

impl UploadHash {
    fn add(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        if end > self.upto && offset <= self.upto {
            let skip = (self.upto - offset) as usize;
            if let Some(hasher) = &mut self.hasher {
                sha2::Digest::update(hasher, &bytes[skip..]);
            }
            self.upto = end;
        }
    }
}

/// The URL of `<url>; rel="next"` in a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part[start..].find('>')? + start;
        Some(part[start..end].to_string())
    })
}

/// The end of a `Range: 0-N` (or `bytes=0-N`) header.
fn range_end(range: &str) -> Option<u64> {
    let range = range.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    range.split_once('-')?.1.trim().parse().ok()
}

enum PingError {
    Transport(String),
    /// A plain HTTP request answered "400 Client sent an HTTP request to an HTTPS server".
    SpeaksHttps,
    Other(Error),
}

/// No resolve timeout: ureq runs a timed lookup on a thread of its own, and panics when it cannot
/// start one (a pids limit); the system resolver has its own timeouts (resolv.conf's).
fn agent(tls: TlsConfig, timeouts: &Timeouts) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .timeout_connect(Some(timeouts.connect))
        .timeout_send_request(Some(timeouts.idle))
        .timeout_recv_response(Some(timeouts.response))
        .timeout_per_read(Some(timeouts.idle))
        .timeout_per_write(Some(timeouts.idle))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .build()
        .new_agent()
}

/// Where docker and podman keep each registry's certificates: `<base>/<host[:port]>/`.
const CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// The machine's CA bundle: the first of these that exists (the list Go's crypto/x509, and so
/// docker, tries on Linux) unless `$SSL_CERT_FILE` names one.
const CA_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Arch, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem",                            // openSUSE
    "/etc/pki/tls/cacert.pem",                           // OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
    "/etc/ssl/cert.pem",                                 // Alpine
];

/// A registry's certificates, from its certs directories.
#[derive(Debug, Default)]
struct RegistryCerts {
    /// Extra CAs: every certificate of every `*.crt`.
    cas: Vec<Certificate<'static>>,
    /// The client certificate: the first `*.cert` (by name) with the `*.key` of the same name,
    /// and the `*.cert` file for messages.
    client: Option<(ClientCert, PathBuf)>,
}

/// The certificates for `registry`: those in `cert_dir` (`--cert-dir`, which must exist), else
/// those in `<base>/<registry>/` for each of `bases` that has one. `None` when there is no
/// directory at all; an existing but empty one gives `Some` (the registry then speaks HTTPS).
fn registry_certs(registry: &str, cert_dir: Option<&Path>, bases: &[&str]) -> Result<Option<RegistryCerts>> {
    let dirs: Vec<PathBuf> = match cert_dir {
        Some(dir) => {
            std::fs::metadata(dir).map_err(|e| Error::io("reading --cert-dir", dir, e))?;
            vec![dir.to_path_buf()]
        }
        None => bases.iter().map(|base| Path::new(base).join(registry)).filter(|dir| dir.is_dir()).collect(),
    };
    if dirs.is_empty() {
        return Ok(None);
    }
    let mut certs = RegistryCerts::default();
    for dir in &dirs {
        read_certs_dir(dir, &mut certs)?;
    }
    Ok(Some(certs))
}

/// Adds what a certs directory holds, as docker and containers/image read one: `*.crt` are CAs,
/// `*.cert` is a client certificate whose key is the `*.key` of the same name; other files are
/// ignored. A file that cannot be read or holds no PEM certificate (or key) is an error naming it.
fn read_certs_dir(dir: &Path, certs: &mut RegistryCerts) -> Result<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("reading certificate directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("reading certificate directory", dir, e))?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".crt") {
            if stem.is_empty() || !path.is_file() {
                continue;
            }
            certs.cas.extend(read_pem_certificates(&path)?);
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            if !key.is_file() {
                return Err(Error::invalid(
                    path.display().to_string(),
                    format!("client certificate without its key {} (CA certificates end in .crt)", key.display()),
                ));
            }
            let chain = read_pem_certificates(&path)?;
            let key = read_pem_key(&key)?;
            check_client_pair(&path, &chain, &key)?;
            if certs.client.is_none() {
                certs.client = Some((ClientCert::new_with_certs(&chain, key), path));
            }
        } else if let Some(stem) = name.strip_suffix(".key") {
            let cert = dir.join(format!("{stem}.cert"));
            if !cert.is_file() {
                return Err(Error::invalid(
                    path.display().to_string(),
                    format!("key without its client certificate {}", cert.display()),
                ));
            }
        }
    }
    Ok(())
}

/// ureq (3.5) hands the pair to rustls only at the first connection and panics if rustls refuses
/// it (a key that does not match the certificate, or of a kind rustls cannot use): ask rustls
/// here, with the same crypto provider, so that is an error naming the file instead.
fn check_client_pair(path: &Path, chain: &[Certificate<'static>], key: &PrivateKey<'static>) -> Result<()> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let refused = |why: String| {
        Error::invalid(
            format!("client certificate {}", path.display()),
            format!("TLS cannot use it with its key ({why})"),
        )
    };
    let chain: Vec<CertificateDer<'static>> = chain.iter().map(|c| CertificateDer::from(c.der().to_vec())).collect();
    let key = PrivateKeyDer::try_from(key.der().to_vec()).map_err(|e| refused(e.to_string()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(|_| ())
        .map_err(|e| refused(e.to_string()))
}

fn read_pem(path: &Path) -> Result<Vec<PemItem<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading certificate", path, e))?;
    ureq::tls::parse_pem(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(path.display().to_string(), format!("not valid PEM ({e})")))
}

fn read_pem_certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let certs: Vec<Certificate<'static>> = read_pem(path)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect();
    // A DER certificate is a SEQUENCE; anything else in a CERTIFICATE block is not one.
    if certs.is_empty() || certs.iter().any(|c| c.der().first() != Some(&0x30)) {
        return Err(Error::invalid(path.display().to_string(), "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_pem_key(path: &Path) -> Result<PrivateKey<'static>> {
    read_pem(path)?
        .into_iter()
        .find_map(|item| match item {
            PemItem::PrivateKey(key) => Some(key),
            _ => None,
        })
        .ok_or_else(|| Error::invalid(path.display().to_string(), "no PEM private key in it"))
}

/// The machine's CAs, read once per process: `$SSL_CERT_FILE`, else the first of `CA_BUNDLES`
/// that exists, plus the files in `$SSL_CERT_DIR` (colon-separated directories). `None` when none
/// could be read.
fn system_roots() -> Option<Arc<Vec<Certificate<'static>>>> {
    static ROOTS: OnceLock<Option<Arc<Vec<Certificate<'static>>>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            load_system_roots(std::env::var_os("SSL_CERT_FILE"), std::env::var_os("SSL_CERT_DIR")).map(Arc::new)
        })
        .clone()
}

fn load_system_roots(cert_file: Option<OsString>, cert_dir: Option<OsString>) -> Option<Vec<Certificate<'static>>> {
    // Lenient, as for a system bundle: a block that does not parse is skipped.
    let certificates = |path: &Path| -> Vec<Certificate<'static>> {
        let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
        ureq::tls::parse_pem(&bytes)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect()
    };
    let bundles: Vec<PathBuf> = match cert_file.filter(|f| !f.is_empty()) {
        Some(file) => vec![PathBuf::from(file)],
        None => CA_BUNDLES.iter().map(PathBuf::from).collect(),
    };
    let mut roots = bundles.iter().map(|b| certificates(b)).find(|certs| !certs.is_empty()).unwrap_or_default();
    if let Some(dirs) = cert_dir {
        for dir in std::env::split_paths(&dirs) {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
            files.sort();
            for file in files {
                roots.extend(certificates(&file));
            }
        }
    }
    (!roots.is_empty()).then_some(roots)
}

/// The roots to verify a registry with: the machine's CAs plus `extra`. Without a readable system
/// bundle: ureq's built-in roots (Mozilla's, from webpki-roots, which its `rustls` feature
/// compiles in) when there is nothing extra, else `extra` alone (ureq cannot combine the two).
fn roots_with(extra: &[Certificate<'static>]) -> RootCerts {
    match (system_roots(), extra.is_empty()) {
        (Some(system), true) => RootCerts::Specific(system),
        (Some(system), false) => RootCerts::new_with_certs(&[system.as_slice(), extra].concat()),
        (None, true) => RootCerts::WebPki,
        (None, false) => RootCerts::new_with_certs(extra),
    }
}

fn tls_config(verify: bool, roots: &RootCerts, client_cert: Option<&ClientCert>) -> TlsConfig {
    TlsConfig::builder()
        .disable_verification(!verify)
        .root_certs(roots.clone())
        .client_cert(client_cert.cloned())
        .build()
}

/// Whether a TLS error is the server refusing the client certificate, or the lack of one (Go
/// answers both with a `bad_certificate` alert; TLS 1.3 has `certificate_required` for the latter).
fn refused_client_certificate(why: &str) -> bool {
    ["alert: BadCertificate", "alert: CertificateRequired", "alert: UnknownCA", "alert: AccessDenied"]
        .iter()
        .any(|alert| why.contains(alert))
}

/// How to make a registry's certificate trusted, for messages.
fn trust_fix(registry: &str, cert_dir: Option<&Path>) -> String {
    match cert_dir {
        Some(dir) => format!("add its CA to {} (--cert-dir), or use --tls-verify=false", dir.display()),
        None => format!("add its CA to /etc/docker/certs.d/{registry}/ca.crt or --cert-dir, or use --tls-verify=false"),
    }
}

/// Query strings keep no secrets, but upload URLs carry opaque state; show only the path.
fn redact(url: &str) -> String {
    cut(url.split('?').next().unwrap_or(url), 200)
}

fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads at most `limit` bytes; `None` when there were more.
fn read_limited(reader: impl Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(if bytes.len() as u64 > limit { None } else { Some(bytes) })
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `: message` from an error body: distribution's `{"errors":[{"code","message"}]}` when it is
/// that, else the first line of text; at most 64 KiB is read and 200 characters shown.
fn read_error_body(resp: &mut Response<Body>) -> String {
    let mut bytes = Vec::new();
    let _ = resp.body_mut().as_reader().take(ERROR_BODY_LIMIT).read_to_end(&mut bytes);
    if bytes.is_empty() {
        return String::new();
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        if let Some(errors) = value.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errors
                .iter()
                .take(3)
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                    let message = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    format!("{code} {message}").trim().to_string()
                })
                .collect();
            if !parts.is_empty() {
                return format!(": {}", cut(&parts.join("; "), 200));
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let line: String =
        text.lines().next().unwrap_or("").chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if line.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", cut(line.trim(), 200))
    }
}

/// A blob body being streamed: reads stop after `size + 1` bytes, and a connection that drops
/// is resumed from the current offset with `Range` (at most 5 times).
pub struct BlobStream<'c> {
    client: &'c Client,
    repo: &'c str,
    digest: Digest,
    limit: u64,
    offset: u64,
    inner: Option<ureq::BodyReader<'static>>,
    resumes: u32,
}

impl Read for BlobStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.limit {
            return Ok(0);
        }
        let want = buf.len().min((self.limit - self.offset) as usize);
        loop {
            let result = match self.inner.as_mut() {
                Some(reader) => reader.read(&mut buf[..want]),
                None => Err(io::Error::other("connection lost")),
            };
            match result {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.resumes < MAX_ATTEMPTS => {
                    self.resumes += 1;
                    self.inner = None;
                    std::thread::sleep(self.client.timeouts.backoff(self.resumes - 1, None));
                    match self.client.blob_get(self.repo, &self.digest, self.offset) {
                        Ok(reader) => self.inner = Some(reader),
                        Err(again) if self.resumes >= MAX_ATTEMPTS => {
                            let again = reason(again);
                            let why = self.client.timeouts.describe_io(&e);
                            return Err(io::Error::new(e.kind(), format!("{why}; resuming failed: {again}")));
                        }
                        Err(_) => {}
                    }
                }
                Err(e) => {
                    let why = self.client.timeouts.describe_io(&e);
                    return Err(io::Error::new(e.kind(), format!("{why} (after {} resumed attempts)", self.resumes)));
                }
            }
        }
    }
}

/// The most `kiln import URL` downloads unless `$KILN_IMPORT_MAX_SIZE` (bytes) says otherwise.
pub const DOWNLOAD_LIMIT: u64 = 64 << 30;
/// The environment variable that sets the download limit of `kiln import URL`, in bytes.
pub const DOWNLOAD_LIMIT_ENV: &str = "KILN_IMPORT_MAX_SIZE";

/// The body of an `http://` or `https://` URL (for `kiln import URL`), as a stream: HTTPS checked
/// against the machine's CAs, redirects followed (at most 10), the registry client's timeouts
/// (`KILN_NET_TIMEOUT`), and at most `$KILN_IMPORT_MAX_SIZE` bytes (64 GiB by default). Errors
/// name the URL.
pub fn download(url: &str) -> Result<Download> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(Error::invalid(format!("URL {}", cut(url, 200)), "only http:// and https:// URLs can be imported"));
    }
    let shown = shown_url(url);
    let fail = |why: String| Error::invalid(format!("GET {shown}"), why);
    let limit = match std::env::var(DOWNLOAD_LIMIT_ENV) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| Error::invalid(format!("{DOWNLOAD_LIMIT_ENV}={}", cut(&text, 40)), "not a number of bytes"))?,
        Err(_) => DOWNLOAD_LIMIT,
    };
    let timeouts = Timeouts::from_env()?;
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS as u32)
        .tls_config(tls_config(true, &roots_with(&[]), None))
        .timeout_connect(Some(timeouts.connect))
        .timeout_send_request(Some(timeouts.idle))
        .timeout_recv_response(Some(timeouts.response))
        .timeout_per_read(Some(timeouts.idle))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .build()
        .new_agent();
    let mut resp = agent.get(url).call().map_err(|e| fail(transport_error(&e, &timeouts)))?;
    let status = resp.status();
    if !status.is_success() {
        let reason = status.canonical_reason().unwrap_or("");
        let _ = read_error_body(&mut resp);
        return Err(fail(format!("the server answered {} {reason}", status.as_u16())));
    }
    let announced = header(&resp, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(size) = announced.filter(|size| *size > limit) {
        return Err(fail(format!("{size} bytes is more than the limit of {limit} ({DOWNLOAD_LIMIT_ENV})")));
    }
    let failure = Arc::default();
    Ok(Download { body: resp.into_body().into_reader(), shown, limit, read: 0, timeouts, failure })
}

/// A URL for messages: without a user name or password.
fn shown_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return cut(url, 200) };
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => cut(&format!("{}{}", &url[..start], &url[start + at + 1..]), 200),
        None => cut(url, 200),
    }
}

/// A download in progress; reading past the limit, or a timeout, is an error naming the URL.
pub struct Download {
    body: ureq::BodyReader<'static>,
    shown: String,
    limit: u64,
    read: u64,
    timeouts: Timeouts,
    failure: Arc<OnceLock<String>>,
}

impl Download {
    /// The URL, for messages (credentials left out).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Where the reason the download failed (a timeout, the size limit) is kept, for the one
    /// line that reports it: readers of the stream (a tar parser) may hide it behind their own.
    pub fn failure(&self) -> Arc<OnceLock<String>> {
        self.failure.clone()
    }

    fn fail(&self, why: String) -> io::Error {
        let _ = self.failure.set(why.clone());
        io::Error::other(why)
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.body.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let why = self.timeouts.describe_io(&e);
                return Err(self.fail(format!("download failed: {why}")));
            }
        };
        self.read += n as u64;
        if self.read > self.limit {
            let why = format!("larger than the limit of {} bytes ({DOWNLOAD_LIMIT_ENV})", self.limit);
            return Err(self.fail(why));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_timeouts_parse_and_name_themselves() {
        let t = Timeouts::parse("0.5").unwrap();
        assert_eq!((t.connect, t.idle, t.response), (Duration::from_millis(500), t.connect, t.connect));
        assert_eq!(Timeouts::parse("2s").unwrap().idle, Duration::from_secs(2));
        for bad in ["", "x", "0", "-3", "NaN", "inf", "100000"] {
            let err = Timeouts::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{TIMEOUT_ENV}={bad}")) && err.contains("seconds"), "{bad}: {err}");
        }
        let t = Timeouts::default();
        let write = t.describe(ureq::Timeout::PerWrite);
        assert!(write.contains("read nothing for 60 s") && write.contains(TIMEOUT_ENV), "{write}");
        assert!(t.describe(ureq::Timeout::Connect).contains("within 30 s"));
        assert!(t.describe(ureq::Timeout::RecvResponse).contains("within 120 s"));
        let wrapped = io::Error::other(ureq::Error::Timeout(ureq::Timeout::PerRead));
        assert!(t.describe_io(&wrapped).contains("sent nothing for 60 s"), "{}", t.describe_io(&wrapped));
        // Waits before a retry never exceed the idle timeout, but a server's Retry-After is kept.
        let short = Timeouts::parse("1").unwrap();
        assert!(short.backoff(4, None) <= Duration::from_secs(1));
        assert_eq!(short.backoff(0, Some("3")), Duration::from_secs(3));
    }

    #[test]
    fn loopback_names_use_plain_http() {
        for yes in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["docker.io", "10.0.0.1:5000", "localhost.example.com", "ghcr.io"] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn locations_resolve_and_non_http_is_refused() {
        let base = "http://127.0.0.1:5000/v2/x/blobs/uploads/";
        assert_eq!(
            resolve_location(base, "/v2/x/blobs/uploads/u?_state=a").unwrap(),
            "http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=a"
        );
        assert_eq!(resolve_location(base, "https://s3.example/b?sig=1").unwrap(), "https://s3.example/b?sig=1");
        assert_eq!(resolve_location(base, "u2").unwrap(), "http://127.0.0.1:5000/v2/x/blobs/uploads/u2");
        assert_eq!(resolve_location(base, "//other:1/p").unwrap(), "http://other:1/p");
        assert!(resolve_location(base, "file:///etc/passwd").is_err());
        assert!(resolve_location(base, "ftp://x/y").is_err());
        assert_eq!(origin_of("https://a.b:5/c?d"), Some("https://a.b:5"));
    }

    #[test]
    fn link_headers_give_the_next_page() {
        assert_eq!(next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        assert_eq!(next_link(r#"<http://x/a>; rel="prev", <http://x/b>; rel="next""#).as_deref(), Some("http://x/b"));
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn limited_reads_detect_overflow() {
        assert_eq!(read_limited(&b"abcd"[..], 4).unwrap(), Some(b"abcd".to_vec()));
        assert_eq!(read_limited(&b"abcde"[..], 4).unwrap(), None);
        assert_eq!(encode_query("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
    }

    /// A self-signed P-256 certificate and its key, made for these tests only.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBijCCAS+gAwIBAgIUJeVX3Z9r3JsfgZltJWm1tH7HnLIwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOa2lsbiB1bml0IHRlc3QwIBcNMjYxMTIzMTEzOTE1WhgPMjEy
NjEwMzAxMTM5MTVaMBkxFzAVBgNVBAMMDmtpbG4gdW5pdCB0ZXN0MFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEw6QHOakj09l0wQiQTVwZ/OyZOrqbElIzEFplpvBI
cBJBmbylNMfE0XFVm3g85bbuqin8mmjYdTkIAU8HtquWjqNTMFEwHQYDVR0OBBYE
FN9ZD+218ekTYRoKiBOsjan/4H83MB8GA1UdIwQYMBaAFN9ZD+218ekTYRoKiBOs
jan/4H83MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAKGahkjZ
Muceiz9WQ5XW4odCCuGvFhRHtYJoyaHCqglNAiEA54lAGUSL3nrbzQNtQcNz3O5+
n/cNdiBkCyu78mQTGUw=
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjmFQsakpHp76DFc+
hMg3F62ykY08MCA3frsEujY+lgKhRANCAATDpAc5qSPT2XTBCJBNXBn87Jk6upsS
UjMQWmWm8EhwEkGZvKU0x8TRcVWbeDzltu6qKfyaaNh1OQgBTwe2q5aO
-----END PRIVATE KEY-----
";

    fn read_dir_certs(dir: &Path) -> Result<RegistryCerts> {
        let mut certs = RegistryCerts::default();
        read_certs_dir(dir, &mut certs).map(|()| certs)
    }

    #[test]
    fn certs_dir_with_good_pem_gives_its_cas_and_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), TEST_CERT).unwrap();
        // A bundle: two certificates in one file, with text around them as openssl writes it.
        std::fs::write(dir.path().join("more.crt"), format!("subject=CN = x\n{TEST_CERT}\n{TEST_CERT}")).unwrap();
        std::fs::write(dir.path().join("README"), "not a certificate, ignored").unwrap();
        std::fs::write(dir.path().join("client.cert"), TEST_CERT).unwrap();
        std::fs::write(dir.path().join("client.key"), TEST_KEY).unwrap();
        let certs = read_dir_certs(dir.path()).unwrap();
        assert_eq!(certs.cas.len(), 3);
        assert!(certs.cas.iter().all(|c| c.der().len() > 300 && c.der()[0] == 0x30));
        let (client, file) = certs.client.expect("client certificate");
        assert_eq!(file, dir.path().join("client.cert"));
        assert_eq!(client.certs().len(), 1);
    }

    #[test]
    fn certs_dir_with_garbage_pem_is_an_error_naming_the_file() {
        let cases = [
            ("garbage, not PEM at all\n", "no PEM certificate"),
            ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "not valid PEM"),
            ("-----BEGIN CERTIFICATE-----\nMIIB\n", "not valid PEM"),
            ("-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n", "no PEM certificate"),
            (TEST_KEY, "no PEM certificate"),
        ];
        for (content, why) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ca.crt");
            std::fs::write(&path, content).unwrap();
            let err = read_dir_certs(dir.path()).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()) && err.contains(why), "{content:?}: {err}");
        }
        // A client certificate without its key, a key without its certificate, a key that is not one.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.cert"), TEST_CERT).unwrap();
        let err = read_dir_certs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("client.cert") && err.contains("client.key") && err.contains(".crt"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.key"), TEST_KEY).unwrap();
        let err = read_dir_certs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("client.key") && err.contains("client.cert"), "{err}");
        std::fs::write(dir.path().join("client.cert"), TEST_CERT).unwrap();
        std::fs::write(dir.path().join("client.key"), TEST_CERT).unwrap();
        let err = read_dir_certs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("client.key") && err.contains("no PEM private key"), "{err}");
        // A --cert-dir that does not exist.
        let missing = dir.path().join("nope");
        let err = registry_certs("r:1", Some(&missing), &[]).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn empty_certs_dir_gives_no_certificates_but_counts_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let certs = read_dir_certs(dir.path()).unwrap();
        assert!(certs.cas.is_empty() && certs.client.is_none());
        let certs = registry_certs("127.0.0.1:5000", Some(dir.path()), &[]).unwrap().expect("--cert-dir");
        assert!(certs.cas.is_empty());
    }

    #[test]
    fn certs_d_directories_are_found_by_registry_and_merged() {
        let docker = tempfile::tempdir().unwrap();
        let containers = tempfile::tempdir().unwrap();
        let bases = [containers.path().to_str().unwrap(), docker.path().to_str().unwrap()];
        assert!(registry_certs("127.0.0.1:5000", None, &bases).unwrap().is_none());
        std::fs::create_dir(docker.path().join("127.0.0.1:5000")).unwrap();
        std::fs::write(docker.path().join("127.0.0.1:5000/ca.crt"), TEST_CERT).unwrap();
        std::fs::create_dir(containers.path().join("127.0.0.1:5000")).unwrap();
        std::fs::write(containers.path().join("127.0.0.1:5000/other.crt"), TEST_CERT).unwrap();
        assert_eq!(registry_certs("127.0.0.1:5000", None, &bases).unwrap().unwrap().cas.len(), 2);
        // Another port is another registry; --cert-dir replaces certs.d.
        assert!(registry_certs("127.0.0.1:5001", None, &bases).unwrap().is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(registry_certs("127.0.0.1:5000", Some(empty.path()), &bases).unwrap().unwrap().cas.is_empty());
    }

    #[test]
    fn system_roots_come_from_ssl_cert_file_and_dir() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{TEST_CERT}{TEST_CERT}")).unwrap();
        assert_eq!(load_system_roots(Some(bundle.clone().into()), None).unwrap().len(), 2);
        // $SSL_CERT_FILE replaces the usual bundles: a missing one gives nothing (ureq's roots).
        assert!(load_system_roots(Some(dir.path().join("missing").into()), None).is_none());
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::write(certs.join("a.pem"), TEST_CERT).unwrap();
        std::fs::write(certs.join("junk"), "junk").unwrap();
        let dirs = std::env::join_paths([certs.as_path(), dir.path().join("missing").as_path()]).unwrap();
        assert_eq!(load_system_roots(Some(bundle.into()), Some(dirs.clone())).unwrap().len(), 3);
        assert_eq!(load_system_roots(Some(dir.path().join("missing").into()), Some(dirs)).unwrap().len(), 1);
    }

    #[test]
    fn untrusted_certificate_messages_say_how_to_fix_it() {
        let fix = trust_fix("127.0.0.1:5123", None);
        assert!(fix.contains("/etc/docker/certs.d/127.0.0.1:5123/ca.crt") && fix.contains("--cert-dir"), "{fix}");
        assert!(fix.contains("--tls-verify=false"), "{fix}");
        let fix = trust_fix("127.0.0.1:5123", Some(Path::new("/tmp/certs")));
        assert!(fix.contains("/tmp/certs") && fix.contains("--tls-verify=false"), "{fix}");
    }
}
