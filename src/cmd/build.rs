//! `kiln build`: context → Dockerfile → plan → solve → tag, with docker's flags.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_builder::cache::spec::{CacheSpec, Direction};
use kiln_builder::context::{BuildContext, ContextSpec};
use kiln_builder::frontend::{plan, PlanOptions};
use kiln_builder::solve::{solve, Progress, ProgressEvent, SolveOptions, StepIds, StoreImages};
use kiln_cas::registry::PullPolicy;
use kiln_cas::store::lists::NewListEntry;

use super::build_attest::{Attestations, BuildFacts};
use kiln_cas::{Reference, Store};
use kiln_runtime::isolation::Isolation;
use serde_json::json;

use super::build_check::Call;
use crate::cli::BuildArgs;
use crate::progress::{Printer, ProgressMode};

pub fn run(store: &Store, args: BuildArgs) -> Result<ExitCode> {
    let started_on = chrono::Utc::now();
    // Every name is checked before any work is done: nothing is built that could not be tagged.
    let tags = args.tags.iter().map(|t| Reference::parse(t)).collect::<Result<Vec<_>, _>>()?;
    let outputs = super::build_output::plan(
        &args.outputs,
        args.push,
        args.load,
        &tags,
        args.quiet,
        std::io::stdout().is_terminal(),
    )?;
    let call = Call::parse(args.check, args.call.as_deref())?;
    let mut build_args = parse_build_args(&args.build_args)?;
    let source_date_epoch = source_date_epoch(args.source_date_epoch, &build_args)?;
    if let Some(epoch) = source_date_epoch {
        // Whichever way it was given, ARG SOURCE_DATE_EPOCH sees it, as buildx passes it.
        build_args.insert("SOURCE_DATE_EPOCH".to_string(), epoch.to_string());
    }
    check_network(args.network.as_deref())?;
    let policy = match args.pull.as_str() {
        "always" | "true" => PullPolicy::Always,
        "missing" | "false" => PullPolicy::Missing,
        "never" => PullPolicy::Never,
        other => bail!("invalid --pull \"{other}\" (always, missing, never)"),
    };
    let labels = parse_labels(&args.labels)?;
    let secrets = read_secrets(&args.secrets)?;
    let cache_specs = |raw: &[String], direction| {
        raw.iter().map(|s| CacheSpec::parse(s, direction)).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)
    };
    let cache_from = cache_specs(&args.cache_from, Direction::From)?;
    let cache_to = cache_specs(&args.cache_to, Direction::To)?;
    let printer = Printer::new(if args.quiet { ProgressMode::Quiet } else { args.progress });

    for spec in &cache_from {
        printer.note(&spec.import(store).map_err(anyhow::Error::msg)?);
    }
    let spec = ContextSpec { context: &args.context, dockerfile: args.file.as_deref() };
    let context = BuildContext::open(&spec, &mut std::io::stdin().lock())?;
    let dockerfile =
        kiln_builder::dockerfile::parse_bytes(&context.dockerfile).map_err(|e| e.in_file(&context.dockerfile_name))?;
    // The parser's warnings are the checks' NoEmptyContinuation; the plan repeats them.
    let parse_warnings: Vec<String> =
        dockerfile.warnings.iter().map(|w| format!("{}:{}: {}", context.dockerfile_name, w.line, w.message)).collect();
    let platforms = target_platforms(args.platform.as_deref())?;
    let attestations = Attestations::parse(args.sbom.as_deref(), args.provenance.as_deref(), &args.attest)?;
    let plan_options = |platform: &Option<String>| PlanOptions {
        build_args: build_args.clone(),
        target: args.target.clone(),
        platform: platform.clone(),
        host_platform: host_platform(),
        file_name: context.dockerfile_name.clone(),
    };
    let store_images = StoreImages::new(store, policy)
        .with_client_options(crate::config::client_options(kiln_cas::registry::ClientOptions::default())?);
    // The checks and the planner look base images up once between them.
    let images = kiln_builder::lint::CachedImages::new(&store_images);
    // The checks look at the first platform's plan (BuildKit lints each; the findings that
    // depend on the platform are the base-image ones).
    let first_options = plan_options(&platforms[0]);
    if let Call::Check { ignore_status } = call {
        return super::build_check::check(&dockerfile, &context, &first_options, &images, ignore_status);
    }
    let lint_report = super::build_check::before_build(&dockerfile, &context, &first_options, &images)?;
    let mode = if args.quiet { ProgressMode::Quiet } else { args.progress };
    let mut build_plans = Vec::with_capacity(platforms.len());
    let mut shown: Vec<String> = Vec::new();
    for platform in &platforms {
        let build_plan = plan(&dockerfile, &plan_options(platform), &images)?;
        if build_plans.is_empty() {
            super::build_check::report_before_solving(&lint_report, &context.dockerfile_name, mode, &printer)?;
        }
        for warning in build_plan.warnings.iter().filter(|w| !super::build_check::already_reported(w, &parse_warnings))
        {
            if !shown.contains(warning) {
                printer.event(ProgressEvent::Warning(warning.clone()));
                shown.push(warning.clone());
            }
        }
        build_plans.push(build_plan);
    }
    let step_ids = StepIds::default();
    let isolation = args
        .isolation
        .as_deref()
        .map(|text| {
            Isolation::parse(text).ok_or_else(|| {
                anyhow::anyhow!("invalid --isolation \"{text}\": use rootful (or oci), rootless or chroot")
            })
        })
        .transpose()?;
    let multi = platforms.len() > 1;
    let solve_options = |platform: &Option<String>| SolveOptions {
        context_dir: &context.dir,
        ignore: &context.ignore,
        file_name: &context.dockerfile_name,
        source_date_epoch,
        labels: labels.clone(),
        secrets: secrets.clone(),
        network: args.network.clone(),
        isolation,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        progress: &printer,
        platform_label: if multi { platform.clone() } else { None },
        step_ids: &step_ids,
    };
    if args.check_reproducible {
        if multi {
            bail!("--check-reproducible checks one platform at a time; give one --platform");
        }
        return super::reproduce::check(store, &build_plans[0], &solve_options(&platforms[0]));
    }
    if (multi || attestations.any()) && !outputs.files.iter().all(|f| f.keeps_platforms()) {
        bail!(
            "-o type=local and type=tar hold one platform's files and no attestations; use -o type=oci, type=docker or \
             type=registry for several platforms or --sbom/--provenance"
        );
    }
    // Each platform is its own build, all at once (BuildKit solves them side by side).
    let results: Vec<Result<kiln_builder::solve::BuildOutput, kiln_builder::solve::SolveError>> = if multi {
        std::thread::scope(|scope| {
            let handles: Vec<_> = build_plans
                .iter()
                .zip(&platforms)
                .map(|(build_plan, platform)| {
                    let options = solve_options(platform);
                    scope.spawn(move || solve(store, build_plan, &options))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a platform's build panicked")).collect()
        })
    } else {
        vec![solve(store, &build_plans[0], &solve_options(&platforms[0]))]
    };
    let mut built = Vec::with_capacity(results.len());
    for (result, platform) in results.into_iter().zip(&platforms) {
        match result {
            Ok(output) => built.push(output),
            Err(e) if multi => {
                return Err(anyhow::Error::new(e).context(format!("building for {}", platform.as_deref().unwrap_or(""))))
            }
            Err(e) => return Err(e.into()),
        }
    }
    for output in &built {
        printer.note(&format!("writing image {}", output.image_id));
    }
    for spec in &cache_to {
        let cache_keys: Vec<String> = built.iter().flat_map(|o| o.cache_keys.iter().cloned()).collect();
        let image_keys: Vec<String> = built.iter().flat_map(|o| o.image_keys.iter().cloned()).collect();
        printer.note(&spec.export(store, &cache_keys, &image_keys).map_err(anyhow::Error::msg)?);
    }
    let output = &built[0];
    // Attestations make an index even of one platform's image, as BuildKit's do.
    let as_list = multi || attestations.any();
    let result_id = if as_list {
        let facts = BuildFacts {
            build_args: &build_args,
            labels: &labels,
            target: args.target.as_deref(),
            dockerfile_name: &context.dockerfile_name,
            dockerfile: &context.dockerfile,
            context_digest: match attestations.provenance {
                Some(_) => Some(
                    kiln_builder::context::context_digest(&context.dir, &context.ignore)
                        .with_context(|| format!("hashing the build context {}", context.dir.display()))?,
                ),
                None => None,
            },
            secret_ids: secrets.keys().cloned().collect(),
            no_network: args.network.as_deref() == Some("none"),
            started_on,
            source_date_epoch,
            name: tags.first().map(|t| t.familiar()),
        };
        let mut entries: Vec<NewListEntry> = Vec::with_capacity(built.len());
        for (output, build_plan) in built.iter().zip(&build_plans) {
            let attestations = super::build_attest::predicates(
                store,
                &output.image_id,
                build_plan,
                attestations,
                &facts,
                &mut |warning| printer.event(ProgressEvent::Warning(warning)),
            )?;
            entries.push(NewListEntry { image: output.image_id.clone(), attestations });
        }
        let list = store.add_image_list(&entries, &outputs.store_names, &host_platform())?;
        if attestations.any() {
            printer.note("exporting attestation manifests");
        }
        printer.note(&format!("exporting manifest list {list}"));
        list
    } else {
        store.add_image(&output.image_id, &outputs.store_names)?;
        output.image_id.clone()
    };
    for tag in &outputs.store_names {
        printer.note(&format!("naming to {tag}"));
    }
    super::build_output::export(
        store,
        &output.image_id,
        multi.then_some(&result_id),
        &outputs,
        source_date_epoch,
        &printer,
    )?;
    if let Some(path) = &args.iidfile {
        std::fs::write(path, result_id.to_string()).with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let metadata = if as_list {
            json!({
                "containerimage.digest": result_id.to_string(),
                "image.name": tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
            })
        } else {
            let image = store.image(&output.image_id)?;
            let sizes = store.layer_sizes(&image)?;
            let manifest = kiln_cas::image::uncompressed_manifest(&image, &sizes)?;
            json!({
                "containerimage.config.digest": output.image_id.to_string(),
                "containerimage.digest": kiln_cas::Digest::of(&manifest).to_string(),
                "image.name": tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
            })
        };
        std::fs::write(path, serde_json::to_vec_pretty(&metadata)?)
            .with_context(|| format!("writing --metadata-file {}", path.display()))?;
    }
    if args.quiet {
        println!("{result_id}");
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--platform a,b,…`: each platform once, in the order given (`None`: the host's, one build).
fn target_platforms(raw: Option<&str>) -> Result<Vec<Option<String>>> {
    let Some(raw) = raw else { return Ok(vec![None]) };
    let mut platforms: Vec<Option<String>> = Vec::new();
    for item in raw.split(',').map(str::trim) {
        let platform = kiln_cas::registry::Platform::parse(item).map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
        if platform.os != "linux" {
            bail!("--platform \"{item}\": kiln builds linux images only");
        }
        let text = Some(platform.to_string());
        if !platforms.contains(&text) {
            platforms.push(text);
        }
    }
    Ok(platforms)
}

/// `KEY=VALUE`, or a bare `KEY` taking its value from the environment (skipped when unset), as
/// docker does. A name is not empty and has no whitespace or control characters (no ARG could
/// declare it).
fn parse_build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for item in raw {
        let (key, value) = match item.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (item.as_str(), None),
        };
        if key.is_empty() {
            bail!("invalid --build-arg \"{item}\": expected KEY=VALUE or KEY, the name is empty");
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("invalid --build-arg \"{item}\": the name \"{key}\" contains whitespace or control characters");
        }
        match value {
            Some(value) => {
                args.insert(key.to_string(), value.to_string());
            }
            None => {
                if let Ok(value) = std::env::var(key) {
                    args.insert(key.to_string(), value);
                }
            }
        }
    }
    Ok(args)
}

/// SOURCE_DATE_EPOCH from `--source-date-epoch`, `--build-arg SOURCE_DATE_EPOCH=N` (BuildKit's
/// interface) or the environment, in that order; the flag and the build arg must agree.
fn source_date_epoch(flag: Option<i64>, build_args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    let parse = |value: &str, from: &str| -> Result<i64> {
        value.trim().parse().map_err(|_| anyhow::anyhow!("invalid {from} \"{value}\": not a Unix time in seconds"))
    };
    let arg = build_args.get("SOURCE_DATE_EPOCH").map(|v| parse(v, "--build-arg SOURCE_DATE_EPOCH")).transpose()?;
    match (flag, arg) {
        (Some(f), Some(a)) if f != a => {
            bail!("--source-date-epoch {f} and --build-arg SOURCE_DATE_EPOCH={a} disagree: give one")
        }
        (Some(epoch), _) | (None, Some(epoch)) => Ok(Some(epoch)),
        (None, None) => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) if !value.is_empty() => Ok(Some(parse(&value, "$SOURCE_DATE_EPOCH")?)),
            _ => Ok(None),
        },
    }
}

/// `--network`: the modes RUN steps can have, checked even when every step is cached.
fn check_network(network: Option<&str>) -> Result<()> {
    match network {
        None | Some("default" | "host" | "none") => Ok(()),
        Some(other) => bail!("network mode \"{other}\" not supported by kiln (default, host, none)"),
    }
}

/// `id=ID,src=FILE` (also `source=`), `id=ID,env=VAR`, or `id=ID` alone (the env var ID, as
/// docker reads it). The values live only in memory and in the RUN's private mount.
fn read_secrets(raw: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut secrets = BTreeMap::new();
    for item in raw {
        let mut id = None;
        let mut source = None;
        let mut env = None;
        for field in item.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => source = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("invalid --secret \"{item}\": expected id=ID,src=FILE or id=ID,env=VAR"),
            }
        }
        let Some(id) = id else { bail!("invalid --secret \"{item}\": id= is required") };
        let value = match (source, env) {
            (Some(path), _) => std::fs::read(&path).with_context(|| format!("reading secret {id} from {path}"))?,
            (None, Some(var)) => std::env::var(&var)
                .with_context(|| format!("secret {id}: environment variable {var} is not set"))?
                .into_bytes(),
            (None, None) => {
                std::env::var(&id).with_context(|| format!("secret {id}: give src=FILE or env=VAR"))?.into_bytes()
            }
        };
        secrets.insert(id, value);
    }
    Ok(secrets)
}

fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !item.is_empty() => Ok((item.clone(), String::new())),
            _ => bail!("invalid --label \"{item}\": expected KEY=VALUE"),
        })
        .collect()
}

/// `linux/amd64`, `linux/arm64`, … for the machine kiln runs on.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("linux/{arch}")
}
