//! Micro-benchmark of the statement guard (`Guard::check`): what one client
//! statement costs the proxy before it is forwarded. Run by
//! scripts/bench-security.sh; alone:
//! `cargo run --release --example guard_bench [iterations]`.
//!
//! Prints one `case<TAB>µs per call<TAB>calls` line per case. Timings are
//! reported, never asserted: they depend on the machine.

use std::hint::black_box;
use std::time::Instant;

use pgtenant::guard::Guard;

const TENANT: &str = "b7e2c1a0-1111-4222-8333-944455556666";

fn main() {
    let iterations: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    // Parsing cases are ~100x slower; keep their run time comparable.
    let parse_iterations = (iterations / 20).max(1);
    let guard = Guard::new("app.tenant_id");

    // (i) pgbench -S's statement: no risky token, the parser is skipped.
    let pgbench = "SELECT abalance FROM pgbench_accounts WHERE aid = 51234;";
    report("skip-parser (pgbench -S SELECT)", iterations, |_| {
        black_box(guard.check(black_box(pgbench)));
    });

    // (ii) a statement with a risky token, judged before: a cache hit.
    let catalog = "SELECT c.relname FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = 1259";
    guard.check(catalog);
    report("cache-hit (catalog query)", iterations, |_| {
        black_box(guard.check(black_box(catalog)));
    });

    // (iii) the same query with a new literal each time: pre-scan, parse,
    // token walk and a cache insert (the cache is cleared at 16,384 entries).
    let unique: Vec<String> = (0..parse_iterations + warmup(parse_iterations))
        .map(|i| {
            format!(
                "SELECT c.relname FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = {}",
                1_000_000 + i
            )
        })
        .collect();
    report("cache-miss (catalog query, parsed)", parse_iterations, |i| {
        black_box(guard.check(black_box(&unique[i])));
    });

    // (iv) an attack: set_config inside a SELECT. Refusals are cached like
    // any verdict, so a repeated attack is a cache hit; a varied one parses.
    let attack = format!("SELECT set_config('app.tenant_id', '{TENANT}', false), (SELECT count(*) FROM accounts)");
    assert!(guard.check(&attack).denial.is_some(), "the attack must be refused");
    report("attack (repeated, cached refusal)", iterations, |_| {
        black_box(guard.check(black_box(&attack)));
    });
    let attacks: Vec<String> = (0..parse_iterations + warmup(parse_iterations))
        .map(|i| {
            format!("SELECT set_config('app.tenant_id', '{TENANT}', false), (SELECT count(*) FROM accounts) -- {i}")
        })
        .collect();
    report("attack (varied, parsed)", parse_iterations, |i| {
        black_box(guard.check(black_box(&attacks[i])));
    });
}

/// Calls `f` with indices `n..n + warmup(n)` to warm up, then `0..n` timed:
/// cases that need unique statements get `n + warmup(n)` of them, so the
/// warm-up never turns a timed miss into a hit.
fn report(case: &str, n: usize, mut f: impl FnMut(usize)) {
    for i in n..n + warmup(n) {
        f(i);
    }
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{case}\t{micros:.3}\t{n}");
}

fn warmup(n: usize) -> usize {
    (n / 10).max(1)
}
