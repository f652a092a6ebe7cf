//! Learned noise written out as a rules file, for review (`--write-rules`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::LearnedNoise;
use crate::diff::MismatchKind;

/// Writes `noise` as a rules file at `path`: per route, the JSON paths and
/// headers that differ between two legacy answers. Differences no rule can
/// express by path (status codes, text bodies) are written as comments.
pub fn write(path: &Path, noise: &LearnedNoise, capture: &Path) -> anyhow::Result<()> {
    std::fs::write(path, render(noise, capture))
        .with_context(|| format!("{}: cannot write the learned rules", path.display()))
}

/// The rules file text.
pub fn render(noise: &LearnedNoise, capture: &Path) -> String {
    #[derive(Default)]
    struct Route {
        paths: Vec<String>,
        headers: Vec<String>,
        notes: Vec<String>,
    }
    let mut routes: BTreeMap<(String, String), Route> = BTreeMap::new();
    for g in &noise.groups {
        let route = routes
            .entry((g.method.clone(), g.route.clone()))
            .or_default();
        let rates = format!(
            "legacy/new {:.1}%, legacy/legacy {:.1}%",
            g.diff_rate * 100.0,
            g.noise_rate * 100.0
        );
        match (g.kind, &g.path) {
            (MismatchKind::Header, Some(name)) => {
                route.headers.push(format!("{}, # {rates}", quoted(name)))
            }
            (_, Some(path)) => {
                route
                    .paths
                    .push(format!("{}, # {} {rates}", quoted(path), g.kind.as_str()))
            }
            (kind, None) => route.notes.push(format!(
                "# {} differs between legacy answers too ({rates})",
                kind.as_str()
            )),
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Noise learned by tandem replay --learn-noise from {}.",
        capture.display()
    );
    let _ = writeln!(
        out,
        "# Differences also seen between two legacy answers to the same request."
    );
    let _ = writeln!(out, "# Review before use: docs/rules.md.");
    for ((method, template), route) in routes {
        let _ = writeln!(
            out,
            "\n[[route]]\nmatch = {}",
            quoted(&format!("{method} {template}"))
        );
        for note in &route.notes {
            let _ = writeln!(out, "{note}");
        }
        for (key, items) in [
            ("ignore_paths", &route.paths),
            ("ignore_headers", &route.headers),
        ] {
            if !items.is_empty() {
                let _ = writeln!(out, "{key} = [");
                for item in items {
                    let _ = writeln!(out, "  {item}");
                }
                let _ = writeln!(out, "]");
            }
        }
    }
    out
}

/// A TOML basic string: JSON's escapes are valid in TOML.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}
