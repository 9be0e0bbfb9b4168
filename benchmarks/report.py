"""Turn a results dict into the Markdown table, the target check and the PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The store section's clients, in the order of the tables and the legends.
CLIENTS = ("store", "redis-py", "starsessions", "valkey-glide", "coredis", "redis-py+msgpack")
LABELS = {
    "store": "redis_session store (load + save)",
    "redis-py": "raw redis-py GET + SET EX",
    "starsessions": "starsessions RedisStore + JSON",
    "valkey-glide": "raw valkey-glide GET + SET EX",
    "coredis": "raw coredis GET + SET EX",
    "redis-py+msgpack": "raw redis-py + msgpack",
}
COLORS = {
    "store": "#1b7837",
    "redis-py": "#2166ac",
    "starsessions": "#d6604d",
    "valkey-glide": "#762a83",
    "coredis": "#e08214",
    "redis-py+msgpack": "#35978f",
}
#: The loop of the single-loop figures and targets (the default chart and the CPU target).
MAIN_LOOP = "asyncio"
#: The cluster section's clients (benchmarks/cluster.py), baselines first.
CLUSTER_CLIENTS = ("redis-py", "redis-py cluster", "store", "store cluster")
CLUSTER_STORE = "store cluster"
#: Issue 12: the store on the cluster within this multiple of its client CPU on one server.
CLUSTER_CPU_TARGET = 1.2
#: Issue 14's targets. Client CPU per pair of the store at the headline concurrency (us).
CPU_TARGET_US = 30.0
#: The peer the store must match in pairs/s from :data:`PEER_FROM_TASKS` tasks up.
PEER = "valkey-glide"
PEER_FROM_TASKS = 4
#: The store at 1 task against raw redis-py, pairs/s.
ONE_TASK_TARGET = 0.95
#: No dip: at these concurrencies the store ÷ :data:`PEER` pairs/s ratio stays within
#: :data:`DIP_TOLERANCE` (relative) of that ratio at the headline concurrency.
DIP_TASKS = (256, 1024)
DIP_TOLERANCE = 0.10
#: Large sessions: the store against raw redis-py with msgpack on both sides, pairs/s.
LARGE_BASELINE = "redis-py+msgpack"
LARGE_TARGET = 1.0
HOT_OPS = ("serialize", "encrypt", "decrypt", "deserialize")
X = "\N{MULTIPLICATION SIGN}"


def _kib(size: int | str) -> str:
    size = int(size)
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _loops(results: dict[str, Any]) -> list[str]:
    """The event loops the store section ran on, in run order."""
    rows = results.get("store", {}).get("by_concurrency", [])
    return list(dict.fromkeys(r.get("loop", MAIN_LOOP) for r in rows))


def _check(target: str, measured: float, unit: str, met: bool) -> dict[str, Any]:
    return {"target": target, "measured": measured, "unit": unit, "met": met}


def _vs(row: dict[str, Any], other: str, key: str = "pairs_per_s") -> float:
    """The store's figure divided by ``other``'s, same repetitions (NaN when not measured)."""
    found = row.get("store_vs", {}).get(other)
    return float(found[key]) if found else float("nan")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure measured in this run and whether it is met.

    A web section (``results["web"]``, written by the web benchmark when it is part of the
    run) adds its own checks as ``results["web"]["targets"]``: a list of dicts with the same
    keys as these (``target``, ``measured``, ``unit``, ``met``), listed after the store's.
    """
    checks: list[dict[str, Any]] = []
    default = str(results["settings"]["default_payload"])
    hot = results.get("hotpath", {}).get(default)
    if hot is not None:
        for name in ("serialize+encrypt", "decrypt+deserialize"):
            ratio = hot["ratios"][name]["ratio"]
            checks.append(
                _check(
                    f"{name}, {_kib(default)}: ≤ 1.3{X} the bare primitives", ratio, X, ratio <= 1.3
                )
            )
    rows = results.get("store", {}).get("by_concurrency", [])
    headline = results["settings"]["headline_tasks"]
    main = _row(rows, loop=MAIN_LOOP, tasks=headline)
    if main is not None:
        cpu = main["clients"]["store"]["cpu_us_per_pair"]
        checks.append(
            _check(
                f"store client CPU per pair, {headline} tasks ({MAIN_LOOP}): "
                f"≤ {CPU_TARGET_US:.0f} µs",
                cpu,
                " µs",
                cpu <= CPU_TARGET_US,
            )
        )
    for loop in _loops(results):
        mine = [r for r in rows if r.get("loop", MAIN_LOOP) == loop]
        against = [r for r in mine if r["tasks"] >= PEER_FROM_TASKS and PEER in r["clients"]]
        if against:
            worst = min(against, key=lambda r: _vs(r, PEER))
            ratio = _vs(worst, PEER)
            top = max(r["tasks"] for r in against)
            checks.append(
                _check(
                    f"store pairs/s ≥ {PEER}'s at {PEER_FROM_TASKS} to {top} tasks ({loop}; "
                    f"worst at {_tasks(worst['tasks'])})",
                    ratio,
                    X,
                    ratio >= 1,
                )
            )
    one = _row(rows, loop=MAIN_LOOP, tasks=1)
    if one is not None:
        ratio = _vs(one, "redis-py")
        checks.append(
            _check(
                f"store pairs/s at 1 task ({MAIN_LOOP}): ≥ {ONE_TASK_TARGET}{X} raw redis-py",
                ratio,
                X,
                ratio >= ONE_TASK_TARGET,
            )
        )
    for loop in _loops(results):
        base = _row(rows, loop=loop, tasks=headline)
        if base is None or PEER not in base["clients"]:
            continue
        floor = _vs(base, PEER) * (1 - DIP_TOLERANCE)
        for tasks in DIP_TASKS:
            row = _row(rows, loop=loop, tasks=tasks)
            if row is None:
                continue
            ratio = _vs(row, PEER)
            checks.append(
                _check(
                    f"no dip ({loop}): store ÷ {PEER} pairs/s at {tasks} tasks ≥ its "
                    f"{headline}-task ratio minus {DIP_TOLERANCE:.0%} ({floor:.2f}{X})",
                    ratio,
                    X,
                    ratio >= floor,
                )
            )
    for row in results.get("store", {}).get("by_payload", []):
        if LARGE_BASELINE not in row["clients"]:
            continue
        ratio = _vs(row, LARGE_BASELINE)
        checks.append(
            _check(
                f"store pairs/s, {_kib(row['payload'])} sessions, {_tasks(row['tasks'])} "
                f"({row.get('loop', MAIN_LOOP)}): ≥ {LARGE_TARGET}{X} raw {LARGE_BASELINE}",
                ratio,
                X,
                ratio >= LARGE_TARGET,
            )
        )
    checks += results.get("web", {}).get("targets", [])
    for row in results.get("cluster", {}).get("rows", []):
        ratios = row["ratios"].get(CLUSTER_STORE, {}).get("store")
        if ratios is None:
            continue
        ratio = ratios["cpu_us_per_pair"]
        checks.append(
            _check(
                f"store on the cluster, {_tasks(row['tasks'])}: client CPU per pair "
                f"≤ {CLUSTER_CPU_TARGET}{X} the store on one server",
                ratio,
                X,
                ratio <= CLUSTER_CPU_TARGET,
            )
        )
    return checks


