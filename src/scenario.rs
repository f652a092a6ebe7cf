//! Scenario files: a replay as QA runs it before each grey-scale step, in
//! one reviewed TOML file instead of a long command line (`tandem run`).
//!
//! Every `tandem replay` flag is a top-level key of the same name
//! (`rate = 200`, `max-lag = "1s"`, `learn-noise = true`); on top of
//! those, `[targets.legacy|new|legacy-2]` (base URL, headers, TLS files),
//! `[rules]` inline or `rules = "file"`, `[gates]`, and `setup` and
//! `teardown` commands. The file becomes the argument list of `tandem
//! replay`, so that a scenario means exactly what the same flags do; flags
//! on the command line replace the file's. docs/scenarios.md has the keys.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gate::Gate;

/// A scenario file, read and checked.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Where it was read from.
    pub path: PathBuf,
    /// The captures to replay; more than one are mixed into one replay,
    /// each keeping its own timing.
    pub captures: Vec<PathBuf>,
    /// `tandem replay`'s arguments, in order, each with where it came from.
    args: Vec<(OsString, Option<Origin>)>,
    /// The `[rules]` table, when the rules are inline: TOML text.
    pub inline_rules: Option<String>,
    /// `[gates]`, in the file's order.
    pub gates: Vec<Gate>,
    /// Commands run before the replay (`sh -c`); one failing stops the run.
    pub setup: Vec<String>,
    /// Commands run after it, whatever its outcome.
    pub teardown: Vec<String>,
    /// Longest a setup or teardown command may take.
    pub command_timeout: Duration,
    /// `[capacity]` or `[shadow]`: the command the scenario runs instead of
    /// a replay, and that command's own flags from the section.
    pub section: Option<Section>,
}

/// A scenario section that runs another command than `tandem replay`.
#[derive(Debug, Clone)]
pub struct Section {
    /// `capacity` or `shadow`.
    pub name: &'static str,
    /// Its flags, as written in the section.
    pub args: Vec<(OsString, Option<Origin>)>,
}

/// The sections a scenario may hold: name, and its command's flags.
pub type Sections<'a> = &'a [(&'static str, Flags)];

/// Where a value was written: for errors that name the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// 1-based line.
    pub line: usize,
    /// The key, dotted (`targets.new.url`).
    pub key: String,
}

/// What is wrong with a scenario file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The file.
    pub file: PathBuf,
    /// Where in it, when known.
    pub origin: Option<Origin>,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                o.line,
                o.key,
                self.why
            ),
            None => write!(f, "{}: {}", self.file.display(), self.why),
        }
    }
}

/// How a `tandem replay` flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// `--flag`: a boolean key.
    Switch,
    /// `--flag VALUE`, once.
    One,
    /// `--flag VALUE`, repeatable: an array key (or one value).
    Many,
}

/// The flags of `tandem replay`: long name → how it takes its value.
pub type Flags = std::collections::BTreeMap<String, Takes>;

/// Keys that name files to read: they must exist.
const INPUT_FILES: &[&str] = &[
    "capture",
    "rules",
    "ca-cert",
    "client-cert",
    "client-key",
    "legacy-ca-cert",
    "legacy-client-cert",
    "legacy-client-key",
    "new-ca-cert",
    "new-client-cert",
    "new-client-key",
];

/// Scenario keys that are not replay flags.
const OWN_KEYS: &[&str] = &[
    "capture",
    "targets",
    "gates",
    "setup",
    "teardown",
    "command-timeout",
    "capacity",
    "shadow",
    "effects",
];

impl Scenario {
    /// Reads `path`, checking every key against `flags` (those of `tandem
    /// replay`), every type, every gate and that every input file exists.
    pub fn load(path: &Path, flags: &Flags) -> Result<Scenario, ScenarioError> {
        Scenario::load_with_sections(path, flags, &[])
    }

