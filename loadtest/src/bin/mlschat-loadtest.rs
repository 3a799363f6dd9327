//! `mlschat-loadtest`: runs a load scenario against a delivery node (or one it starts itself),
//! shows its progress live, writes the result as JSON with SVG plots and an HTML page, and
//! exits 99 when a threshold fails. `merge` adds up the results of workers on several machines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use mlschat_loadtest::progress::{Progress, millis};
use mlschat_loadtest::report::Report;
use mlschat_loadtest::scenario::Scenario;
use mlschat_loadtest::target::{Embedded, Node, Target};
use mlschat_loadtest::threshold::Threshold;
use mlschat_loadtest::{baseline, delay, plot, runner};

/// The scenarios shipped in `loadtest/scenarios/`, by name, so that the binary runs them
/// anywhere (a container has no source tree).
const SHIPPED: [(&str, &str); 5] = [
    ("build", include_str!("../../scenarios/build.toml")),
    ("churn", include_str!("../../scenarios/churn.toml")),
    ("join", include_str!("../../scenarios/join.toml")),
    ("messaging", include_str!("../../scenarios/messaging.toml")),
    (
        "small-groups",
        include_str!("../../scenarios/small-groups.toml"),
    ),
];

#[derive(Parser)]
#[command(
    version,
    about = "Load tests of mlschat delivery nodes: group add/remove and messaging at scale"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario and writes its report (result.json, plots, report.html) to --out.
    Run(RunArgs),
    /// Adds up the result.json of several workers into one report.
    Merge(MergeArgs),
    /// Prints the configuration of a delivery node for load tests (the embedded node's): its
    /// per-address limits would otherwise refuse a load test from a few machines.
    NodeConfig,
}

#[derive(Args)]
struct RunArgs {
    /// A scenario file, or a shipped one by name: build, churn, join, messaging, small-groups.
    scenario: String,
    /// Overrides a value of the scenario (e.g. --set members=10000); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    #[command(flatten)]
    gate: Gate,
    /// A node's QUIC address; repeat it for several node processes on one database (members
    /// are spread over them). Without it, a node is started inside this process.
    #[arg(long, value_name = "HOST:PORT", requires = "pin")]
    node: Vec<String>,
    /// SHA-256 of the certificate (64 hex digits, as `mlschat-delivery` prints it) of each
    /// --node, in the same order.
    #[arg(long, value_name = "HEX")]
    pin: Vec<String>,
    /// The admin HTTP address of each --node, in the same order, to read its /metrics (stored
    /// bytes, refusals, time to serve).
    #[arg(long, value_name = "HOST:PORT")]
    admin: Vec<String>,
    /// The node's invite token, where registering needs one.
    #[arg(long, value_name = "TOKEN", default_value = "")]
    invite: String,
    /// Delays every datagram between the members and the nodes by this many milliseconds each
    /// way (a UDP relay in this process): 25 gives a 50 ms round trip, as to a node far away.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay: u64,
    /// Postgres for the embedded node (default: SQLite in a temporary directory).
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// This worker's name: member names start with it, so that workers loading one node do
    /// not collide. Each worker runs the whole scenario; `merge` adds their results.
    #[arg(long, default_value = "w0")]
    worker: String,
    /// Also runs the scenario's operations in raw in-process OpenMLS at the same size.
    #[arg(long)]
    baseline: bool,
    /// No live display.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct MergeArgs {
    /// The workers' result.json files.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    #[command(flatten)]
    gate: Gate,
}