def targets_text(results: dict[str, Any]) -> str:
    """Plain-text target summary for the terminal."""
    lines = [f"Targets ({results['meta']['mode']} run, {results['meta']['seconds']} s):"]
    for check in targets(results):
        mark = "MET " if check["met"] else "MISS"
        lines.append(f"  [{mark}] {check['target']}: {check['measured']:.2f}{check['unit']}")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """Everything measured, as Markdown tables."""
    meta, settings = results["meta"], results["settings"]
    out = [
        "# redis_session benchmarks",
        "",
        f"{meta['date']}, {meta['mode']} run ({meta['seconds']} s), commit {meta['commit']}, "
        f"Python {meta['python']}, {meta['cpus']} CPUs (load average at start "
        f"{meta['load_average'][0]:.2f}), redis-server {meta['redis_server']}, "
        + ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
        + ".",
        "",
        "Every ratio compares figures measured in this same run; absolute numbers move with the "
        "machine and its load, ratios much less. Medians over repetitions.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
    ]
    out += [
        f"| {c['target']} | {c['measured']:.2f}{c['unit']} | {'✅' if c['met'] else '❌'} |"
        for c in targets(results)
    ]
    if "hotpath" in results:
        out += [
            "",
            "## Hot path (µs per operation)",
            "",
            "Ours is what the store calls (`Codec.encode`/`decode`, `KeyRing.encrypt`/"
            "`decrypt`); bare is `msgpack.packb`/`unpackb` and `AESGCM.encrypt`/`decrypt` alone "
            f"(nonce given). {settings['micro_repeat']} interleaved repetitions.",
            "",
            "| payload | operation | ours | bare | ratio |",
            "|---|---|---:|---:|---:|",
        ]
        for size, figures in results["hotpath"].items():
            for name, r in figures["ratios"].items():
                out.append(
                    f"| {_kib(size)} ({figures['payload_bytes']} B) | {name} | "
                    f"{r['ours_ns'] / 1e3:.2f} | {r['bare_ns'] / 1e3:.2f} | {r['ratio']:.2f}{X} |"
                )
            urandom = figures["ns_per_op"]["bare.urandom12"] / 1e3
            out.append(f"| {_kib(size)} | (`os.urandom(12)`, in ours) | {urandom:.2f} | | |")
    if "store" in results:
        out += _store_markdown(results)
    if "redis_benchmark" in results:
        out += [
            "",
            "## Ceiling: redis-benchmark (C, 50 clients, no pipelining)",
            "",
            "pairs/s = one GET plus one SET: 1 / (1/GET rps + 1/SET rps).",
            "",
            "| payload | GET rps | SET rps | pairs/s | store at "
            f"{settings['headline_tasks']} tasks ({MAIN_LOOP}), share of ceiling |",
            "|---:|---:|---:|---:|---:|",
        ]
        for size, rb in results["redis_benchmark"].items():
            if not rb.get("available"):
                out.append(f"| {_kib(size)} | redis-benchmark not found | | | |")
                continue
            row = _row(results["store"]["by_payload"], payload=int(size), loop=MAIN_LOOP)
            share = (
                f"{row['clients']['store']['pairs_per_s'] / rb['pairs_per_s']:.0%}" if row else ""
            )
            out.append(
                f"| {_kib(size)} | {rb['get_rps']:,.0f} | {rb['set_rps']:,.0f} | "
                f"{rb['pairs_per_s']:,.0f} | {share} |"
            )
    web = results.get("web", {}).get("markdown")
    if web:
        # The web benchmark's own section, when it is part of the run (see targets()).
        out += ["", *web]
    if "cluster" in results:
        out += _cluster_markdown(results)
    out.append("")
    return "\n".join(out)