    /// [`Scenario::load`], where a section (`[capacity]`, `[shadow]`) may
    /// hold that command's flags.
    pub fn load_with_sections(
        path: &Path,
        flags: &Flags,
        sections: Sections,
    ) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            origin: None,
            why: format!("cannot read the scenario: {e}"),
        })?;
        let reader = Reader::parse(path, &text)?;
        reader.scenario(flags, sections)
    }

    /// The section's command's arguments: the capture when it takes one,
    /// the flags of the file that the command knows (targets, rules,
    /// timeouts…), the section's, then `overrides`.
    pub fn section_args(
        &self,
        flags: &Flags,
        with_capture: bool,
        overrides: &[OsString],
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut keeping = with_capture;
        let section = self.section.iter().flat_map(|s| &s.args);
        for (arg, _) in self.args.iter().chain(section) {
            if let Some(flag) = arg.to_str().and_then(|a| a.strip_prefix("--")) {
                keeping = flags.contains_key(flag);
            }
            if keeping {
                args.push(arg.clone());
            }
        }
        let scenario = Scenario {
            args: args.into_iter().map(|a| (a, None)).collect(),
            ..self.clone()
        };
        scenario.replay_args(overrides)
    }

    /// `tandem replay`'s arguments (after `replay`): the file's, less the
    /// flags `overrides` gives, then `overrides`.
    pub fn replay_args(&self, overrides: &[OsString]) -> Vec<OsString> {
        let given: BTreeSet<String> = overrides
            .iter()
            .filter_map(|a| a.to_str()?.strip_prefix("--"))
            .map(|a| a.split('=').next().unwrap_or(a).to_string())
            .collect();
        let mut args = Vec::new();
        // A flag's value follows it: both go, or both stay. The capture
        // comes first, before any flag, and stays.
        let mut skipping = false;
        for (arg, _) in &self.args {
            if let Some(flag) = arg.to_str().and_then(|a| a.strip_prefix("--")) {
                skipping = given.contains(flag);
            }
            if !skipping {
                args.push(arg.clone());
            }
        }
        args.extend(overrides.iter().cloned());
        args
    }

    /// Where the file set `--flag`, if it did: to name the line of a value
    /// `tandem replay` refuses.
    pub fn origin_of(&self, flag: &str) -> Option<&Origin> {
        self.args
            .iter()
            .chain(self.section.iter().flat_map(|s| &s.args))
            .find(|(a, _)| a.to_str().and_then(|a| a.strip_prefix("--")) == Some(flag))
            .and_then(|(_, o)| o.as_ref())
    }

    /// An error at `origin` in this file.
    pub fn error(&self, origin: Option<Origin>, why: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.path.clone(),
            origin,
            why: why.into(),
        }
    }
}

/// The file parsed twice: as values (toml) and as a document that knows
/// where each key is written (toml_edit), for line numbers.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    values: toml::Table,
    document: toml_edit::ImDocument<&'a str>,
}

