#!/usr/bin/env python3
"""Turns scripts/bench's results.tsv into the markdown tables of README "Benchmarks".

usage: bench-table.py results.tsv IDLE_CONNS
"""
import csv
import sys


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def ratio(a, b):
    a, b = num(a), num(b)
    return f"{a / b:.2f}" if a is not None and b else "–"


def main():
    path = sys.argv[1]
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    out = []
    errors = []

    def cell(r):
        if r is None:
            return "–"
        t = num(r["tps"]) or 0
        s = f"{t:,.0f}"
        failed = int(r["failed"]) if r["failed"].isdigit() else 0
        if t == 0 or r["error"]:
            s += " ✗" if t == 0 else " (errors)"
            errors.append(r)
        elif failed:
            s += f" ({failed} failed)"
        return s

    def lat(r):
        return r["latency_ms"] if r and r["latency_ms"] not in ("", "-") else "–"

    # Main matrix.
    matrix = {}
    order = []
    for r in rows:
        if r["kind"] not in ("matrix", "matrix-same"):
            continue
        mode = "same policy" if r["kind"] == "matrix-same" else "enforced"
        key = (r["workload"], r["protocol"], r["clients"], mode)
        if key not in matrix:
            matrix[key] = {}
            order.append(key)
        matrix[key][r["target"]] = r
    if order:
        out.append("")
        out.append("| workload | protocol | clients | mode | direct TPS | PgBouncer TPS | pgtenant TPS | pgtenant / PgBouncer | pgtenant / direct | avg latency ms: direct / PgBouncer / pgtenant |")
        out.append("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
    for key in order:
        d, b, t = (matrix[key].get(x) for x in ("direct", "pgbouncer", "pgtenant"))
        cells = [cell(d), cell(b), cell(t)]
        rb = ratio(t and t["tps"], b and b["tps"]) if b and num(b["tps"]) and not b["error"] else "–"
        rd = ratio(t and t["tps"], d and d["tps"])
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cells[0]} | {cells[1]} | {cells[2]} | {rb} | {rd} | {lat(d)} / {lat(b)} / {lat(t)} |")

    # Extra latency over direct at 1 client.
    one = [k for k in order if k[2] == "1"]
    if one:
        out.append("")
        out.append("Extra latency over direct PostgreSQL at 1 client (average, ms):")
        out.append("")
        out.append("| workload | protocol | mode | direct | PgBouncer extra | pgtenant extra | pgtenant extra / PgBouncer extra |")
        out.append("|---|---|---|---:|---:|---:|---:|")
        for k in one:
            d, b, t = (num(lat(matrix[k].get(x))) for x in ("direct", "pgbouncer", "pgtenant"))
            if d is None:
                continue
            eb = f"{b - d:+.3f}" if b is not None else "–"
            et = f"{t - d:+.3f}" if t is not None else "–"
            rr = f"{(t - d) / (b - d):.2f}" if b is not None and t is not None and b - d > 0 else "–"
            out.append(f"| {k[0]} | {k[1]} | {k[3]} | {d:.3f} | {eb} | {et} | {rr} |")

    # Connection rate.
    conn = {r["target"]: r for r in rows if r["kind"] == "connect"}
    if conn:
        out.append("")
        out.append("Connection rate (`pgbench -C -S -M simple -c 8`: a new SCRAM-authenticated connection per transaction):")
        out.append("")
        out.append("| direct conn/s | PgBouncer conn/s | pgtenant conn/s | pgtenant / PgBouncer | pgtenant / direct |")
        out.append("|---:|---:|---:|---:|---:|")
        d, b, t = (conn.get(x) for x in ("direct", "pgbouncer", "pgtenant"))
        out.append(f"| {cell(d)} | {cell(b)} | {cell(t)} | {ratio(t and t['tps'], b and b['tps'])} | {ratio(t and t['tps'], d and d['tps'])} |")

    # Tenants taking turns.
    turns = [r for r in rows if r["kind"] == "turns"]
    if turns:
        out.append("")
        out.append("Tenants taking turns on a pool of 10 (pgtenant, transaction mode; `examples/benchclient load`, select-only, extended protocol with a prepared statement; each client is its own connection):")
        out.append("")
        out.append("| clients | one tenant TPS | one tenant per client TPS | many / one | avg latency ms one / many | errors one / many |")
        out.append("|---:|---:|---:|---:|---|---|")
        by = {}
        for r in turns:
            by.setdefault(r["clients"], {})["one" if r["target"] == "pgtenant-1tenants" else "many"] = r
        for c, pair in by.items():
            o, m = pair.get("one"), pair.get("many")
            out.append(f"| {c} | {cell(o)} | {cell(m)} | {ratio(m and m['tps'], o and o['tps'])} | {lat(o)} / {lat(m)} | {o and o['failed']} / {m and m['failed']} |")

    # Idle connections.
    idle = {r["target"]: r for r in rows if r["kind"] == "idle"}
    if idle:
        out.append("")
        out.append("Memory holding idle authenticated client connections (VmRSS of the pooler process):")
        out.append("")
        out.append("| pooler | connections held | RSS before | RSS after | per connection |")
        out.append("|---|---:|---:|---:|---:|")
        per = {}
        for name in ("pgbouncer", "pgtenant"):
            r = idle.get(name)
            if not r:
                continue
            held = int(r["clients"] or 0)
            before, after = int(r["tps"]), int(r["latency_ms"])
            per[name] = (after - before) * 1024 / held if held else None
            pc = f"{per[name] / 1024:.1f} KiB" if per[name] is not None else "–"
            out.append(f"| {name} | {held:,} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB | {pc} |")
            if r["error"]:
                errors.append(r)
        if per.get("pgbouncer") and per.get("pgtenant") is not None:
            out.append("")
            out.append(f"pgtenant / PgBouncer memory per idle connection: {per['pgtenant'] / per['pgbouncer']:.2f}")

    if errors:
        out.append("")
        out.append("Errors seen (first line of each failing run):")
        out.append("")
        for r in errors:
            out.append(f"- {r['kind']} {r['workload']} {r['protocol']} c={r['clients']} {r['target']}: `{r['error'] or 'no output'}`")
    print("\n".join(out))


if __name__ == "__main__":
    main()
