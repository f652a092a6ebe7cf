//! JUnit XML for CI (`--junit FILE`): every CI system shows it. One
//! testcase per gate (suite `gates`), per mismatch group (suite `parity`,
//! classname `METHOD /route`) and per route with none (passed), learned
//! noise as skipped; run metadata as properties. Bounded: at most
//! [`MAX_CASES`] group testcases of at most [`MAX_TEXT`] bytes of text each,
//! what is left out counted in a property.

use std::collections::BTreeSet;
use std::io::{self, Write};

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use super::{MismatchGroup, Render, Report};

/// Mismatch groups written as testcases, at most.
pub const MAX_CASES: usize = 500;
/// Bytes of failure text per testcase, at most.
pub const MAX_TEXT: usize = 4096;

/// The JUnit renderer.
pub struct Junit;

impl Render for Junit {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        let mut w = Writer::new_with_indent(out, b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
            .map_err(io::Error::other)?;
        let gates = gate_cases(report);
        let parity = parity_cases(report);
        let failures = |cases: &[Case]| {
            cases
                .iter()
                .filter(|c| matches!(c.outcome, Outcome::Failed(..)))
                .count()
        };
        let skipped = |cases: &[Case]| {
            cases
                .iter()
                .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
                .count()
        };
        let seconds = format!("{:.3}", report.run.duration_ms as f64 / 1e3);
        let total = (gates.len() + parity.len()).to_string();
        let failed = (failures(&gates) + failures(&parity)).to_string();
        let skip = (skipped(&gates) + skipped(&parity)).to_string();
        w.create_element("testsuites")
            .with_attributes([
                ("name", "tandem"),
                ("tests", total.as_str()),
                ("failures", failed.as_str()),
                ("errors", "0"),
                ("skipped", skip.as_str()),
                ("time", seconds.as_str()),
            ])
            .write_inner_content(|w| {
                suite(w, "gates", &gates, Some(report))?;
                suite(w, "parity", &parity, None)
            })?;
        w.into_inner().write_all(b"\n")
    }
}

enum Outcome {
    Passed,
    Failed(String, String),
    Skipped(String),
}

struct Case {
    classname: String,
    name: String,
    outcome: Outcome,
}

fn suite<W: Write>(
    w: &mut Writer<W>,
    name: &str,
    cases: &[Case],
    properties_of: Option<&Report>,
) -> io::Result<()> {
    let tests = cases.len().to_string();
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(..)))
        .count()
        .to_string();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .count()
        .to_string();
    w.create_element("testsuite")
        .with_attributes([
            ("name", name),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("skipped", skipped.as_str()),
        ])
        .write_inner_content(|w| {
            if let Some(report) = properties_of {
                properties(w, report)?;
            }
            for case in cases {
                testcase(w, case)?;
            }
            Ok::<(), io::Error>(())
        })?;
    Ok(())
}

fn properties<W: Write>(w: &mut Writer<W>, r: &Report) -> io::Result<()> {
    let mut props = vec![
        ("capture", r.run.capture.clone()),
        ("legacy", r.run.legacy.clone()),
        ("new", r.run.new.clone()),
        ("speed", r.run.speed.to_string()),
        ("rules", r.run.rules.clone().unwrap_or_default()),
        ("exchanges", r.summary.total.to_string()),
        ("parity", format!("{:.4}", r.summary.parity)),
        ("interrupted", r.interrupted.to_string()),
    ];
    if let Some(f) = &r.fidelity {
        props.push(("fidelity", format!("{:.4}", f.rate)));
    }
    if let Some(g) = &r.generator {
        props.push(("engines", g.engines.len().to_string()));
        props.push(("engine_busiest", format!("{:.2}", g.most_busy())));
    }
    if r.mismatch_groups.len() > MAX_CASES {
        props.push((
            "groups_left_out",
            (r.mismatch_groups.len() - MAX_CASES).to_string(),
        ));
    }
    w.create_element("properties").write_inner_content(|w| {
        for (name, value) in &props {
            w.create_element("property")
                .with_attributes([("name", *name), ("value", value.as_str())])
                .write_empty()?;
        }
        Ok::<(), io::Error>(())
    })?;
    Ok(())
}

