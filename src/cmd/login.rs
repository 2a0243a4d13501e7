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
    let given_user = args.username.as_deref().map(str::trim).filter(|u| !u.is_empty());
    if args.password_stdin && args.password.is_some() {
        bail!("login: --password and --password-stdin are mutually exclusive");
    }
    if args.password_stdin && given_user.is_none() {
        bail!("login: Must provide --username with --password-stdin");
    }
    // Without a password in the arguments or on stdin, docker asks on the terminal, and refuses
    // when there is none.
    let interactive = !args.password_stdin && args.password.is_none();
    if interactive && !io::stdin().is_terminal() {
        bail!("login: Cannot perform an interactive login from a non TTY device (use -u USER --password-stdin)");
    }
    let username = match given_user {
        Some(user) => user.to_string(),
        None => prompt_username()?,
    };
    let password = if args.password_stdin {
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line).context("login: reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        // Read on the terminal with echo off (rpassword talks to /dev/tty).
        let password = rpassword::prompt_password("Password: ").context("login: reading the password")?;
        crate::output::outln!();
        password
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

/// docker's `Username: ` prompt: a line from the terminal on stdin.
fn prompt_username() -> Result<String> {
    crate::output::out!("Username: ");
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line).context("login: reading the user name")? == 0 {
        bail!("login: no user name given (end of input)");
    }
    let user = line.trim().to_string();
    if user.is_empty() {
        bail!("login: Username is required");
    }
    Ok(user)
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