def _store_markdown(results: dict[str, Any]) -> list[str]:
    """The store section: every client at every point, on every loop; then large sessions."""
    settings = results["settings"]
    loops = ", ".join(_loops(results))
    out = [
        "",
        "## Store: load + save pairs against raw clients and starsessions",
        "",
        f"{settings['max_connections']} connections for every client but valkey-glide (one "
        "multiplexed connection, its default), "
        f"{settings['sessions_per_client']} pre-created sessions each, "
        f"{settings['store_warmup_s']} s warm-up (and at least one round of pairs) + "
        f"{settings['store_duration_s']} s per run, {settings['store_repeat']} repetitions, "
        f"clients interleaved; every point on each event loop ({loops}). Ratios are per "
        f"repetition, then the median: *{X}raw* against raw redis-py, *store ÷* the store "
        "against that client. *CPU µs/pair* is this process's CPU time (all threads, so "
        "valkey-glide's Rust thread too) per pair: the client's cost, whatever else the "
        "machine does. Latency is per pair (load then save), over every pair in flight during "
        "the run; *fair* is the least productive task's share of an even split (0 = a task got "
        "nothing done).",
    ]
    header = [
        f"| loop | tasks | payload | client | pairs/s | {X}raw | store ÷ | CPU µs/pair | "
        f"store ÷ CPU | p50 ms | p99 ms | {X}raw p99 | max ms | fair |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for title, key in (
        (f"By concurrency ({_kib(settings['default_payload'])} payload)", "by_concurrency"),
        (f"By payload size ({settings['headline_tasks']} tasks)", "by_payload"),
    ):
        out += ["", f"### {title}", "", *header]
        for row in results["store"][key]:
            for name in CLIENTS:
                c = row["clients"].get(name)
                if c is None:
                    continue
                ratio = row["ratios"].get(name)
                tput = f"{ratio['pairs_per_s']:.2f}{X}" if ratio else "1"
                p99 = f"{ratio['p99_ms']:.2f}{X}" if ratio else "1"
                vs = row.get("store_vs", {}).get(name)
                vs_tput = f"{vs['pairs_per_s']:.2f}{X}" if vs else ""
                vs_cpu = f"{vs['cpu_us_per_pair']:.2f}{X}" if vs else ""
                out.append(
                    f"| {row.get('loop', MAIN_LOOP)} | {row['tasks']} | {_kib(row['payload'])} | "
                    f"{name} | {c['pairs_per_s']:,.0f} | {tput} | {vs_tput} | "
                    f"{c['cpu_us_per_pair']:.0f} | {vs_cpu} | {c['p50_ms']:.2f} | "
                    f"{c['p99_ms']:.2f} | {p99} | {c['max_ms']:.1f} | "
                    f"{c['slowest_task_share']:.2f} |"
                )
    large = [r for r in results["store"]["by_payload"] if LARGE_BASELINE in r["clients"]]
    if large:
        out += [
            "",
            "### Large sessions: the store against raw redis-py with msgpack",
            "",
            f"`{LARGE_BASELINE}` is raw redis-py `GET` + `msgpack.unpackb`, then "
            "`msgpack.packb` + `SET EX` of the same session data: what a store that serializes "
            "but neither encrypts nor checks for conflicts pays. *store ÷* is the store's "
            "figure over that client's, per repetition, then the median.",
            "",
            "| loop | tasks | payload | client | pairs/s | CPU µs/pair | store ÷ pairs/s "
            "| store ÷ CPU | p99 ms |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for row in large:
            for name in ("store", LARGE_BASELINE, "redis-py"):
                c = row["clients"][name]
                vs = row["store_vs"].get(name)
                out.append(
                    f"| {row.get('loop', MAIN_LOOP)} | {row['tasks']} | {_kib(row['payload'])} | "
                    f"{name} | {c['pairs_per_s']:,.0f} | {c['cpu_us_per_pair']:.0f} | "
                    + (
                        f"{vs['pairs_per_s']:.2f}{X} | {vs['cpu_us_per_pair']:.2f}{X}"
                        if vs
                        else "1 | 1"
                    )
                    + f" | {c['p99_ms']:.2f} |"
                )
    return out


def _cluster_markdown(results: dict[str, Any]) -> list[str]:
    """The cluster section: the store and raw redis-py, each on one server and on a cluster."""
    settings, section = results["settings"], results["cluster"]
    rows = section["rows"]
    payload = _kib(rows[0]["payload"]) if rows else ""
    out = [
        "",
        f"## Cluster: the cost of routing ({payload} payload)",
        "",
        "Raw redis-py `GET` + `SET EX` and the store's load + save, each on one redis-server "
        "and on a Redis Cluster of 3 masters (each with a replica) on loopback, 8 connections "
        f"per node, {settings['sessions_per_client']} keys each, "
        f"{settings['store_warmup_s']} s warm-up + {settings['store_duration_s']} s per run, "
        f"{settings['store_repeat']} repetitions, clients interleaved. *CPU µs/pair* is this "
        "process's CPU time per pair: the client's cost, the servers being other processes. "
        "Ratios are per repetition, then the median; *cluster ÷ one* is a client on the cluster "
        "against the same client on one server.",
        "",
        f"| tasks | client | pairs/s | CPU µs/pair | CPU {X}redis-py | CPU {X}redis-py cluster "
        f"| pairs/s {X}redis-py cluster | CPU cluster ÷ one | p50 ms | p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single = {"redis-py cluster": "redis-py", "store cluster": "store"}
    for row in rows:
        for name in CLUSTER_CLIENTS:
            c = row["clients"].get(name)
            if c is None:
                continue
            mine = row["ratios"].get(name, {})

            def ratio(other: str, key: str, mine: dict[str, Any] = mine, name: str = name) -> str:
                if other == name:
                    return "1"
                found = mine.get(other)
                return f"{found[key]:.2f}{X}" if found else ""

            one = ratio(single[name], "cpu_us_per_pair") if name in single else ""
            out.append(
                f"| {row['tasks']} | {name} | {c['pairs_per_s']:,.0f} | "
                f"{c['cpu_us_per_pair']:.0f} | {ratio('redis-py', 'cpu_us_per_pair')} | "
                f"{ratio('redis-py cluster', 'cpu_us_per_pair')} | "
                f"{ratio('redis-py cluster', 'pairs_per_s')} | {one} | "
                f"{c['p50_ms']:.2f} | {c['p99_ms']:.2f} |"
            )
    for name, why in section.get("missing", {}).items():
        out += ["", f"*{name}* not measured: {why}."]
    spread = section.get("keys_per_master", {})
    if spread:
        out += ["", "Keys each cluster client wrote, per master:", ""]
        for name, counts in spread.items():
            total = sum(counts.values())
            largest = max(counts.values()) / total if total else 0.0
            listed = ", ".join(f"{node} {n}" for node, n in counts.items())
            out.append(f"- {name}: {listed} (largest share {largest:.0%})")
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    """Draw the two-by-two summary chart to ``path`` (matplotlib, Agg backend)."""
    import matplotlib as mpl  # noqa: PLC0415 - bench-only dependency, loaded when drawing

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5), layout="constrained")
    meta, settings = results["meta"], results["settings"]
    fig.suptitle(
        f"redis_session benchmarks — {meta['mode']} run, {meta['date'][:10]}, {meta['cpus']} CPUs, "
        f"redis-server {meta['redis_server']}, {settings['max_connections']} connections per "
        f"client, {MAIN_LOOP} loop",
        fontsize=13,
    )
    if "store" in results:
        _throughput_panel(axes[0][0], results, MAIN_LOOP)
        _latency_panel(axes[0][1], results)
        _payload_panel(axes[1][0], results)
    if "hotpath" in results:
        _hotpath_panel(axes[1][1], results)
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_axis_off()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ceiling(results: dict[str, Any], size: int) -> float | None:
    rb = results.get("redis_benchmark", {}).get(str(size), {})
    return rb.get("pairs_per_s") if rb.get("available") else None


