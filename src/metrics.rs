//! Live metrics (`--metrics-addr HOST:PORT`): a long run watched on a
//! dashboard while it goes, in Prometheus/OpenMetrics text at `/metrics`.
//! Labels come only from fixed sets (stack, outcome, result, reason, kind)
//! and route templates, never raw URLs, so cardinality stays bounded.
//! `deploy/grafana/tandem.json` is a dashboard of these series.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::diff::MismatchKind;
use crate::judge::Verdict;
use crate::results::{Attempt, ExchangeResult};
use crate::route::Route;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    stack: &'static str,
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    stack: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StackLabels {
    stack: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    stack: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MismatchLabels {
    route: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    capture: String,
    legacy: String,
    new: String,
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every series tandem exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    exchanges: Family<ResultLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<RouteLabels>,
    corrected: Histograms<RouteLabels>,
    lag: Histograms<StackLabels>,
    in_flight: Family<StackLabels, Gauge>,
    offered: Counter,
    offered_rate: Gauge<f64, AtomicU64>,
    dropped: Family<DropLabels, Counter>,
    mismatches: Family<MismatchLabels, Counter>,
    engine_cpu: Family<EngineLabels, Counter<f64, AtomicU64>>,
    engine_waited: Family<EngineLabels, Counter<f64, AtomicU64>>,
    engine_paused: Family<EngineLabels, Counter<f64, AtomicU64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What the run is: the labels of `tandem_run_info`.
#[derive(Debug, Clone, Default)]
pub struct RunDescription {
    /// The capture replayed.
    pub capture: String,
    /// The legacy target.
    pub legacy: String,
    /// The new target.
    pub new: String,
}

fn seconds() -> Histogram {
    // 0.25 ms to about 16 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

const STACKS: [&str; 3] = ["legacy", "new", "legacy-2"];

/// Why the harness did not send a request: the `reason` label.
const REASONS: [&str; 5] = [
    "max_in_flight",
    "stack_behind",
    "max_lag",
    "stopped",
    "other",
];

impl Metrics {
    /// A registry with every series, and `tandem_run_info` set.
    pub fn new(run: RunDescription) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("tandem");
        let m = Metrics {
            exchanges: Family::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(seconds),
            corrected: Family::new_with_constructor(seconds),
            lag: Family::new_with_constructor(seconds),
            in_flight: Family::default(),
            offered: Counter::default(),
            offered_rate: Gauge::default(),
            dropped: Family::default(),
            mismatches: Family::default(),
            engine_cpu: Family::default(),
            engine_waited: Family::default(),
            engine_paused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "exchanges",
            "Exchanges judged, by result (matched, mismatched, error, dropped)",
            m.exchanges.clone(),
        );
        registry.register(
            "requests",
            "Requests per stack and route template, by outcome (answered, error, dropped)",
            m.requests.clone(),
        );
        registry.register(
            "latency_seconds",
            "Answer latency from the actual send, per stack and route template",
            m.latency.clone(),
        );
        registry.register(
            "corrected_latency_seconds",
            "Latency from the time the request was due (coordinated omission), per stack and route template",
            m.corrected.clone(),
        );
        registry.register(
            "send_lag_seconds",
            "Actual send minus scheduled time, per stack",
            m.lag.clone(),
        );
        registry.register(
            "in_flight",
            "Requests sent and not yet answered, per stack",
            m.in_flight.clone(),
        );
        registry.register(
            "offered_requests",
            "Exchanges scheduled (rate() of it is the offered rate)",
            m.offered.clone(),
        );
        registry.register(
            "offered_rate",
            "The constant rate asked, exchanges per second (0: recorded timing)",
            m.offered_rate.clone(),
        );
        registry.register(
            "dropped",
            "Requests the harness did not send, per stack and reason",
            m.dropped.clone(),
        );
        registry.register(
            "mismatches",
            "Exchanges with a mismatch, per route template and kind",
            m.mismatches.clone(),
        );
        registry.register(
            "engine_cpu_seconds",
            "CPU time of each replay engine thread (rate() of it, of \
             tandem_engine_waited_seconds and of tandem_engine_paused_seconds together near \
             1: that engine is saturated, and send lag may be tandem's own)",
            m.engine_cpu.clone(),
        );
        registry.register(
            "engine_waited_seconds",
            "Time each replay engine thread was ready to run but waited for a core \
             (held by other work on the machine)",
            m.engine_waited.clone(),
        );
        registry.register(
            "engine_paused_seconds",
            "Time the host of the machine paused each replay engine thread while it ran \
             (steal time, which is not in its CPU time), estimated from the machine's share",
            m.engine_paused.clone(),
        );
        // An info metric the classic way (a gauge at 1), which Prometheus'
        // own text parser and promtool read, where OpenMetrics' `info` type
        // is not.
        let info: Family<RunLabels, Gauge> = Family::default();
        info.get_or_create(&RunLabels {
            capture: run.capture,
            legacy: run.legacy,
            new: run.new,
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register("run_info", "What this run replays where (always 1)", info);
        // Series of fixed label sets exist from the start at zero, so that
        // a dashboard tells "none yet" from "not exported".
        for result in ["matched", "mismatched", "error", "dropped"] {
            drop(m.exchanges.get_or_create(&ResultLabels { result }));
        }
        for stack in &STACKS[..2] {
            drop(m.in_flight.get_or_create(&StackLabels { stack }));
            drop(m.lag.get_or_create(&StackLabels { stack }));
            for reason in REASONS {
                drop(m.dropped.get_or_create(&DropLabels { stack, reason }));
            }
        }
        Arc::new(Metrics { registry, ..m })
    }

    /// One exchange judged.
    pub fn observe(&self, route: &Route, result: &ExchangeResult, verdict: Verdict) {
        let name = match verdict {
            Verdict::Matched => "matched",
            Verdict::Mismatched(_) => "mismatched",
            Verdict::Error => "error",
            Verdict::Dropped => "dropped",
        };
        self.exchanges
            .get_or_create(&ResultLabels { result: name })
            .inc();
        let route = route.to_string();
        let stacks = [
            Some(&result.legacy),
            Some(&result.new),
            result.legacy2.as_ref(),
        ];
        for (stack, attempt) in STACKS.into_iter().zip(stacks) {
            if let Some(attempt) = attempt {
                self.attempt(stack, &route, attempt);
            }
        }
    }

    fn attempt(&self, stack: &'static str, route: &str, attempt: &Attempt) {
        let outcome = if attempt.was_dropped() {
            let reason = drop_reason(attempt);
            self.dropped
                .get_or_create(&DropLabels { stack, reason })
                .inc();
            "dropped"
        } else if let Some(response) = &attempt.response {
            let labels = RouteLabels {
                stack,
                route: route.to_string(),
            };
            let us = |us: u64| us as f64 / 1e6;
            self.latency
                .get_or_create(&labels)
                .observe(us(response.latency_us));
            self.corrected
                .get_or_create(&labels)
                .observe(us(attempt.lag_us + response.latency_us));
            self.lag
                .get_or_create(&StackLabels { stack })
                .observe(us(attempt.lag_us));
            "answered"
        } else {
            "error"
        };
        self.requests
            .get_or_create(&RequestLabels {
                stack,
                route: route.to_string(),
                outcome,
            })
            .inc();
    }

    /// An exchange the recording proxy's upstream answered (`tandem record
    /// --metrics-addr`): a request of stack `upstream`, and its latency.
    pub fn recorded(&self, exchange: &crate::capture::Exchange) {
        let route = Route::of(&exchange.request.method, &exchange.request.target).to_string();
        let stack = "upstream";
        if let Some(response) = &exchange.response {
            self.latency
                .get_or_create(&RouteLabels {
                    stack,
                    route: route.clone(),
                })
                .observe(response.latency_us as f64 / 1e6);
        }
        self.requests
            .get_or_create(&RequestLabels {
                stack,
                route,
                outcome: "answered",
            })
            .inc();
    }

    /// An exchange showed a mismatch of `kind` on `route`.
    pub fn mismatch(&self, route: &Route, kind: MismatchKind) {
        self.mismatches
            .get_or_create(&MismatchLabels {
                route: route.to_string(),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// An exchange was scheduled.
    pub fn offered(&self) {
        self.offered.inc();
    }

    /// The constant rate asked (`--rate`), when there is one.
    pub fn set_offered_rate(&self, rate: f64) {
        self.offered_rate.set(rate);
    }

    /// The replay runs `count` engines: their series exist from now, at
    /// zero.
    pub fn engines(&self, count: u32) {
        for engine in 0..count {
            let labels = EngineLabels { engine };
            drop(self.engine_cpu.get_or_create(&labels));
            drop(self.engine_waited.get_or_create(&labels));
            drop(self.engine_paused.get_or_create(&labels));
        }
    }

    /// Replay engine `engine` ran `time.cpu` more, waited `time.waited`
    /// more for a core, and was paused by the host `time.paused` more.
    pub fn engine_time(&self, engine: u32, time: &crate::replay::EngineLoad) {
        let labels = EngineLabels { engine };
        let add = |family: &Family<EngineLabels, Counter<f64, AtomicU64>>,
                   d: std::time::Duration| {
            family.get_or_create(&labels).inc_by(d.as_secs_f64());
        };
        add(&self.engine_cpu, time.cpu);
        add(&self.engine_waited, time.waited);
        add(&self.engine_paused, time.paused);
    }

    /// A request to stack `index` is in flight until the guard drops.
    pub fn in_flight(self: &Arc<Self>, index: usize) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create(&StackLabels {
                stack: STACKS[index.min(2)],
            })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The same in Prometheus' classic text format (0.0.4), for clients
    /// that do not ask for OpenMetrics (promtool, curl, older scrapers):
    /// a counter's HELP and TYPE name its `_total` samples, and there is no
    /// `# EOF`.
    pub fn encode_classic(&self) -> String {
        classic(&self.encode())
    }

    /// Serves `/metrics` on `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handler = move |req: hyper::Request<hyper::body::Incoming>, _peer: SocketAddr| {
            let metrics = self.clone();
            async move {
                let openmetrics = req
                    .headers()
                    .get_all(hyper::header::ACCEPT)
                    .iter()
                    .any(|v| {
                        v.to_str()
                            .is_ok_and(|v| v.contains("application/openmetrics-text"))
                    });
                let (status, body, kind) = match (req.uri().path(), openmetrics) {
                    ("/metrics", true) => (
                        hyper::StatusCode::OK,
                        metrics.encode(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                    ("/metrics", false) => (
                        hyper::StatusCode::OK,
                        metrics.encode_classic(),
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                    _ => (
                        hyper::StatusCode::NOT_FOUND,
                        "see /metrics\n".into(),
                        "text/plain; charset=utf-8",
                    ),
                };
                let mut response =
                    hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static(kind),
                );
                response
            }
        };
        crate::server::serve(
            listener,
            None,
            handler,
            shutdown,
            std::time::Duration::from_secs(1),
        )
        .await;
    }
}

/// Holds one in-flight request on its stack's gauge.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// OpenMetrics text rewritten in the classic format: see
/// [`Metrics::encode_classic`].
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Why the harness did not send: a fixed set, from the attempt's message.
fn drop_reason(attempt: &Attempt) -> &'static str {
    let message = attempt.error.as_ref().map_or("", |e| e.message.as_str());
    if message.contains("--max-in-flight") {
        "max_in_flight"
    } else if message.contains("far behind") {
        "stack_behind"
    } else if message.contains("--max-lag") {
        "max_lag"
    } else if message.contains("stopped") {
        "stopped"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fixed_label_sets_are_there_before_the_first_sample() {
        let m = Metrics::new(RunDescription::default());
        let text = m.encode_classic();
        for name in [
            "tandem_exchanges_total",
            "tandem_dropped_total",
            "tandem_offered_requests_total",
            "tandem_in_flight",
            "tandem_send_lag_seconds",
            "tandem_run_info",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert!(!text.contains("# EOF"));
        m.engines(2);
        m.engine_time(
            1,
            &crate::replay::EngineLoad {
                cpu: Duration::from_millis(250),
                waited: Duration::from_millis(5),
                paused: Duration::from_millis(25),
                ..Default::default()
            },
        );
        let text = m.encode_classic();
        for (series, value) in [
            ("tandem_engine_cpu_seconds_total{engine=\"0\"}", "0.0"),
            ("tandem_engine_cpu_seconds_total{engine=\"1\"}", "0.25"),
            ("tandem_engine_waited_seconds_total{engine=\"1\"}", "0.005"),
            ("tandem_engine_paused_seconds_total{engine=\"1\"}", "0.025"),
        ] {
            assert!(
                text.contains(&format!("{series} {value}\n")),
                "{series}:\n{text}"
            );
        }
        assert!(m.encode().ends_with("# EOF\n"));
    }
}
