//! `tandem run SCENARIO [FLAGS]`: a scenario file as `tandem replay`
//! arguments, with its gates, inline rules, and setup and teardown
//! commands around the replay; or, with a `[capacity]` or `[shadow]`
//! section, as that command's arguments.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use clap::Args;

use super::{finish, replay, shutdown_signal, EXIT_BAD_INPUT};
use crate::scenario::{Origin, Scenario, ScenarioError};

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The scenario file (TOML, docs/scenarios.md).
    scenario: PathBuf,
    /// `tandem replay` flags that replace the file's, e.g. `--rate 100`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    flags: Vec<OsString>,
}

/// `tandem run`.
pub(super) async fn command(args: RunArgs) -> anyhow::Result<ExitCode> {
    let sections = [
        ("capacity", super::capacity::flags()),
        ("shadow", super::shadow::flags()),
    ];
    let scenario = Scenario::load_with_sections(&args.scenario, &replay::flags(), &sections)?;
    if let Some(section) = &scenario.section {
        let flags = &sections
            .iter()
            .find(|(n, _)| *n == section.name)
            .expect("known")
            .1;
        return other_command(&scenario, section.name, flags, &args.flags).await;
    }
    let parsed = replay::parse(scenario.replay_args(&args.flags))
        .map_err(|e| flag_error(&scenario, &args.flags, &e))?;
    let inline_rules = match (&scenario.inline_rules, parsed.has_rules()) {
        (Some(rules), false) => Some((parsed.out().join("scenario.rules.toml"), rules.clone())),
        _ => None,
    };
    let mut job = parsed.job()?;
    job.gates.extend(scenario.gates.iter().cloned());
    if let Some((path, rules)) = inline_rules {
        std::fs::create_dir_all(&job.out_dir)?;
        crate::output::write(&path, rules)?;
        job.rules = Some(path);
    }
    // Nothing runs, and nothing is sent, before every input is checked.
    if scenario.captures.len() > 1 {
        mix(&scenario, &mut job.plan, &job.out_dir)?;
    }
    job.plan.check()?;
    let env = [
        ("TANDEM_LEGACY", job.plan.legacy.to_string()),
        ("TANDEM_NEW", job.plan.new.to_string()),
        ("TANDEM_OUT", job.out_dir.display().to_string()),
    ];
    for command in &scenario.setup {
        if let Err(why) = sh(command, &env, scenario.command_timeout).await {
            eprintln!(
                "tandem: {}: setup `{command}` {why}: nothing was sent",
                scenario.path.display()
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    }
    let outcome = replay::run(&job, shutdown_signal()).await;
    for command in &scenario.teardown {
        if let Err(why) = sh(command, &env, scenario.command_timeout).await {
            tracing::error!("{}: teardown `{command}` {why}", scenario.path.display());
        }
    }
    finish(&outcome?, job.junit.as_deref())
}

/// A scenario with `[capacity]` or `[shadow]`: that command between the
/// scenario's setup and teardown.
async fn other_command(
    scenario: &Scenario,
    name: &str,
    flags: &crate::scenario::Flags,
    overrides: &[OsString],
) -> anyhow::Result<ExitCode> {
    let shadow = name == "shadow";
    anyhow::ensure!(
        shadow || scenario.captures.len() == 1,
        "{}: a capacity search replays one capture",
        scenario.path.display()
    );
    anyhow::ensure!(
        scenario.inline_rules.is_none(),
        "{}: a [{name}] scenario takes its rules from a file (rules = \"FILE\"), not inline",
        scenario.path.display()
    );
    let args = scenario.section_args(flags, !shadow, overrides);
    let run: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<ExitCode>>>> =
        if shadow {
            let mut parsed =
                super::shadow::parse(args).map_err(|e| flag_error(scenario, overrides, &e))?;
            parsed.add_gates(scenario.gates.clone());
            Box::pin(super::shadow::command(parsed))
        } else {
            let parsed =
                super::capacity::parse(args).map_err(|e| flag_error(scenario, overrides, &e))?;
            Box::pin(super::capacity::command(parsed))
        };
    for command in &scenario.setup {
        if let Err(why) = sh(command, &[], scenario.command_timeout).await {
            eprintln!(
                "tandem: {}: setup `{command}` {why}: nothing was sent",
                scenario.path.display()
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    }
    let outcome = run.await;
    for command in &scenario.teardown {
        if let Err(why) = sh(command, &[], scenario.command_timeout).await {
            tracing::error!("{}: teardown `{command}` {why}", scenario.path.display());
        }
    }
    outcome
}

/// Several captures: each checked as the replay checks one (writes never
/// to the upstream it was recorded from), then mixed into one in the run
/// directory, which the replay plays.
fn mix(
    scenario: &Scenario,
    plan: &mut crate::replay::ReplayPlan,
    out_dir: &std::path::Path,
) -> anyhow::Result<()> {
    for capture in &scenario.captures {
        let mut one = plan.clone();
        one.capture = capture.clone();
        one.check()?;
    }
    std::fs::create_dir_all(out_dir)?;
    let mixed = out_dir.join("scenario.capture.jsonl");
    let n = crate::capture::mix(&scenario.captures, &mixed)?;
    tracing::info!(
        "{} captures mixed into {} ({n} exchanges)",
        scenario.captures.len(),
        mixed.display()
    );
    plan.capture = mixed;
    Ok(())
}

/// A flag `tandem replay` refused, named where the scenario wrote it
/// (unless the command line gave it).
fn flag_error(scenario: &Scenario, overrides: &[OsString], error: &clap::Error) -> ScenarioError {
    use clap::error::{ContextKind, ContextValue};
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg
            .trim_start_matches('-')
            .split([' ', '='])
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    let on_command_line = overrides.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a.starts_with(&format!("--{flag}")))
    });
    let origin: Option<Origin> = (!on_command_line)
        .then(|| scenario.origin_of(&flag).cloned())
        .flatten();
    let text = error.render().to_string();
    let why = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    scenario.error(origin, why)
}

/// Runs `command` with `sh -c`, its output on tandem's stderr (stdout is
/// the summary's), within `timeout`.
async fn sh(
    command: &str,
    env: &[(&str, String)],
    timeout: std::time::Duration,
) -> Result<(), String> {
    use std::os::fd::AsFd;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or(Stdio::inherit(), Stdio::from);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => Err(format!("did not finish within {timeout:?}")),
        Ok(Err(e)) => Err(format!("could not be waited for: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("failed ({status})")),
    }
}
