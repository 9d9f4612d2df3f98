//! The `chatd` binary: parses the command line, sets up logging, and dispatches to the server or
//! an admin command. Any failure is printed as one line on stderr with a non-zero exit status.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use chatd::app::App;
use chatd::auth::Auth;
use chatd::cli::{Cli, Command, LogFormat, ServeArgs};
use chatd::config::Config;
use chatd::store::{OpenOptions, Store};
use chatd::{admin, server};

/// The static (musl) builds use mimalloc: with musl's own allocator the server needed 55-87 %
/// more CPU than the glibc build to catch up 10,000 reconnecting clients (docs/BENCHMARKS.md).
/// glibc builds keep glibc's allocator: mimalloc saved nothing there beyond the noise, for
/// ~70 MB more RSS.
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arenas: the kernel then zeroes 2 MiB at
    // each first touch (a third of the server's CPU in that catch-up) and RSS grows by ~30 MB.
    // chatd's heap is small objects; it gains nothing from huge pages.
    #[cfg(target_env = "musl")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let result = init_logging(&cli.log_level, cli.log_format).and_then(|()| match cli.command {
        None => serve(&cli.serve, &cli.data_dir),
        Some(Command::Serve(ref args)) => serve(args, &cli.data_dir),
        Some(Command::User(cmd)) => admin::user(cmd, &cli.data_dir),
        Some(Command::Token(cmd)) => admin::token(cmd, &cli.data_dir),
        Some(Command::Backup { ref out }) => admin::backup(out, &cli.data_dir),
        Some(Command::Restore { ref file }) => admin::restore(file, &cli.data_dir),
        Some(Command::Check { ref file }) => admin::check(file.as_deref(), &cli.data_dir),
        Some(Command::Repair) => admin::repair(&cli.data_dir),
        Some(Command::Compact) => admin::compact(&cli.data_dir),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("chatd: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Checks each comma-separated directive is `LEVEL` or `target=LEVEL` (tracing's own parser
/// would take a typo such as "inf" for a target name and silently log nothing).
fn parse_log_level(level: &str) -> Result<Targets, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = || {
        format!("invalid --log-level {level:?}: use error, warn, info, debug, trace or target=level directives")
    };
    for directive in level.split(',') {
        let lvl = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&lvl.trim().to_ascii_lowercase().as_str()) {
            return Err(bad());
        }
    }
    level.parse().map_err(|_| bad())
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = parse_log_level(level)?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        // One JSON object per line: timestamp, level, target, message and fields, flattened.
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// The machine's memory in bytes (`MemTotal` in /proc/meminfo), if it can be read.
fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn serve(args: &ServeArgs, data_dir: &Path) -> Result<(), String> {
    let mut config = Config::from_args(args, data_dir.to_path_buf())?;
    // One descriptor per connection, plus the database, log, listeners and some slack.
    // (Reported once the server listens, so a failing start still prints one line.)
    let want = config.limits.max_connections as u64 + 256;
    let fd_limit = server::raise_fd_limit(want);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(Arc::new(chatd::tls::Tls::load(cert, key)?));
    }
    let mem_total = mem_total();
    let cache = chatd::config::cache_bytes(config.cache_mb, mem_total);
    let open = OpenOptions {
        cache_bytes: Some(cache),
        new_database: args.new_database,
        discard_damaged_log: args.discard_damaged_log,
    };
    let auth = Auth::new(&config.limits).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        // Bind first: a busy port (another chatd?) is reported before anything is created on
        // disk, so a failed start leaves no data directory, database or log files behind.
        let listener = server::bind(config.listen).await?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the listening address: {e}"))?;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
        let lan = chatd::netinfo::lan_addresses();
        let self_signed = if args.tls_self_signed {
            let (tls, info) = chatd::selfsigned::load_or_create(data_dir, local, &lan)?;
            config.tls = Some(Arc::new(tls));
            config.ca_der = Some(info.ca_der.clone());
            Some(info)
        } else {
            None
        };
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        // Reachable at once; `/healthz` answers 503 `starting` while the store opens (after a
        // crash it replays the log first). Said only if that takes a while, so a start that
        // fails at once is still one line.
        let slow = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            tracing::info!(
                "starting on {scheme}://{local}: opening the database (/healthz answers 503 starting until it is open)"
            );
        });
        let (ready, starting) = tokio::sync::oneshot::channel();
        let starting = tokio::spawn(server::serve_starting(
            listener,
            config.tls.clone(),
            config.limits.header_read_timeout,
            starting,
        ));
        let dir = data_dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || Store::open_with(&dir, &open))
            .await
            .map_err(|e| format!("cannot open the database: {e}"))?;
        slow.abort();
        let store = opened.map_err(|e| admin::open_error(data_dir, e))?;
        let _ = ready.send(());
        let listener = starting
            .await
            .map_err(|e| format!("cannot start serving: {e}"))?;
        let (app, writer) = App::new(config, store, auth)
            .map_err(|e| format!("cannot start the message writer: {e}"))?;
        // Backups and admin commands reach the running server through the control socket;
        // without it (say, a data directory on a filesystem that cannot hold sockets) chat
        // still works.
        let control = match chatd::control::bind(data_dir) {
            Ok((listener, path)) => {
                let task = tokio::spawn(chatd::control::serve(
                    listener,
                    app.store.clone(),
                    app.hub.clone(),
                    data_dir.to_path_buf(),
                    app.files.clone(),
                ));
                Some((task, path))
            }
            Err(e) => {
                tracing::warn!(
                    "no control socket in {} ({e}): `chatd backup` and `chatd user` will not work while the server runs",
                    data_dir.display()
                );
                None
            }
        };
        // The bound address stays first and parseable ("listening on http://ADDR", then a
        // space: tests, the benchmark and scripts read it); then the URLs a person can open.
        tracing::info!(
            version = chatd::VERSION,
            data_dir = %data_dir.display(),
            cache_mb = cache >> 20,
            "listening on {scheme}://{local} ({})",
            chatd::netinfo::open_advice(scheme, local, &lan)
        );
        if let Some(info) = &self_signed {
            tracing::info!(
                certificate = %info.ca_path.display(),
                "https with a self-signed certificate authority, SHA-256 fingerprint {}; install {} on each device once (docs/OPERATIONS.md), or download it from /ca.crt",
                info.fingerprint,
                info.ca_path.display()
            );
        }
        let (soft, hard) = fd_limit;
        let allowed = soft.saturating_sub(256);
        let max = app.config.limits.max_connections as u64;
        if soft < want {
            // Only worth a line at info when the admin asked for more than the limit allows;
            // the default (100,000) rarely fits a shell's limit and is no problem there.
            let asked = args.max_connections.is_some();
            if asked && allowed < max {
                tracing::warn!(
                    open_files = soft,
                    hard_limit = hard,
                    "the open-file limit allows about {allowed} connections, fewer than --max-connections {max}; raise the hard limit (LimitNOFILE= in the unit, ulimit -Hn)"
                );
            } else {
                tracing::debug!(
                    open_files = soft,
                    hard_limit = hard,
                    "the open-file limit allows about {allowed} connections (--max-connections is {max})"
                );
            }
        }
        tokio::spawn(chatd::tls::reload_on_sighup(app.config.tls.clone()));
        let last_seen = tokio::spawn(chatd::lastseen::flush_periodically(app.clone()));
        let sweep = tokio::spawn(chatd::files::sweep_periodically(app.clone()));
        server::run(listener, app.clone(), server::shutdown_signal()).await;
        if let Some((task, path)) = control {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
        last_seen.abort();
        sweep.abort();
        chatd::lastseen::flush(&app).await;
        // The writer stops once the last handle is gone and its queue is drained (every
        // accepted op committed and answered); wait a little for that.
        let search = app.search.clone();
        drop(app);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !writer.is_finished() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Then the search indexer commits what it has (the writer's end stops it), so a clean
        // stop leaves a complete index and the next start reads nothing to catch up.
        let _ = tokio::task::spawn_blocking(move || {
            search.wait_stopped(std::time::Duration::from_secs(5))
        })
        .await;
        tracing::info!("stopped");
        Ok(())
    })
}
