//! What the benchmarks share: a closed-loop load generator and its figures.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

/// One side of a benchmark: every successful call's latency, the errors, the time taken and the
/// CPU time the whole process used meanwhile.
pub(crate) struct Run {
    pub(crate) label: &'static str,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) elapsed: Duration,
    pub(crate) errors: usize,
    pub(crate) cpu: Duration,
}

impl Run {
    fn empty(label: &'static str) -> Self {
        Self { label, latencies: Vec::new(), elapsed: Duration::ZERO, errors: 0, cpu: Duration::ZERO }
    }

    /// Counts `other`'s calls, time and CPU into this run's.
    fn add(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
        self.errors += other.errors;
        self.cpu += other.cpu;
    }

    pub(crate) fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The process's CPU time per successful call, in microseconds: what a call cost, whatever
    /// the scheduling of the run, when everything it needs runs in this process.
    #[allow(dead_code, reason = "the gateway's and health benchmarks'; the others share this module without it")]
    pub(crate) fn cpu_micros_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// How long a side runs before it is measured.
const WARM_UP: Duration = Duration::from_millis(500);

/// Runs `call` from `concurrency` tasks for `duration`, after a short warm-up.
#[allow(dead_code, reason = "the model benchmarks' floors; the gateway's drives all its sides in turns")]
pub(crate) async fn drive<F, Fut>(label: &'static str, concurrency: usize, duration: Duration, call: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    drive_after(label, concurrency, WARM_UP, duration, call).await
}

/// A call of the load generator's: one HTTP request sent again and again (a GET, or a POST of
/// `json`), with API key `key` when given, its URL parsed and its headers and body made once, and
/// its answer read whole, as a client does that keeps its connection for the next call. (What the
/// load generator spends, the side it drives does not get of the two cores.)
pub(crate) fn repeat(
    client: reqwest::Client,
    url: &str,
    key: Option<&str>,
    json: Option<String>,
) -> impl Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + Sync + 'static + use<> {
    use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
    let url = reqwest::Url::parse(url).expect("a benchmark's URL");
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {key}")).expect("an API key"));
    }
    if json.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let method = if json.is_some() { reqwest::Method::POST } else { reqwest::Method::GET };
    let body = json.map(bytes::Bytes::from);
    move || {
        let mut request = client.request(method.clone(), url.clone()).headers(headers.clone());
        if let Some(body) = &body {
            request = request.body(body.clone());
        }
        Box::pin(async move {
            match request.send().await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        })
    }
}

/// One side of [`drive_in_turns`]: what its calls are counted as, and a call.
pub(crate) struct Side {
    label: &'static str,
    call: Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>,
}

impl Side {
    pub(crate) fn new<F, Fut>(label: &'static str, call: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Self { label, call: Arc::new(move || Box::pin(call())) }
    }
}

/// Drives each of `sides` in turn, `turns` times, for `duration / turns` a turn (all of them
/// after a warm-up, the first turn's longer), and adds up each side's turns. A machine whose
/// speed drifts during the run (a shared virtual machine's does) slows every side alike, so
/// that their ratios hold where runs one after the other would each catch another speed.
pub(crate) async fn drive_in_turns(sides: &[Side], concurrency: usize, duration: Duration, turns: u32) -> Vec<Run> {
    let mut runs: Vec<Run> = sides.iter().map(|side| Run::empty(side.label)).collect();
    let turns = turns.max(1);
    let turn = duration / turns;
    for at in 0..turns {
        let warm_up = if at == 0 { WARM_UP } else { WARM_UP / 5 };
        for (side, run) in sides.iter().zip(&mut runs) {
            let call = side.call.clone();
            let this = drive_after(side.label, concurrency, warm_up, turn, move || call()).await;
            run.add(this);
        }
    }
    runs
}

async fn drive_after<F, Fut>(
    label: &'static str,
    concurrency: usize,
    warm_up: Duration,
    duration: Duration,
    call: F,
) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let warm_up = Instant::now() + warm_up;
    let mut warm = JoinSet::new();
    for _ in 0..concurrency {
        let call = call.clone();
        warm.spawn(async move {
            while Instant::now() < warm_up {
                call().await;
            }
        });
    }
    while warm.join_next().await.is_some() {}

    let started = Instant::now();
    let cpu_before = process_cpu();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let call = call.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if call().await {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut run = Run::empty(label);
    while let Some(result) = tasks.join_next().await {
        let (latencies, errors) = result.expect("bench task");
        run.latencies.extend(latencies);
        run.errors += errors;
    }
    run.elapsed = started.elapsed();
    run.cpu = process_cpu().saturating_sub(cpu_before);
    run
}

/// The CPU time this process has used, user and system, from `/proc/self/stat` (in the kernel's
/// clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux)");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// The runs as a Markdown table, `unit` per second.
pub(crate) fn print(unit: &str, runs: &[&Run]) {
    println!("| path | {unit}/s | p50 | p99 | errors |");
    println!("|---|---:|---:|---:|---:|");
    for run in runs {
        println!(
            "| {} | {:.0} | {:.3} ms | {:.3} ms | {} |",
            run.label,
            run.rps(),
            run.percentile(0.50).as_secs_f64() * 1000.0,
            run.percentile(0.99).as_secs_f64() * 1000.0,
            run.errors
        );
    }
}

/// An Enterprise plan whose limiter runs on every call but never refuses one.
pub(crate) fn unlimited_enterprise(config: &mut aigronova_cli::AppConfig) {
    config.gateway.plans.enterprise.requests_per_second = 1_000_000.0;
    config.gateway.plans.enterprise.burst = 1_000_000;
    config.gateway.plans.enterprise.monthly_inference_quota = 1_000_000_000;
}

pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}