def _on(results: dict[str, Any], key: str, loop: str) -> list[dict[str, Any]]:
    """The store section's rows of ``key`` measured on ``loop``."""
    return [r for r in results["store"][key] if r.get("loop", MAIN_LOOP) == loop]


def _everywhere(rows: list[dict[str, Any]]) -> list[str]:
    """The clients measured at every one of ``rows``, in :data:`CLIENTS` order."""
    return [n for n in CLIENTS if rows and all(n in r["clients"] for r in rows)]


def _throughput_panel(ax: Any, results: dict[str, Any], loop: str) -> None:
    rows = _on(results, "by_concurrency", loop)
    tasks = [r["tasks"] for r in rows]
    names = _everywhere(rows)
    for name in names:
        ys = [r["clients"][name]["pairs_per_s"] for r in rows]
        ax.plot(tasks, ys, "o-", color=COLORS[name], label=LABELS[name], lw=2.2)
    for r in rows:
        ratio = r["ratios"]["store"]["pairs_per_s"]
        y = r["clients"]["store"]["pairs_per_s"]
        ax.annotate(
            f"{ratio:.1f}{X} raw",
            (r["tasks"], y),
            textcoords="offset points",
            xytext=(0, 9),
            ha="center",
            fontsize=9,
            color=COLORS["store"],
            fontweight="bold",
        )
    ceiling = _ceiling(results, results["settings"]["default_payload"])
    top = max(max(r["clients"][n]["pairs_per_s"] for n in names) for r in rows)
    if ceiling is not None:
        ax.axhline(ceiling, color="grey", ls="--", lw=1.5)
        ax.text(
            tasks[-1],
            ceiling,
            f"redis-benchmark ceiling (C, 50 clients): {ceiling:,.0f} ",
            ha="right",
            va="bottom",
            fontsize=9,
            color="dimgrey",
        )
        top = max(top, ceiling)
    ax.set_ylim(0, top * 1.15)
    ax.set_xscale("log", base=2)
    ax.set_xlim(tasks[0] / 1.6, tasks[-1] * 1.6)
    ax.set_xticks(tasks, [str(t) for t in tasks])
    ax.set_xlabel("concurrent tasks")
    ax.set_ylabel("load + save pairs per second")
    ax.set_title(
        f"Throughput vs concurrency ({_kib(results['settings']['default_payload'])} session, "
        f"{loop})"
    )
    ax.grid(alpha=0.3)
    # Below the ceiling's line; few tasks (the left) is where every client is slowest.
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.85), fontsize=8)


