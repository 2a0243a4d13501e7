//! Build progress on stderr: `tty` (live lines via indicatif), `plain` (BuildKit's `#N` lines for
//! CI logs), `rawjson` (one JSON object per event, with start and end times) or `quiet`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_builder::solve::{Progress, ProgressEvent};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

pub enum Printer {
    Tty(TtyPrinter),
    Plain(Mutex<HashMap<usize, Instant>>),
    RawJson(Mutex<HashMap<usize, (String, SystemTime)>>),
    Quiet,
}

pub struct TtyPrinter {
    multi: MultiProgress,
    bars: Mutex<HashMap<usize, (ProgressBar, Instant)>>,
}

impl Printer {
    pub fn new(mode: ProgressMode) -> Printer {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        };
        match mode {
            ProgressMode::Tty => Printer::Tty(TtyPrinter { multi: MultiProgress::new(), bars: Mutex::default() }),
            ProgressMode::Plain | ProgressMode::Auto => Printer::Plain(Mutex::default()),
            ProgressMode::Rawjson => Printer::RawJson(Mutex::default()),
            ProgressMode::Quiet => Printer::Quiet,
        }
    }

    /// A line outside any step (the final "writing image" and "naming to" lines).
    pub fn note(&self, line: &str) {
        match self {
            Printer::Tty(tty) => {
                let _ = tty.multi.println(format!(" => {line}"));
            }
            Printer::Plain(_) => eprintln!("#0 {line}"),
            Printer::RawJson(_) => eprintln!("{}", json!({"logs": [{"vertex": "export", "data": line}]})),
            Printer::Quiet => {}
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Progress for Printer {
    fn event(&self, event: ProgressEvent) {
        match self {
            Printer::Quiet => {}
            Printer::Plain(started) => {
                let mut started = started.lock().unwrap_or_else(|p| p.into_inner());
                let mut err = std::io::stderr().lock();
                let _ = match event {
                    ProgressEvent::Started { id, name, .. } => {
                        started.insert(id, Instant::now());
                        writeln!(err, "#{id} {name}")
                    }
                    ProgressEvent::Log { id, line } => writeln!(err, "#{id} {line}"),
                    ProgressEvent::Finished { id, cached, error, .. } => {
                        let took = started.get(&id).map(|t| seconds(t.elapsed())).unwrap_or_default();
                        match (error, cached) {
                            (Some(e), _) => writeln!(err, "#{id} ERROR: {e}"),
                            (None, true) => writeln!(err, "#{id} CACHED"),
                            (None, false) => writeln!(err, "#{id} DONE {took}"),
                        }
                    }
                    ProgressEvent::Warning(w) => writeln!(err, "WARNING: {w}"),
                };
            }
            Printer::RawJson(steps) => {
                let mut steps = steps.lock().unwrap_or_else(|p| p.into_inner());
                let line = match event {
                    ProgressEvent::Started { id, name, at } => {
                        steps.insert(id, (name.clone(), at));
                        json!({"vertexes": [{"digest": format!("step-{id}"), "name": name, "started": rfc3339(at)}]})
                    }
                    ProgressEvent::Log { id, line } => {
                        json!({"logs": [{"vertex": format!("step-{id}"), "data": line}]})
                    }
                    ProgressEvent::Finished { id, at, cached, error } => {
                        let (name, started) = steps.get(&id).cloned().unwrap_or_else(|| (String::new(), at));
                        let mut vertex = json!({
                            "digest": format!("step-{id}"),
                            "name": name,
                            "started": rfc3339(started),
                            "completed": rfc3339(at),
                            "cached": cached,
                        });
                        if let Some(e) = error {
                            vertex["error"] = json!(e);
                        }
                        json!({"vertexes": [vertex]})
                    }
                    ProgressEvent::Warning(w) => json!({"warnings": [{"short": w}]}),
                };
                eprintln!("{line}");
            }
            Printer::Tty(tty) => {
                let mut bars = tty.bars.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    ProgressEvent::Started { id, name, .. } => {
                        let bar = tty.multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template(" => {msg} {elapsed:.dim}").expect("valid template"),
                        );
                        bar.set_message(name);
                        bar.enable_steady_tick(Duration::from_millis(100));
                        bars.insert(id, (bar, Instant::now()));
                    }
                    ProgressEvent::Log { id, line } => {
                        if bars.contains_key(&id) {
                            let _ = tty.multi.println(format!("    {line}"));
                        }
                    }
                    ProgressEvent::Finished { id, cached, error, .. } => {
                        if let Some((bar, start)) = bars.remove(&id) {
                            // Done steps become permanent lines above the live ones.
                            let status = match (error, cached) {
                                (Some(_), _) => "ERROR".to_string(),
                                (None, true) => "CACHED".to_string(),
                                (None, false) => seconds(start.elapsed()),
                            };
                            let _ = tty.multi.println(format!(" => {}  {status}", bar.message()));
                            bar.finish_and_clear();
                        }
                    }
                    ProgressEvent::Warning(w) => {
                        let _ = tty.multi.println(format!("WARNING: {w}"));
                    }
                }
            }
        }
    }
}
