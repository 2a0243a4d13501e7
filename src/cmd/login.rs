//! `kiln login [-u USER] [--password-stdin] [REGISTRY]` and `kiln logout [REGISTRY]`: credentials
//! checked against the registry, then kept in docker's config.json (`auths`, mode 0600).

use std::io::{self, BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_cas::registry::auth::{auth_key, docker_config_path, remove_credentials, save_credentials};
use kiln_cas::registry::{Client, Credentials};

use crate::cli::{LoginArgs, LogoutArgs};
use crate::output::outln;

/// A registry as typed (`127.0.0.1:5000`, `https://reg.example/`, nothing for Docker Hub) →
/// the host name references use.
fn registry_host(text: Option<&str>) -> String {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return "docker.io".to_string() };
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")).unwrap_or(text);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

pub fn login(args: LoginArgs) -> Result<ExitCode> {
    let registry = registry_host(args.registry.as_deref());
    let username = match &args.username {
        Some(u) if !u.is_empty() => u.clone(),
        _ => bail!("login: a user name is required (-u USER)"),
    };
    let password = if args.password_stdin {
        if args.password.is_some() {
            bail!("login: --password and --password-stdin are mutually exclusive");
        }
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line).context("login: reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else if io::stdin().is_terminal() {
        bail!("login: interactive password prompts are not supported yet; use --password-stdin");
    } else {
        bail!("login: no password given; use --password-stdin");
    };
    if password.is_empty() {
        bail!("login: the password is empty");
    }
    let credentials = Credentials { username, password };
    let client = Client::connect(&registry, args.tls.client_options(Some(credentials.clone()))?).context("login")?;
    client.check_login().context("login")?;
    let path = docker_config_path()?;
    save_credentials(&path, &registry, &credentials).context("login: saving credentials")?;
    outln!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(args: LogoutArgs) -> Result<ExitCode> {
    let registry = registry_host(args.registry.as_deref());
    let key = auth_key(&registry);
    let path = docker_config_path()?;
    if remove_credentials(&path, &registry).context("logout")? {
        outln!("Removing login credentials for {key}");
    } else {
        outln!("Not logged in to {key}");
    }
    Ok(ExitCode::SUCCESS)
}