#[derive(Args)]
struct Gate {
    /// A pass/fail rule, e.g. 'add.p99<250ms', 'message.error_rate<1%', 'join.count>=10';
    /// repeatable. A failed rule makes the exit code 99.
    #[arg(long = "threshold", value_name = "RULE")]
    thresholds: Vec<Threshold>,
    /// Where the report goes.
    #[arg(long, default_value = "loadtest-report", value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Merge(args) => merge(args),
        Command::NodeConfig => {
            print!("{}", mlschat_loadtest::target::LOAD_TEST_NODE);
            return ExitCode::SUCCESS;
        }
    };
    match result {
        Ok(report) => ExitCode::from(report.exit_code() as u8),
        Err(e) => {
            eprintln!("mlschat-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn scenario_text(name: &str) -> anyhow::Result<String> {
    if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == name) {
        return Ok((*text).to_owned());
    }
    std::fs::read_to_string(name).with_context(|| {
        let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
        format!(
            "{name} is neither a file nor a shipped scenario ({})",
            names.join(", ")
        )
    })
}

fn run(args: RunArgs) -> anyhow::Result<Report> {
    let scenario = Scenario::parse(&scenario_text(&args.scenario)?, &args.overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let data = tempfile::tempdir()?;
    let (embedded, mut target) = if args.node.is_empty() {
        let (embedded, target) =
            Embedded::start(&data.path().join("node"), args.database_url.as_deref())?;
        (Some(embedded), target)
    } else {
        (None, given_target(&args)?)
    };
    if args.delay > 0 {
        let one_way = std::time::Duration::from_millis(args.delay);
        for node in &mut target.nodes {
            node.quic = runtime.block_on(delay::relay(node.quic, one_way))?;
        }
    }
    let mut progress = Progress::new(args.quiet);
    if !args.quiet {
        eprintln!(
            "{} against {} ({})",
            serde_json::to_string(&scenario)?,
            target
                .nodes
                .iter()
                .map(|n| n.quic.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            match (embedded.is_some(), args.delay) {
                (true, 0) => "embedded node".to_owned(),
                (false, 0) => "given nodes".to_owned(),
                (true, ms) => format!("embedded node, {ms} ms each way"),
                (false, ms) => format!("given nodes, {ms} ms each way"),
            }
        );
    }
    let prefix = format!("{}-", args.worker);
    let outcome = runtime.block_on(runner::run(&scenario, &target, &prefix, &mut progress))?;
    drop(embedded);
    let mut report = Report::new(scenario, outcome, &args.gate.thresholds);
    if args.baseline {
        // The run's report first: a baseline at a size raw OpenMLS takes long over (100,000
        // members) must not cost the run's figures if it is stopped.
        std::fs::create_dir_all(&args.gate.out)?;
        std::fs::write(
            args.gate.out.join("result.json"),
            serde_json::to_vec(&report)?,
        )?;
        if !args.quiet {
            eprintln!("baseline: raw OpenMLS in this process at the same size");
        }
        let (members, batch) = report.scenario.baseline_size();
        report.baseline = baseline::measure(members, batch, 10).summaries();
    }
    write(&report, &args.gate.out)?;
    Ok(report)
}

fn given_target(args: &RunArgs) -> anyhow::Result<Target> {
    use std::net::ToSocketAddrs as _;
    let resolve = |address: &str| {
        address
            .to_socket_addrs()
            .with_context(|| format!("{address}: not a HOST:PORT"))?
            .next()
            .with_context(|| format!("{address} has no address"))
    };
    if args.pin.len() != args.node.len() {
        bail!("give one --pin for each --node, in the same order");
    }
    if !args.admin.is_empty() && args.admin.len() != args.node.len() {
        bail!("give one --admin for each --node, in the same order, or none");
    }
    let nodes = args
        .node
        .iter()
        .zip(&args.pin)
        .enumerate()
        .map(|(i, (node, pin))| {
            let pin: [u8; 32] = hex::decode(pin)
                .ok()
                .and_then(|p| p.try_into().ok())
                .context("--pin: give the node's 64-hex-digit certificate fingerprint")?;
            let admin = args.admin.get(i).map(|a| resolve(a)).transpose()?;
            Ok(Node {
                quic: resolve(node)?,
                pin,
                admin,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Target {
        nodes,
        invite: args.invite.as_bytes().to_vec(),
    })
}

fn merge(args: MergeArgs) -> anyhow::Result<Report> {
    let reports = args
        .results
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<Report>(&text)
                .with_context(|| format!("{} is not a result of mlschat-loadtest", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = match Report::merge(reports, &args.gate.thresholds) {
        Ok(report) => report,
        Err(e) => bail!("{e}"),
    };
    write(&report, &args.gate.out)?;
    Ok(report)
}

/// Writes the report's files and prints its figures.
fn write(report: &Report, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("result.json"), serde_json::to_vec(report)?)?;
    plot::write(out, report)?;
    println!(
        "{:<22} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "operation", "count", "errors", "p50", "p90", "p99", "max"
    );
    // The run's operations, then the raw OpenMLS baseline's (`raw add`, …) when measured.
    let raw = report
        .baseline
        .iter()
        .map(|(op, s)| (format!("raw {op}"), s));
    for (op, s) in report
        .operations
        .iter()
        .map(|(op, s)| (op.clone(), s))
        .chain(raw)
    {
        println!(
            "{op:<22} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10}",
            s.count,
            s.error_count(),
            millis(s.p50_us),
            millis(s.p90_us),
            millis(s.p99_us),
            millis(s.max_us),
        );
    }
    if let Some(bytes) = report.stored_bytes_per_commit() {
        println!(
            "node: {:.0} stored bytes per commit ({} commits)",
            bytes, report.outcome.commits
        );
    }
    if let Some(node) = &report.outcome.node {
        for (reason, n) in &node.refusals {
            println!("node refused {n} requests: {reason}");
        }
        let served: Vec<String> = node
            .mean_request_ms()
            .iter()
            .map(|(kind, ms)| format!("{kind} {ms:.2}ms"))
            .collect();
        println!(
            "node: mean time to serve, by request: {}",
            served.join(", ")
        );
    }
    for (name, usage) in &report.outcome.usage {
        println!(
            "{name}: {:.1} s CPU, {:.0} MiB memory ({} processes)",
            usage.cpu_seconds,
            usage.memory_bytes as f64 / (1 << 20) as f64,
            usage.processes
        );
    }
    for note in &report.outcome.notes {
        println!("note: {note}");
    }
    for t in &report.thresholds {
        println!("threshold {}: {}", t.rule, t.verdict);
    }
    println!("report: {}", out.join("report.html").display());
    Ok(())
}