def _latency_panel(ax: Any, results: dict[str, Any]) -> None:
    rows = _on(results, "by_concurrency", MAIN_LOOP)
    tasks = [r["tasks"] for r in rows]
    for name in _everywhere(rows):
        ax.plot(
            tasks,
            [r["clients"][name]["p99_ms"] for r in rows],
            "o-",
            color=COLORS[name],
            label=f"{name} p99",
            lw=2.2,
        )
        ax.plot(
            tasks,
            [r["clients"][name]["p50_ms"] for r in rows],
            "s:",
            color=COLORS[name],
            label=f"{name} p50",
            lw=1.2,
            alpha=0.7,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(tasks, [str(t) for t in tasks])
    ax.set_xlabel("concurrent tasks")
    ax.set_ylabel("latency of one load + save pair, ms (log)")
    ax.set_title("Latency vs concurrency (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    worst = min(rows, key=lambda r: r["clients"]["redis-py"]["slowest_task_share"])
    share = worst["clients"]["redis-py"]["slowest_task_share"]
    if share < 0.8:
        ax.text(
            0.98,
            0.04,
            "redis-py's BlockingConnectionPool is unfair: at "
            f"{worst['tasks']} tasks its slowest\ntask did {share:.2f} of a fair share "
            "of the pairs, hence its long tail",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8.5,
            color=COLORS["redis-py"],
            bbox={"boxstyle": "round", "fc": "white", "ec": COLORS["redis-py"], "alpha": 0.9},
        )


def _payload_panel(ax: Any, results: dict[str, Any]) -> None:
    rows = sorted(_on(results, "by_payload", MAIN_LOOP), key=lambda r: r["payload"])
    xs = list(range(len(rows)))
    for name in CLIENTS:
        # A client measured at some sizes only (redis-py+msgpack) is drawn where it was.
        points = [
            (x, r["clients"][name]) for x, r in zip(xs, rows, strict=True) if name in r["clients"]
        ]
        if not points:
            continue
        ax.plot(
            [x for x, _ in points],
            [c["pairs_per_s"] for _, c in points],
            "o-",
            color=COLORS[name],
            label=LABELS[name],
            lw=2.2,
        )
    for x, r in zip(xs, rows, strict=True):
        ax.annotate(
            f"{r['ratios']['store']['pairs_per_s']:.1f}{X} raw",
            (x, r["clients"]["store"]["pairs_per_s"]),
            textcoords="offset points",
            xytext=(0, 9),
            ha="center",
            fontsize=9,
            color=COLORS["store"],
            fontweight="bold",
        )
    ceilings = [_ceiling(results, r["payload"]) for r in rows]
    if all(c is not None for c in ceilings):
        ax.plot(xs, ceilings, "_--", color="grey", ms=30, lw=1.2, label="redis-benchmark ceiling")
    ax.set_xticks(xs, [_kib(r["payload"]) for r in rows])
    ax.set_xlim(-0.3, len(rows) - 0.7)
    # Headroom above the lines for the legend (two columns across the top).
    _, top = ax.get_ylim()
    ax.set_ylim(0, top * 1.45)
    ax.set_xlabel("session payload (msgpack bytes)")
    ax.set_ylabel("load + save pairs per second")
    ax.set_title(
        f"Throughput vs payload size ({results['settings']['headline_tasks']} tasks, {MAIN_LOOP})"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=2)


def _hotpath_panel(ax: Any, results: dict[str, Any]) -> None:
    default = str(results["settings"]["default_payload"])
    ratios = results["hotpath"][default]["ratios"]
    names = [*HOT_OPS, "serialize+encrypt", "decrypt+deserialize"]
    ys = list(range(len(names)))[::-1]
    ours = [ratios[n]["ours_ns"] / 1e3 for n in names]
    bare = [ratios[n]["bare_ns"] / 1e3 for n in names]
    h = 0.38
    ax.barh([y + h / 2 for y in ys], ours, h, color=COLORS["store"], label="redis_session")
    ax.barh([y - h / 2 for y in ys], bare, h, color="#999999", label="bare primitives")
    for y, n, o in zip(ys, names, ours, strict=True):
        ratio = ratios[n]["ratio"]
        ax.text(o, y + h / 2, f" {ratio:.2f}{X}", va="center", fontsize=9)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys, names)
    ax.set_xlabel("µs per operation (median)")
    ax.set_title(f"Hot path, {_kib(default)} session: ours vs bare msgpack + AES-GCM")
    ax.set_xlim(0, max(ours + bare) * 1.2)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=9, loc="upper right")


