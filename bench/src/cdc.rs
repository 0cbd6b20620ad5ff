//! `realtime-bench cdc`: how fast the CDC moves committed rows into JetStream, beside the
//! ceiling Postgres itself sets, and how long a row takes from commit to JetStream at a steady
//! rate.
//!
//! 1. Load `--rows` single-row INSERTs in transactions of `--tx-size` rows, with two slots
//!    created beforehand so both readers see the same WAL.
//! 2. Ceiling: `pg_recvlogical` (pgoutput, same publications, output to /dev/null) reads the
//!    load to its end LSN; rows/s = rows / its run time.
//! 3. CDC: the real `nself-realtime cdc` process (release build) reads the same load; rows/s is
//!    measured from the first to the last event stored in JetStream (and, separately,
//!    including start-up).
//! 4. Latency: `--rate` single-row transactions per second for `--seconds`; for each event read
//!    back from JetStream, latency = arrival time − the event's commit_timestamp.

use anyhow::{bail, Context};
use futures::StreamExt;
use nself_realtime_cdc::{migrations, publications};
use nself_realtime_shared::event::ChangeEvent;
use realtime_tests::{CdcProcess, Nats, Postgres};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Rows in the throughput load.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Rows per transaction in the throughput load.
    #[arg(long, default_value_t = 1_000)]
    tx_size: u64,
    /// Single-row transactions per second in the latency phase.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Length of the latency phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let pg = Postgres::start();
    // The harness trades durability for test speed; measure with Postgres' defaults instead,
    // since a commit's WAL flush is part of what a row waits for before it can be streamed.
    crate::stack::durable(&pg);
    let nats_server = Nats::start();
    let account = nats_server.fresh_account();
    let db = pg.fresh_database().await;
    let mut client = db.connect().await;
    migrations::apply(&mut client).await?;
    publications::ensure_exist(&client, "nself_realtime").await?;
    client
        .batch_execute(
            "CREATE TABLE bench_rows (id bigserial PRIMARY KEY, n bigint NOT NULL, label text NOT NULL,
                                      created_at timestamptz NOT NULL DEFAULT now());
             ALTER PUBLICATION nself_realtime ADD TABLE bench_rows;",
        )
        .await?;
    for slot in ["bench_cdc", "bench_ceiling"] {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await?;
    }

    println!(
        "load: {} single-row INSERTs in transactions of {} rows",
        args.rows, args.tx_size
    );
    let started = Instant::now();
    load(&client, args.rows, args.tx_size).await?;
    let end_lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    println!("  loaded in {:.2?}, WAL end {end_lsn}", started.elapsed());

    // Ceiling: pg_recvlogical reads the same WAL through pgoutput to /dev/null.
    let names: Vec<String> = publications::all("nself_realtime")
        .into_iter()
        .map(|p| p.name)
        .collect();
    let started = Instant::now();
    let status = std::process::Command::new(pg.bin("pg_recvlogical"))
        .args([
            "-d",
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={}",
                db.port, db.name
            ),
        ])
        .args([
            "--slot",
            "bench_ceiling",
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
        ])
        .args(["--endpos", &end_lsn])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={}", names.join(",")))
        .status()
        .context("run pg_recvlogical")?;
    if !status.success() {
        bail!("pg_recvlogical failed: {status}");
    }
    let ceiling = started.elapsed();
    let ceiling_rate = args.rows as f64 / ceiling.as_secs_f64();

    // The CDC reads the same load.
    let nats = account.connect().await;
    // The real binary, as deployed (target/release/nself-realtime beside this one).
    let started = Instant::now();
    let mut cdc = CdcProcess::start(
        &db,
        &account,
        &[("REALTIME_SLOT", "bench_cdc"), ("LOG_LEVEL", "warn")],
    );
    let mut first: Option<(Instant, u64)> = None;
    let done = loop {
        let count = realtime_tests::stream_message_count(&nats).await;
        if count > 0 && first.is_none() {
            first = Some((Instant::now(), count));
        }
        if count >= args.rows {
            break Instant::now();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "the CDC stored only {count} of {} rows in 10 minutes",
                args.rows
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let (first_at, first_count) = first.expect("events arrived");
    let steady = done.duration_since(first_at);
    let cdc_rate = (args.rows - first_count) as f64 / steady.as_secs_f64();
    let total_rate = args.rows as f64 / done.duration_since(started).as_secs_f64();

    println!(
        "\nthroughput ({} rows, {} per transaction)",
        args.rows, args.tx_size
    );
    println!("  pg_recvlogical ceiling : {ceiling_rate:>10.0} rows/s ({ceiling:.2?})");
    println!(
        "  CDC → JetStream        : {cdc_rate:>10.0} rows/s ({steady:.2?} first to last event; {total_rate:.0} rows/s including start-up)"
    );
    println!(
        "  CDC / ceiling          : {:>10.1} %",
        100.0 * cdc_rate / ceiling_rate
    );

    let latencies = latency(&client, &nats, args.rate, args.seconds).await?;
    println!(
        "\nlatency at {} rows/s for {} s (commit → stored in JetStream and read back), {} events",
        args.rate,
        args.seconds,
        latencies.len()
    );
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0)
    );

    // Last, so that its disk writes do not disturb the figures above.
    let nats_rate = jetstream_ceiling(&nats, args.rows).await?;
    println!(
        "\nJetStream alone (same payload size and headers, no Postgres, no CDC): {nats_rate:.0} events/s"
    );

    let status = cdc.terminate();
    if !status.success() {
        bail!("the CDC exited with {status}: {}", cdc.log());
    }
    Ok(())
}

