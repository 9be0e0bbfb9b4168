"""Turn a results dict into the Markdown table, the target check and the PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLIENTS = ("store", "redis-py", "starsessions")
LABELS = {
    "store": "redis_session store (load + save)",
    "redis-py": "raw redis-py GET + SET EX",
    "starsessions": "starsessions RedisStore + JSON",
}
COLORS = {"store": "#1b7837", "redis-py": "#2166ac", "starsessions": "#d6604d"}
#: The cluster section's clients (benchmarks/cluster.py), baselines first.
CLUSTER_CLIENTS = ("redis-py", "redis-py cluster", "store", "store cluster")
CLUSTER_STORE = "store cluster"
#: Issue 12: the store on the cluster within this multiple of its client CPU on one server.
CLUSTER_CPU_TARGET = 1.2
HOT_OPS = ("serialize", "encrypt", "decrypt", "deserialize")
X = "\N{MULTIPLICATION SIGN}"


def _kib(size: int | str) -> str:
    size = int(size)
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def _row(rows: list[dict[str, Any]], **match: int) -> dict[str, Any] | None:
    for row in rows:
        if all(row[k] == v for k, v in match.items()):
            return row
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure measured in this run and whether it is met."""
    checks: list[dict[str, Any]] = []
    default = str(results["settings"]["default_payload"])
    hot = results.get("hotpath", {}).get(default)
    if hot is not None:
        for name in ("serialize+encrypt", "decrypt+deserialize"):
            ratio = hot["ratios"][name]["ratio"]
            checks.append(
                {
                    "target": f"{name}, {_kib(default)}: ≤ 1.3{X} the bare primitives",
                    "measured": ratio,
                    "unit": X,
                    "met": ratio <= 1.3,
                }
            )
    rows = results.get("store", {}).get("by_concurrency", [])
    headline = results["settings"]["headline_tasks"]
    at64 = _row(rows, tasks=headline)
    at1 = _row(rows, tasks=1)
    if at64 is not None:
        ratios = at64["ratios"]["store"]
        checks.append(
            {
                "target": f"store pairs/s at {headline} tasks, 8 connections: ≥ 3{X} raw redis-py",
                "measured": ratios["pairs_per_s"],
                "unit": X,
                "met": ratios["pairs_per_s"] >= 3,
            }
        )
        checks.append(
            {
                "target": f"store p99 at {headline} tasks: ≤ raw redis-py's",
                "measured": ratios["p99_ms"],
                "unit": X,
                "met": ratios["p99_ms"] <= 1,
            }
        )
    if at1 is not None:
        ratio = at1["ratios"]["store"]["p99_ms"]
        checks.append(
            {
                "target": f"store p99 at 1 task: ≤ 1.2{X} raw redis-py's",
                "measured": ratio,
                "unit": X,
                "met": ratio <= 1.2,
            }
        )
    for row in results.get("cluster", {}).get("rows", []):
        ratios = row["ratios"].get(CLUSTER_STORE, {}).get("store")
        if ratios is None:
            continue
        ratio = ratios["cpu_us_per_pair"]
        checks.append(
            {
                "target": f"store on the cluster, {_tasks(row['tasks'])}: client CPU per pair "
                f"≤ {CLUSTER_CPU_TARGET}{X} the store on one server",
                "measured": ratio,
                "unit": X,
                "met": ratio <= CLUSTER_CPU_TARGET,
            }
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
        out += [
            "",
            "## Store: load + save pairs against raw redis-py and starsessions",
            "",
            f"{settings['max_connections']} connections for every client, "
            f"{settings['sessions_per_client']} pre-created sessions each, "
            f"{settings['store_warmup_s']} s warm-up + {settings['store_duration_s']} s per run, "
            f"{settings['store_repeat']} repetitions, clients interleaved. Ratios are per "
            "repetition against raw redis-py, then the median. *CPU µs/pair* is this process's "
            "CPU time per pair (the client's cost, whatever else the machine does). Latency is "
            "per pair (load then save), over every pair in flight during the run; *fair* is the "
            "least productive task's share of an even split (0 = a task got nothing done).",
        ]
        for title, key in (
            (f"By concurrency ({_kib(settings['default_payload'])} payload)", "by_concurrency"),
            (f"By payload size ({settings['headline_tasks']} tasks)", "by_payload"),
        ):
            out += [
                "",
                f"### {title}",
                "",
                f"| tasks | payload | client | pairs/s | {X}raw | CPU µs/pair | p50 ms | p99 ms "
                f"| {X}raw p99 | max ms | fair |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for row in results["store"][key]:
                for name in CLIENTS:
                    c = row["clients"][name]
                    ratio = row["ratios"].get(name)
                    tput = f"{ratio['pairs_per_s']:.2f}{X}" if ratio else "1"
                    p99 = f"{ratio['p99_ms']:.2f}{X}" if ratio else "1"
                    out.append(
                        f"| {row['tasks']} | {_kib(row['payload'])} | {name} | "
                        f"{c['pairs_per_s']:,.0f} | {tput} | {c['cpu_us_per_pair']:.0f} | "
                        f"{c['p50_ms']:.2f} | "
                        f"{c['p99_ms']:.2f} | {p99} | {c['max_ms']:.1f} | "
                        f"{c['slowest_task_share']:.2f} |"
                    )
    if "redis_benchmark" in results:
        out += [
            "",
            "## Ceiling: redis-benchmark (C, 50 clients, no pipelining)",
            "",
            "pairs/s = one GET plus one SET: 1 / (1/GET rps + 1/SET rps).",
            "",
            "| payload | GET rps | SET rps | pairs/s | store at "
            f"{settings['headline_tasks']} tasks, share of ceiling |",
            "|---:|---:|---:|---:|---:|",
        ]
        for size, rb in results["redis_benchmark"].items():
            if not rb.get("available"):
                out.append(f"| {_kib(size)} | redis-benchmark not found | | | |")
                continue
            row = _row(results["store"]["by_payload"], payload=int(size))
            share = (
                f"{row['clients']['store']['pairs_per_s'] / rb['pairs_per_s']:.0%}" if row else ""
            )
            out.append(
                f"| {_kib(size)} | {rb['get_rps']:,.0f} | {rb['set_rps']:,.0f} | "
                f"{rb['pairs_per_s']:,.0f} | {share} |"
            )
    if "cluster" in results:
        out += _cluster_markdown(results)
    out.append("")
    return "\n".join(out)


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
        "client",
        fontsize=13,
    )
    if "store" in results:
        _throughput_panel(axes[0][0], results)
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


def _throughput_panel(ax: Any, results: dict[str, Any]) -> None:
    rows = results["store"]["by_concurrency"]
    tasks = [r["tasks"] for r in rows]
    for name in CLIENTS:
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
    top = max(max(r["clients"][n]["pairs_per_s"] for n in CLIENTS) for r in rows)
    if ceiling is not None:
        ax.axhline(ceiling, color="grey", ls="--", lw=1.5)
        ax.text(
            tasks[0],
            ceiling,
            f" redis-benchmark ceiling (C, 50 clients): {ceiling:,.0f}",
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
        f"Throughput vs concurrency ({_kib(results['settings']['default_payload'])} session)"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.86), fontsize=9)


def _latency_panel(ax: Any, results: dict[str, Any]) -> None:
    rows = results["store"]["by_concurrency"]
    tasks = [r["tasks"] for r in rows]
    for name in CLIENTS:
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
    rows = sorted(results["store"]["by_payload"], key=lambda r: r["payload"])
    xs = list(range(len(rows)))
    for name in CLIENTS:
        ax.plot(
            xs,
            [r["clients"][name]["pairs_per_s"] for r in rows],
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
    ax.set_ylim(bottom=0)
    ax.set_xlabel("session payload (msgpack bytes)")
    ax.set_ylabel("load + save pairs per second")
    ax.set_title(f"Throughput vs payload size ({results['settings']['headline_tasks']} tasks)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")


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