impl<'a> Reader<'a> {
    fn parse(path: &'a Path, text: &'a str) -> Result<Reader<'a>, ScenarioError> {
        let document = toml_edit::ImDocument::parse(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_at(text, s.start));
            ScenarioError {
                file: path.to_path_buf(),
                origin: Some(Origin {
                    line,
                    key: "(syntax)".into(),
                }),
                why: e.message().trim().to_string(),
            }
        })?;
        let values: toml::Table = text.parse().map_err(|e: toml::de::Error| ScenarioError {
            file: path.to_path_buf(),
            origin: None,
            why: e.message().to_string(),
        })?;
        Ok(Reader {
            path,
            text,
            values,
            document,
        })
    }

    /// Where `keys` (a path of table keys) is written.
    fn origin(&self, keys: &[&str]) -> Origin {
        let mut table: &dyn toml_edit::TableLike = self.document.as_table();
        let mut line = 0;
        for (i, key) in keys.iter().enumerate() {
            let Some((k, item)) = table.get_key_value(key) else {
                break;
            };
            line = k
                .span()
                .or_else(|| item.span())
                .map_or(line, |s| line_at(self.text, s.start));
            match item.as_table_like() {
                Some(t) if i + 1 < keys.len() => table = t,
                _ => break,
            }
        }
        Origin {
            line,
            key: keys.join("."),
        }
    }

    fn error(&self, keys: &[&str], why: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.path.to_path_buf(),
            origin: Some(self.origin(keys)),
            why: why.into(),
        }
    }

    fn scenario(&self, flags: &Flags, sections: Sections) -> Result<Scenario, ScenarioError> {
        let mut args: Vec<(OsString, Option<Origin>)> = Vec::new();
        let section = self.section(sections)?;
        let shadow = section.as_ref().is_some_and(|s| s.name == "shadow");
        // Shadowing serves live traffic: it has no capture to replay.
        let none = toml::Value::Array(Vec::new());
        let capture = match self.values.get("capture") {
            Some(capture) => capture,
            None if shadow => &none,
            None => {
                return Err(ScenarioError {
                    file: self.path.to_path_buf(),
                    origin: None,
                    why: "no `capture`: the capture file to replay".into(),
                })
            }
        };
        let captures = match capture {
            toml::Value::Array(list) if !list.is_empty() => list
                .iter()
                .map(|c| self.string(&["capture"], c))
                .collect::<Result<Vec<_>, _>>()?,
            toml::Value::Array(_) if shadow => Vec::new(),
            toml::Value::Array(_) => {
                return Err(self.error(&["capture"], "an empty list: name a capture file"))
            }
            one => vec![self.string(&["capture"], one)?],
        };
        for capture in &captures {
            self.exists(&["capture"], capture)?;
        }
        // The first stands for all on the replay's command line; `tandem
        // run` mixes them into one capture first.
        if let Some(first) = captures.first() {
            args.push((first.clone().into(), Some(self.origin(&["capture"]))));
        }
        let mut inline_rules = None;
        for (key, value) in &self.values {
            if OWN_KEYS.contains(&key.as_str()) {
                continue;
            }
            if key == "rules" && value.is_table() {
                inline_rules =
                    Some(toml::to_string(value).map_err(|e| {
                        self.error(&["rules"], format!("cannot be written back: {e}"))
                    })?);
                continue;
            }
            let Some(takes) = flags.get(key.as_str()) else {
                return Err(self.error(&[key], unknown_key(key, flags, "tandem replay")));
            };
            self.flag(&[key], key, *takes, value, &mut args)?;
        }
        if let Some(targets) = self.values.get("targets") {
            self.targets(targets, &mut args)?;
        }
        if let Some(effects) = self.values.get("effects") {
            self.effects(effects, &mut args)?;
        }
        Ok(Scenario {
            path: self.path.to_path_buf(),
            captures: captures.into_iter().map(PathBuf::from).collect(),
            args,
            inline_rules,
            gates: self.gates()?,
            setup: self.commands("setup")?,
            teardown: self.commands("teardown")?,
            command_timeout: self.command_timeout()?,
            section,
        })
    }

    /// `[capacity]` or `[shadow]`: that command's flags, checked as the
    /// others are. One section at most.
    fn section(&self, sections: Sections) -> Result<Option<Section>, ScenarioError> {
        let mut found: Option<Section> = None;
        for name in ["capacity", "shadow"] {
            let Some(table) = self.values.get(name) else {
                continue;
            };
            let Some((name, flags)) = sections.iter().find(|(n, _)| *n == name) else {
                return Err(self.error(&[name], "not a key here"));
            };
            if let Some(first) = &found {
                return Err(self.error(
                    &[name],
                    format!("a scenario is a [{}] or a [{name}], not both", first.name),
                ));
            }
            let table = table.as_table().ok_or_else(|| {
                self.error(&[name], format!("expected a table, found {}", kind(table)))
            })?;
            if *name == "capacity" && self.values.contains_key("gates") {
                return Err(self.error(
                    &["gates"],
                    "a capacity search is held to its [capacity] slo and limits, not to gates",
                ));
            }
            let mut args = Vec::new();
            for (key, value) in table {
                let keys = [*name, key.as_str()];
                let Some(takes) = flags.get(key.as_str()) else {
                    let command = format!("tandem {name}");
                    return Err(self.error(&keys, unknown_key(key, flags, &command)));
                };
                self.flag(&keys, key, *takes, value, &mut args)?;
            }
            found = Some(Section { name, args });
        }
        Ok(found)
    }

    /// One flag from `value` at `keys`: `--flag VALUE` as many times as it has values.
    fn flag(
        &self,
        keys: &[&str],
        flag: &str,
        takes: Takes,
        value: &toml::Value,
        args: &mut Vec<(OsString, Option<Origin>)>,
    ) -> Result<(), ScenarioError> {
        let origin = Some(self.origin(keys));
        let mut push = |arg: String| args.push((arg.into(), origin.clone()));
        match (takes, value) {
            (Takes::Switch, toml::Value::Boolean(on)) => {
                if *on {
                    push(format!("--{flag}"));
                }
            }
            (Takes::Switch, other) => {
                return Err(self.error(
                    keys,
                    format!("expected true or false, found {}", kind(other)),
                ))
            }
            (Takes::Many, toml::Value::Array(values)) => {
                for value in values {
                    let text = self.scalar(keys, value)?;
                    self.exists_if_input(keys, flag, &text)?;
                    push(format!("--{flag}"));
                    push(text);
                }
            }
            (Takes::One | Takes::Many, value) => {
                let text = self.scalar(keys, value)?;
                self.exists_if_input(keys, flag, &text)?;
                push(format!("--{flag}"));
                push(text);
            }
        }
        Ok(())
    }

    /// `[targets.legacy|new|legacy-2]`: their flags of `tandem replay`.
    /// `[effects]`: `quiet` and `pg-map`, and per stack (`[effects.legacy]`,
    /// `[effects.new]`) where its effects are collected: `webhook` and
    /// `smtp` (addresses to listen on), `pg` (its database's URL).
    fn effects(
        &self,
        effects: &toml::Value,
        args: &mut Vec<(OsString, Option<Origin>)>,
    ) -> Result<(), ScenarioError> {
        let table = effects.as_table().ok_or_else(|| {
            self.error(
                &["effects"],
                format!("expected a table, found {}", kind(effects)),
            )
        })?;
        for (name, value) in table {
            let keys = ["effects", name.as_str()];
            match name.as_str() {
                "quiet" => self.flag(&keys, "effects-quiet", Takes::One, value, args)?,
                "pg-map" => {
                    self.flag(&keys, "pg-map", Takes::One, value, args)?;
                    self.exists(&keys, &self.string(&keys, value)?)?;
                }
                "legacy" | "new" => {
                    let sources = value.as_table().ok_or_else(|| {
                        self.error(&keys, format!("expected a table, found {}", kind(value)))
                    })?;
                    for (source, at) in sources {
                        let keys = ["effects", name.as_str(), source.as_str()];
                        let flag = match source.as_str() {
                            "webhook" => format!("{name}-webhook-sink"),
                            "smtp" => format!("{name}-smtp-sink"),
                            "pg" => format!("{name}-pg"),
                            _ => {
                                return Err(
                                    self.error(&keys, "unknown effect source: webhook, smtp or pg")
                                )
                            }
                        };
                        self.flag(&keys, &flag, Takes::One, at, args)?;
                    }
                }
                _ => return Err(self.error(&keys, "unknown key: legacy, new, quiet or pg-map")),
            }
        }
        Ok(())
    }

    fn targets(
        &self,
        targets: &toml::Value,
        args: &mut Vec<(OsString, Option<Origin>)>,
    ) -> Result<(), ScenarioError> {
        let targets = targets.as_table().ok_or_else(|| {
            self.error(
                &["targets"],
                format!("expected a table, found {}", kind(targets)),
            )
        })?;
        for (name, target) in targets {
            let keys = ["targets", name.as_str()];
            if !matches!(name.as_str(), "legacy" | "new" | "legacy-2") {
                return Err(self.error(&keys, "unknown target: legacy, new or legacy-2"));
            }
            let table = target.as_table().ok_or_else(|| {
                self.error(&keys, format!("expected a table, found {}", kind(target)))
            })?;
            if !table.contains_key("url") {
                return Err(self.error(&keys, "no `url`: the stack's base URL"));
            }
            for (key, value) in table {
                let keys = ["targets", name.as_str(), key.as_str()];
                let flag = match (name.as_str(), key.as_str()) {
                    ("legacy-2", "url") => {
                        args.push(("--learn-noise".into(), Some(self.origin(&keys))));
                        "legacy-2".to_string()
                    }
                    ("legacy-2", _) => {
                        return Err(self.error(
                            &keys,
                            "legacy-2 takes only `url`: it is sent what legacy is sent",
                        ))
                    }
                    (_, "url") => name.clone(),
                    (_, "headers") => {
                        self.headers(&keys, name, value, args)?;
                        continue;
                    }
                    (_, "ca-cert" | "client-cert" | "client-key") => format!("{name}-{key}"),
                    _ => {
                        return Err(self.error(
                            &keys,
                            "unknown key: a target takes url, headers, ca-cert, client-cert and client-key",
                        ))
                    }
                };
                let takes = if key == "ca-cert" {
                    Takes::Many
                } else {
                    Takes::One
                };
                self.flag(&keys, &flag, takes, value, args)?;
            }
        }
        Ok(())
    }

    /// `headers = { "x-tenant" = "qa" }`: `--legacy-header "x-tenant: qa"`.
    fn headers(
        &self,
        keys: &[&str],
        target: &str,
        value: &toml::Value,
        args: &mut Vec<(OsString, Option<Origin>)>,
    ) -> Result<(), ScenarioError> {
        let table = value.as_table().ok_or_else(|| {
            self.error(
                keys,
                format!("expected a table of name = value, found {}", kind(value)),
            )
        })?;
        for (name, value) in table {
            let value = self.scalar(keys, value)?;
            let origin = Some(self.origin(keys));
            args.push((format!("--{target}-header").into(), origin.clone()));
            args.push((format!("{name}: {value}").into(), origin));
        }
        Ok(())
    }

    /// `[gates]`: `name = "expression"` or `name = { check, route }`.
    fn gates(&self) -> Result<Vec<Gate>, ScenarioError> {
        let Some(gates) = self.values.get("gates") else {
            return Ok(Vec::new());
        };
        let gates = gates.as_table().ok_or_else(|| {
            self.error(
                &["gates"],
                format!("expected a table, found {}", kind(gates)),
            )
        })?;
        let mut out = Vec::new();
        for (name, gate) in gates {
            let keys = ["gates", name.as_str()];
            let (check, route, over, abort) = match gate {
                toml::Value::String(check) => (check.clone(), None, None, false),
                toml::Value::Table(table) => {
                    for key in table.keys() {
                        if !["check", "route", "over", "abort"].contains(&key.as_str()) {
                            return Err(self.error(
                                &["gates", name, key],
                                "unknown key: a gate takes check, route, over and abort",
                            ));
                        }
                    }
                    let check = table
                        .get("check")
                        .ok_or_else(|| self.error(&keys, "no `check`: the gate's expression"))?;
                    let route = table
                        .get("route")
                        .map(|r| self.string(&["gates", name, "route"], r))
                        .transpose()?;
                    let over = table
                        .get("over")
                        .map(|o| {
                            let keys = ["gates", name.as_str(), "over"];
                            let text = self.string(&keys, o)?;
                            humantime::parse_duration(&text)
                                .map_err(|e| self.error(&keys, format!("{text:?}: {e}")))
                        })
                        .transpose()?;
                    let abort = match table.get("abort") {
                        None => false,
                        Some(toml::Value::Boolean(b)) => *b,
                        Some(other) => {
                            return Err(self.error(
                                &["gates", name, "abort"],
                                format!("expected true or false, found {}", kind(other)),
                            ))
                        }
                    };
                    if abort && over.is_none() {
                        return Err(self.error(
                            &["gates", name, "abort"],
                            "abort needs a window: over = \"30s\"",
                        ));
                    }
                    (
                        self.string(&["gates", name, "check"], check)?,
                        route,
                        over,
                        abort,
                    )
                }
                other => {
                    return Err(self.error(
                        &keys,
                        format!("expected an expression or a table, found {}", kind(other)),
                    ))
                }
            };
            let mut gate =
                Gate::parse(name, &check, route).map_err(|e| self.error(&keys, e.why))?;
            if let Some(over) = over {
                gate = gate
                    .windowed(over, abort)
                    .map_err(|e| self.error(&keys, e.why))?;
            }
            out.push(gate);
        }
        Ok(out)
    }

    fn commands(&self, key: &str) -> Result<Vec<String>, ScenarioError> {
        match self.values.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::String(one)) => Ok(vec![one.clone()]),
            Some(toml::Value::Array(many)) => many.iter().map(|c| self.string(&[key], c)).collect(),
            Some(other) => Err(self.error(
                &[key],
                format!(
                    "expected a command or an array of commands, found {}",
                    kind(other)
                ),
            )),
        }
    }

    fn command_timeout(&self) -> Result<Duration, ScenarioError> {
        let key = "command-timeout";
        match self.values.get(key) {
            None => Ok(Duration::from_secs(600)),
            Some(value) => {
                let text = self.string(&[key], value)?;
                humantime::parse_duration(&text)
                    .map_err(|e| self.error(&[key], format!("{text:?}: {e}")))
            }
        }
    }

    fn string(&self, keys: &[&str], value: &toml::Value) -> Result<String, ScenarioError> {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.error(keys, format!("expected a string, found {}", kind(value))))
    }

    /// A value as it would be written on the command line.
    fn scalar(&self, keys: &[&str], value: &toml::Value) -> Result<String, ScenarioError> {
        match value {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(x) => Ok(x.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            other => Err(self.error(
                keys,
                format!("expected a string or a number, found {}", kind(other)),
            )),
        }
    }

    fn exists_if_input(&self, keys: &[&str], flag: &str, path: &str) -> Result<(), ScenarioError> {
        if INPUT_FILES.contains(&flag) {
            self.exists(keys, path)?;
        }
        Ok(())
    }

    fn exists(&self, keys: &[&str], path: &str) -> Result<(), ScenarioError> {
        match Path::new(path).exists() {
            true => Ok(()),
            false => Err(self.error(keys, format!("{path}: no such file"))),
        }
    }
}

fn unknown_key(key: &str, flags: &Flags, command: &str) -> String {
    let near = flags
        .keys()
        .map(String::as_str)
        .chain(OWN_KEYS.iter().copied())
        .find(|f| f.starts_with(key) || key.starts_with(f) || f.replace('-', "_") == key);
    match near {
        Some(near) => format!(
            "unknown key (not a `{command}` flag nor a scenario key); did you mean `{near}`?"
        ),
        None => format!("unknown key (not a `{command}` flag nor a scenario key)"),
    }
}

fn kind(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// 1-based line of byte `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}