def loops_chart(results: dict[str, Any], path: Path) -> bool:
    """Pairs/s and client CPU per pair against concurrency, per client, one column per loop.

    Returns whether it drew anything (not without the store section).
    """
    if "store" not in results:
        return False
    import matplotlib as mpl  # noqa: PLC0415 - bench-only dependency, loaded when drawing

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import ScalarFormatter  # noqa: PLC0415

    loops = _loops(results)
    fig, axes = plt.subplots(
        2, len(loops), figsize=(6.5 * len(loops), 9.5), layout="constrained", squeeze=False
    )
    meta, settings = results["meta"], results["settings"]
    fig.suptitle(
        f"The store and its peers on each event loop — {meta['mode']} run, {meta['date'][:10]}, "
        f"{_kib(settings['default_payload'])} sessions, {settings['max_connections']} "
        "connections per client (valkey-glide: one multiplexed)",
        fontsize=12,
    )
    top = max(
        c["pairs_per_s"] for r in results["store"]["by_concurrency"] for c in r["clients"].values()
    )
    for column, loop in enumerate(loops):
        tput, cpu = axes[0][column], axes[1][column]
        _throughput_panel(tput, results, loop)
        tput.set_ylim(0, top * 1.15)
        rows = _on(results, "by_concurrency", loop)
        tasks = [r["tasks"] for r in rows]
        for name in _everywhere(rows):
            ys = [r["clients"][name]["cpu_us_per_pair"] for r in rows]
            cpu.plot(tasks, ys, "o-", color=COLORS[name], label=LABELS[name], lw=2.2)
        cpu.axhline(CPU_TARGET_US, color="grey", ls="--", lw=1.2)
        cpu.text(
            tasks[0],
            CPU_TARGET_US,
            f" target for the store: {CPU_TARGET_US:.0f} µs",
            va="bottom",
            fontsize=9,
            color="dimgrey",
        )
        cpu.set_xscale("log", base=2)
        cpu.set_yscale("log")
        cpu.yaxis.set_major_formatter(ScalarFormatter())
        cpu.yaxis.set_minor_formatter(ScalarFormatter())
        cpu.set_xticks(tasks, [str(t) for t in tasks])
        cpu.set_xlabel("concurrent tasks")
        cpu.set_ylabel("client CPU per pair, µs (log; all threads)")
        cpu.set_title(f"Client CPU per load + save pair ({loop}, lower is better)")
        cpu.grid(alpha=0.3, which="both")
        cpu.legend(fontsize=8, loc="upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