/// NATS' own ceiling on this machine: `count` events of the size the CDC just published, with
/// the same headers, into a scratch stream with the same settings, through the same window.
async fn jetstream_ceiling(nats: &async_nats::Client, count: u64) -> anyhow::Result<f64> {
    use async_nats::jetstream::stream::Config;
    use futures::stream::FuturesOrdered;
    use std::future::IntoFuture;
    let js =
        nself_realtime_shared::bus::jetstream_context(nats.clone(), 8192, Duration::from_secs(10));
    let source = js.get_stream("REALTIME_DB").await?;
    let sample = source.get_raw_message(1).await?.payload;
    js.create_stream(Config {
        name: "BENCH_CEILING".into(),
        subjects: vec!["bench.ceiling".into()],
        duplicate_window: nself_realtime_shared::config::DB_STREAM_DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await?;
    let mut acks = FuturesOrdered::new();
    let started = Instant::now();
    for i in 0..count {
        if acks.len() >= 8192 {
            let ack: Result<_, _> = futures::StreamExt::next(&mut acks)
                .await
                .expect("in flight");
            ack?;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{i:016X}-00000000").as_str(),
        );
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            i.to_string().as_str(),
        );
        let ack = js
            .publish_with_headers("bench.ceiling", headers, sample.clone())
            .await?;
        acks.push_back(ack.into_future());
    }
    while let Some(ack) = futures::StreamExt::next(&mut acks).await {
        ack?;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    js.delete_stream("BENCH_CEILING").await?;
    Ok(rate)
}

/// `rows` INSERTs, `tx_size` per transaction, pipelined on one connection.
async fn load(client: &tokio_postgres::Client, rows: u64, tx_size: u64) -> anyhow::Result<()> {
    let insert = client
        .prepare("INSERT INTO bench_rows (n, label) VALUES ($1, $2)")
        .await?;
    let mut n = 0u64;
    while n < rows {
        let tx_rows = tx_size.min(rows - n);
        client.batch_execute("BEGIN").await?;
        let inserts = (n..n + tx_rows).map(|i| {
            let label = format!("row {i}");
            let insert = &insert;
            async move { client.execute(insert, &[&(i as i64), &label]).await }
        });
        for result in futures::future::join_all(inserts).await {
            result?;
        }
        client.batch_execute("COMMIT").await?;
        n += tx_rows;
    }
    Ok(())
}

/// Single-row transactions at `rate` per second for `seconds`; returns each event's
/// commit → JetStream latency in milliseconds.
async fn latency(
    client: &tokio_postgres::Client,
    nats: &async_nats::Client,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Vec<f64>> {
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream("REALTIME_DB").await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let expected = rate * seconds;
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(expected as usize);
        while (latencies.len() as u64) < expected {
            let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(30), messages.next()).await
            else {
                break;
            };
            let arrived = time::OffsetDateTime::now_utc();
            let event: ChangeEvent = serde_json::from_slice(&message.payload)?;
            let committed = time::OffsetDateTime::parse(
                &event.commit_timestamp,
                &time::format_description::well_known::Rfc3339,
            )?;
            latencies.push((arrived - committed).as_seconds_f64() * 1000.0);
        }
        Ok::<_, anyhow::Error>(latencies)
    });

    let insert = client
        .prepare("INSERT INTO bench_rows (n, label) VALUES ($1, 'steady')")
        .await?;
    // Ticks of 10 ms, each committing rate/100 single-row transactions (pipelined).
    let per_tick = (rate / 100).max(1);
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    while sent < expected {
        ticks.tick().await;
        let batch = per_tick.min(expected - sent);
        let inserts = (0..batch).map(|i| {
            let insert = &insert;
            let n = (sent + i) as i64;
            async move { client.execute(insert, &[&n]).await }
        });
        for result in futures::future::join_all(inserts).await {
            result?;
        }
        sent += batch;
    }
    let mut latencies = reader.await??;
    if (latencies.len() as u64) < expected {
        bail!("only {} of {expected} events came back", latencies.len());
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(latencies)
}

/// The `p`th percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