fn testcase<W: Write>(w: &mut Writer<W>, case: &Case) -> io::Result<()> {
    let element = w.create_element("testcase").with_attributes([
        ("classname", case.classname.as_str()),
        ("name", case.name.as_str()),
        ("time", "0"),
    ]);
    match &case.outcome {
        Outcome::Passed => element.write_empty()?,
        Outcome::Failed(message, text) => element.write_inner_content(|w| {
            w.create_element("failure")
                .with_attributes([("message", message.as_str()), ("type", "failure")])
                .write_text_content(BytesText::new(text))?;
            Ok::<(), io::Error>(())
        })?,
        Outcome::Skipped(message) => element.write_inner_content(|w| {
            w.create_element("skipped")
                .with_attribute(("message", message.as_str()))
                .write_empty()?;
            Ok::<(), io::Error>(())
        })?,
    };
    Ok(())
}

fn gate_cases(r: &Report) -> Vec<Case> {
    let mut cases: Vec<Case> = r
        .gates
        .iter()
        .map(|g| Case {
            classname: g
                .route
                .clone()
                .map_or("gates".into(), |route| format!("gates {route}")),
            name: if g.name == g.expression {
                g.name.clone()
            } else {
                format!("{}: {}", g.name, g.expression)
            },
            outcome: if g.passed {
                Outcome::Passed
            } else {
                Outcome::Failed(
                    g.text.clone(),
                    format!("{}\nobserved: {}", g.expression, g.text),
                )
            },
        })
        .collect();
    if r.interrupted {
        cases.push(Case {
            classname: "gates".into(),
            name: "run completed".into(),
            outcome: Outcome::Failed(
                "the run was interrupted".into(),
                "SIGINT or SIGTERM stopped the replay: the report covers what was sent before"
                    .into(),
            ),
        });
    }
    cases
}

fn parity_cases(r: &Report) -> Vec<Case> {
    let mut cases: Vec<Case> = r
        .mismatch_groups
        .iter()
        .take(MAX_CASES)
        .map(group_case)
        .collect();
    let failing: BTreeSet<(&str, &str)> = r
        .mismatch_groups
        .iter()
        .map(|g| (g.method.as_str(), g.route.as_str()))
        .collect();
    for route in &r.routes {
        if !failing.contains(&(route.method.as_str(), route.route.as_str())) {
            let outcome = match route.errors {
                0 => Outcome::Passed,
                n => Outcome::Failed(
                    format!("{n} of {} exchanges with errors or not sent", route.total),
                    format!(
                        "{n} of {} exchanges got a target error or were not sent in time",
                        route.total
                    ),
                ),
            };
            cases.push(Case {
                classname: format!("{} {}", route.method, route.route),
                name: "parity".into(),
                outcome,
            });
        }
    }
    if let Some(noise) = &r.learned_noise {
        for g in &noise.groups {
            cases.push(Case {
                classname: format!("{} {}", g.method, g.route),
                name: format!("noise {} {}", g.kind.as_str(), g.path.as_deref().unwrap_or("")).trim_end().to_string(),
                outcome: Outcome::Skipped(format!(
                    "learned noise: differs between two legacy answers too ({:.2}% vs {:.2}% legacy-new)",
                    g.noise_rate * 100.0,
                    g.diff_rate * 100.0
                )),
            });
        }
    }
    unique(cases)
}

fn group_case(g: &MismatchGroup) -> Case {
    let name = format!("{} {}", g.kind.as_str(), g.path.as_deref().unwrap_or(""))
        .trim_end()
        .to_string();
    let message = format!("{} exchanges ({:.2}% of compared)", g.count, g.rate * 100.0);
    let mut text = format!(
        "{} {}: {name} on {message}, exchanges #{} to #{}",
        g.method, g.route, g.first_exchange, g.last_exchange
    );
    if let Some(e) = g.examples.first() {
        text.push_str(&format!("\nexample #{}: {}", e.exchange_id, e.request.line));
        for m in &e.mismatches {
            text.push_str(&format!(
                "\n  {} {}: legacy {} | new {}",
                m.kind.as_str(),
                m.path.as_deref().unwrap_or(""),
                m.legacy.as_deref().unwrap_or("(absent)"),
                m.new.as_deref().unwrap_or("(absent)")
            ));
        }
    }
    Case {
        classname: format!("{} {}", g.method, g.route),
        name,
        outcome: Outcome::Failed(message, bounded(text)),
    }
}

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT - 20;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (cut)");
    }
    text
}

/// Names made unique within their classname (CI systems merge duplicates).
fn unique(mut cases: Vec<Case>) -> Vec<Case> {
    let mut seen = BTreeSet::new();
    for case in &mut cases {
        let mut n = 1;
        let base = case.name.clone();
        while !seen.insert((case.classname.clone(), case.name.clone())) {
            n += 1;
            case.name = format!("{base} ({n})");
        }
    }
    cases
}
