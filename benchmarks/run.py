"""Run every benchmark, print the table, write JSON, PNG plots and the README table.

python -m benchmarks.run            # the full run (make bench), under 10 minutes on 2 cores
python -m benchmarks.run --quick    # a smoke run: small N, one repeat
python -m benchmarks.run --soak 600 # the 10-minute soak alone (make soak)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import time
from pathlib import Path
from typing import Any

import psutil

from . import bench_cluster, bench_deferred, bench_interest, bench_worker, bench_ws
from .common import KINDS, RESULTS, ROOT, fmt, raise_nofile


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{psutil.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or not a.get("median") or not b.get("median"):
        return "n/a"
    return f"{a['median'] / b['median']:.2f}×"


def table(res: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    if "emit" in res:
        e = res["emit"]
        pc = e["per_call_us"]
        add("### 1. Emit cost in the worker (µs per call, median (min–max))\n")
        add("| call | µs per call | vs progress() |")
        add("|---|---|---|")
        for key, name in (
            ("progress", "`self.progress()` (celery-ws)"),
            ("update_state", "`update_state('PROGRESS')` (Redis backend)"),
            ("socketio_emit", "socketio `RedisManager(write_only).emit()`"),
            ("publish", "bare redis-py `PUBLISH`"),
        ):
            add(
                f"| {name} ({e['calls'][key]:,} calls) | {fmt(pc[key], digits=2)} | {_ratio(pc[key], pc['progress'])} |"
            )
        t = e["task"]
        add("")
        add(
            f"Task of {e['iterations']:,} iterations of {t['work_us_per_iteration']['median']:.1f} µs work: "
            f"{fmt(t['without_s'], ' s', 2)} without, {fmt(t['with_s'], ' s', 2)} with a `progress()` per iteration: "
            f"slowdown **{fmt(t['slowdown_pct'], ' %', 1)}**."
        )
        s = e["step_result"]
        add(
            f"One `step_result()` until stored in Redis (emit + `flush()`): {fmt(s['single_until_stored_us'], ' µs', 0)} vs "
            f"a bare pipelined write of the same event (3×XADD + HSET + 2×EXPIRE): {fmt(s['bare_pipelined_single_us'], ' µs', 0)}: "
            f"**{fmt(s['ratio_single'], '×', 2)}**. Caller cost of `step_result()` alone: {fmt(s['caller_cost_us'], ' µs', 1)}; "
            f"amortized over a burst until stored {fmt(s['amortized_until_stored_us'], ' µs', 1)} vs bare pipelined batch "
            f"{fmt(s['bare_pipelined_batch_us'], ' µs', 1)} ({fmt(s['ratio_amortized'], '×', 2)}).\n"
        )
    if "fanout" in res:
        f = res["fanout"]["fanout"]
        add("### 2. Fan-out: delivered messages/s (median (min–max)), loss, CPU (% of one core)\n")
        add("| N | mode | server | msgs/s | loss | server CPU | clients CPU | celery-ws ÷ this |")
        add("|---|---|---|---|---|---|---|---|")
        for n in sorted({int(k) for kind in f.values() for k in kind}):
            for mode in ("addressed", "broadcast"):
                for kind in KINDS:
                    entry = f.get(kind, {}).get(str(n), {}).get(mode)
                    if not entry:
                        continue
                    if "not_run" in entry:
                        add(f"| {n:,} | {mode} | {kind} | {entry['not_run']} | | | | n/a |")
                        continue
                    cws = f.get("celery-ws", {}).get(str(n), {}).get(mode, {}).get("msgs_per_s")
                    add(
                        f"| {n:,} | {mode} | {kind} | {fmt(entry['msgs_per_s'], '', 0)} | "
                        f"{entry['loss']['median']:.2%} | {entry['server_cpu']['median']:.0f}% | "
                        f"{entry['client_cpu']['median']:.0f}% | {_ratio(cws, entry['msgs_per_s']) if kind != 'celery-ws' else ''} |"
                    )
        add("")
        seed_events = sorted(
            {r["events"] for v in f.get("seed", {}).values() for r in v.get("addressed", {}).get("runs", [])}
        )
        cws_events = sorted(
            {
                r["events"]
                for v in f.get("celery-ws", {}).values()
                for r in v.get("addressed", {}).get("runs", [])
            }
        )
        if seed_events:
            add(
                f"Addressed runs send {', '.join(f'{e:,}' for e in cws_events)} events; the seed's send "
                f"{', '.join(f'{e:,}' for e in seed_events)} (it sends every addressed event to every connection, "
                "so each costs it N frames; the rate is delivered ÷ time, as for the others).\n"
            )
        lat = res["fanout"]["latency"]
        if lat:
            add("### 3. Latency, emit → receive, ms (median of runs (min–max))\n")
            add("| load | server | p50 | p99 | max | last client p50 | loss | server CPU | clients CPU |")
            add("|---|---|---|---|---|---|---|---|---|")
            for load in ("200ms_broadcast", "10ms_addressed"):
                for kind in KINDS:
                    e = lat.get(kind, {}).get(load)
                    if not e:
                        continue
                    secs = e["runs"][0].get("duration_s") if e.get("runs") else None
                    add(
                        f"| {load}{f' ({secs:g} s)' if secs else ''} | {kind} | {fmt(e['p50_ms'], '', 2)} | {fmt(e['p99_ms'], '', 2)} | "
                        f"{fmt(e['max_ms'], '', 1)} | {fmt(e['last_client_p50_ms'], '', 1)} | {e['loss']['median']:.2%} | "
                        f"{e['server_cpu']['median']:.0f}% | {e['client_cpu']['median']:.0f}% |"
                    )
            add("")
    if "confirm" in res:
        c = res["confirm"]
        add("### 4. Confirmation round trip, ms\n")
        add(
            "Two cadences, interleaved in each repeat: questions back to back (the server's rate "
            "limit raised so the client may answer that fast), and one per 60 ms (a client's default "
            "20 frames/s), after which every process on the path wakes from idle. The floor is "
            "measured at the same cadence.\n"
        )
        add("| cadence | measure | p50 | p99 | max |")
        add("|---|---|---|---|---|")
        for cadence, name in (("", "back to back"), ("paced_", "one per 60 ms")):
            if f"{cadence}cws_p50" not in c:
                continue
            add(
                f"| {name} | celery-ws: client sends `confirm` → `confirm_step()` returns | "
                f"{fmt(c[f'{cadence}cws_p50'], '', 2)} | {fmt(c[f'{cadence}cws_p99'], '', 2)} | "
                f"{fmt(c[f'{cadence}cws_max'], '', 2)} |"
            )
            add(
                f"| {name} | celery-ws: whole question (ask → shown → answered → returns) | "
                f"{fmt(c[f'{cadence}cws_rt_p50'], '', 2)} | | |"
            )
            add(
                f"| {name} | Redis floor: PUBLISH → other process LPUSH → BLPOP wakes | "
                f"{fmt(c[f'{cadence}floor_p50'], '', 2)} | {fmt(c[f'{cadence}floor_p99'], '', 2)} | |"
            )
            add(
                f"| {name} | Redis floor, LPUSH → BLPOP wakes only | "
                f"{fmt(c[f'{cadence}floor_oneway_p50'], '', 2)} | | |"
            )
        ratios = [
            f"{name} **{fmt(c[f'{cadence}ratio_p50_vs_floor'], '×', 2)}**"
            for cadence, name in (("", "back to back"), ("paced_", "one per 60 ms"))
            if f"{cadence}ratio_p50_vs_floor" in c
        ]
        add(
            f"\np50 ratio celery-ws ÷ floor: {'; '.join(ratios)} ({c['n']} confirmations per run back to "
            f"back, {c['paced_n']} paced).\n"
        )
    if "deferred" in res:
        d = res["deferred"]
        add("### 4b. Deferred questions (`self.ask`) vs blocking (`confirm_step`)\n")
        add(
            f"A `celery worker -P threads -c {d['concurrency']}` and `celery-ws serve --app`; "
            f"{d['open_questions']} questions sent at once and left open for 3 s.\n"
        )
        add(
            "| form | questions open | tasks running (markers / `inspect().active()`) | slots per open question |"
        )
        add("|---|---|---|---|")
        for form in ("blocking", "deferred"):
            e = d["slots"][form]
            per = e["slots_per_open_question"]
            add(
                f"| {form} | {e['questions_open']} of {e['sent']} | {e['tasks_running_markers']} / "
                f"{e['tasks_active_inspect']} | {'n/a' if per is None else f'{per:.1f}'} |"
            )
        add("")
        add(f"Latency, ms ({d['samples']} samples each, one run, interleaved):\n")
        add("| measure | p50 | p99 | max |")
        add("|---|---|---|---|")
        for key, name in (
            (
                "deferred_answer_to_continuation_started_ms",
                "deferred: client `confirm` → continuation's `task_started` at the client",
            ),
            (
                "blocking_answer_to_wakeup_ms",
                "blocking: client `confirm` → `confirm_step()` returns in the task",
            ),
            (
                "broker_apply_to_started_ms",
                "floor: ordinary task `apply_async` → its `task_started` at the client",
            ),
        ):
            e = d[key]
            add(f"| {name} | {e['p50']:.2f} | {e['p99']:.2f} | {e['max']:.2f} |")
        add("")
    if "memory" in res:
        add("### 5. Memory: server RSS growth per idle subscribed connection, KiB\n")
        mem_sizes = sorted({int(n) for v in res["memory"].values() for n in v})
        add(
            f"Each repeat is one server process: RSS read after the first {mem_sizes[0]:,} connections and again "
            f"after {mem_sizes[-1]:,}. Compression is on by default: permessage-deflate without context takeover "
            "(each message compressed on its own, no zlib state kept per idle connection); `celery-ws-nodeflate` is "
            f"the same server with `compression=False`, measured at N={mem_sizes[0]:,} only.\n"
        )
        add("| server | N | KiB/conn | RSS MiB |")
        add("|---|---|---|---|")
        for label, sizes in res["memory"].items():
            for n, e in sizes.items():
                add(
                    f"| {label} | {int(n):,} | {fmt(e['per_conn_kib'], '', 1)} | {fmt(e['rss_mib'], '', 0)} |"
                )
        if "fanout" in res:
            add("\nOpen mode, from the fan-out stacks (one reading each):\n")
            add(
                "| server | "
                + " | ".join(
                    f"N={n}" for n in sorted({int(n) for v in res["fanout"]["open_rss"].values() for n in v})
                )
                + " |"
            )
            sizes = sorted({int(n) for v in res["fanout"]["open_rss"].values() for n in v})
            add("|---|" + "---|" * len(sizes))
            for kind, v in res["fanout"]["open_rss"].items():
                add(
                    f"| {kind} | "
                    + " | ".join(f"{v[str(n)]['per_conn_kib']:.1f}" if str(n) in v else "" for n in sizes)
                    + " |"
                )
        add("")
    if "idle" in res:
        add(idle_table(res["idle"]))
    if "soak" in res:
        s = res["soak"]
        if "stalled_at_once" not in s:  # a result from before the soak had resumes and stalled clients
            add(
                f"Soak ({s['duration_s']:.0f} s, {s['connections']} token-mode connections, 5 % churned and RSS read every {s.get('every_s', 5):g} s, "
                f"a task emitting progress every 2 ms and a step result every 40 ms): RSS {s['rss_start_mib']:.1f} → "
                f"{s['rss_end_mib']:.1f} MiB (max {s['rss_max_mib']:.1f}), second-half slope "
                f"{s['slope_second_half_mib_per_min']:+.2f} MiB/min.\n"
            )
        else:
            add(soak_table(s))
    if "scaleout" in res:
        add("### 6. Scale-out: two celery-ws replicas on one Redis, half the clients each\n")
        add("| N | mode | msgs/s, 2 replicas | msgs/s, 1 server | server CPU (both) | clients CPU |")
        add("|---|---|---|---|---|---|")
        for n, e in res["scaleout"].items():
            for mode in ("addressed", "broadcast"):
                one = res.get("fanout", {}).get("fanout", {}).get("celery-ws", {}).get(n, {}).get(mode, {})
                add(
                    f"| {int(n):,} | {mode} | {fmt(e[mode]['msgs_per_s'], '', 0)} | {fmt(one.get('msgs_per_s'), '', 0)} | "
                    f"{e[mode]['server_cpu']['median']:.0f}% | {e[mode]['client_cpu']['median']:.0f}% |"
                )
        add("")
    if "interest" in res:
        i = res["interest"]
        add("### 7. Delivery by interest: cost per delivered event as replicas are added\n")
        add(
            f"{i['events']:,} events addressed to {i['users']} token-mode users, all connected to the first "
            f"replica; the others hold no connection. `baseline` is commit {i['baseline_commit']} (every replica "
            "read every event from one shared stream), run from a git worktree in the same run. CPU seconds of "
            "Redis (`INFO cpu`) and of all replicas over the run, per delivered event, µs, median (min–max).\n"
        )
        add("| code | replicas | Redis CPU / event | replicas' CPU / event | delivered |")
        add("|---|---|---|---|---|")
        for code in ("celery-ws", "baseline"):
            for replicas, e in i[code].items():
                add(
                    f"| {code} | {replicas} | {fmt(e['redis_cpu_us_per_event'], '', 1)} | "
                    f"{fmt(e['servers_cpu_us_per_event'], '', 1)} | {e['delivered']['median']:.3f} |"
                )
        add("")
    if "cluster" in res:
        c = res["cluster"]
        add("### 8. Redis topologies: events stored per second, Redis CPU per event and per question\n")
        add(
            f"{c['publishers']} publisher processes each store {c['events_per_publisher']:,} task events "
            f"(progress and step results alternately, {c['owners']:,} owners: each event goes to its owner's "
            "and its task's history, the task's state and two pub/sub channels) in batches of 200, then each "
            f"asks {c['questions_per_publisher']} questions left to expire at once. Redis CPU (`INFO cpu`, "
            "summed over the masters), and the busiest master's share of it; median (min–max). `baseline` is "
            f"commit {c['baseline_commit']} (one global stream, before delivery by interest and homes) on the "
            "standalone Redis, run from a git worktree in the same run. This machine's cores are shared by "
            "the masters and the publishers.\n"
        )
        add(
            "| topology | events/s stored | Redis CPU / event, µs | busiest master's share | Redis CPU / question, µs |"
        )
        add("|---|---|---|---|---|")
        for label in ("baseline", "standalone", "cluster-1", "cluster-3"):
            if label in c:
                e = c[label]
                add(
                    f"| {label} | {fmt(e['events_per_s'], '', 0)} | {fmt(e['redis_cpu_us_per_event'], '', 1)} | "
                    f"{fmt(e['busiest_master_share'], '', 2)} | {fmt(e['redis_cpu_us_per_question'], '', 0)} |"
                )
        add("")
    return "\n".join(lines)


def idle_table(idle: dict[str, Any]) -> str:
    """Section 5b: idle connections at scale, one server process."""
    small, big = idle["sizes"]
    lines = [
        f"### 5b. Idle connections at scale: {big:,} on one server process\n",
        f"Token mode, one server process; each repeat is one server that connects {small:,} idle "
        f"subscribed connections, then {big:,} (client processes share them; `{idle['user']}`, the client "
        f"measured, has one of its own, as a person's browser would). KiB/conn: server RSS "
        f"growth ÷ connections. Latency: one event every {1000 * idle['interval_s']:g} ms for "
        f"{idle['duration_s']:g} s addressed to one subscribed client "
        f"(`{idle['user']}`), emit call in the worker → receive, while the server holds {small:,}, "
        f"then {big:,}; median (min–max) of repeats. The server pings every connection once per "
        f"`ping_interval` (20 s by default), so a 20-s window holds one round of pings.\n",
        f"| server | KiB/conn at {small:,} | KiB/conn at {big:,} | RSS MiB at {big:,} | connect s | "
        f"p50 ms at {small:,} | p99 ms at {small:,} | p50 ms at {big:,} | p99 ms at {big:,} | "
        f"p99 {big:,} ÷ {small:,} | loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in idle["results"].items():
        lines.append(
            f"| {label} | {fmt(e['kib_small'], '', 1)} | {fmt(e['kib_big'], '', 1)} | "
            f"{fmt(e['rss_big_mib'], '', 0)} | {fmt(e['connect_s'], '', 0)} | {fmt(e['p50_ms_small'], '', 2)} | "
            f"{fmt(e['p99_ms_small'], '', 2)} | {fmt(e['p50_ms_big'], '', 2)} | {fmt(e['p99_ms_big'], '', 2)} | "
            f"**{fmt(e['p99_ratio'], '×', 2)}** | {max(e['loss_small']['max'] or 0, e['loss_big']['max'] or 0):.2%} |"
        )
    lines.append("")
    return "\n".join(lines)


def soak_table(s: dict[str, Any]) -> str:
    """The soak's paragraph and its figures."""
    lines: list[str] = []
    add = lines.append
    kib = s["write_buffer_limit"] / 1024
    add(
        f"Soak ({s['duration_s']:.0f} s, {s['connections']} token-mode connections): every {s['every_s']:g} s 5 % of "
        f"them close and reconnect, resuming from the last event id they saw (`last_event_id`), and RSS and `/status` "
        f"are read; tokens live {s['token_ttl_s']:g} s, so the server closes connections at expiry (4401) and they "
        f"reconnect with a fresh token, resuming; a task emits progress every 2 ms and a step result every 40 ms; "
        f"{s['stalled_at_once']} connections at a time authenticate and never read (a new batch every "
        f"{s['stall_every_s']:g} s), each sent a {s['stall_event_bytes'] / 1024:g} KiB event every "
        f"{1000 * s['stall_interval_s']:g} ms, against a `write_buffer_limit` of {kib:g} KiB. At the end the churn and "
        f"the batches stop, the last batch is still sent to, and the server's active connections must come back to "
        f"what the clients hold.\n"
    )
    add("| figure | value |")
    add("|---|---|")
    after = f"; {s['rss_final_mib']:.1f} MiB after the end" if s.get("rss_final_mib") is not None else ""
    add(
        f"| RSS start → end of the churn (max) | {s['rss_start_mib']:.1f} → {s['rss_end_mib']:.1f} MiB "
        f"({s['rss_max_mib']:.1f}){after} |"
    )
    add(f"| RSS slope, second half | {s['slope_second_half_mib_per_min']:+.2f} MiB/min |")
    add(
        f"| connections churned / resumes (not recovered) | {s['churned']:,} / {s['resumes']:,} "
        f"({s['resumes_not_recovered']:,}) |"
    )
    closes = ", ".join(f"{code}: {count:,}" for code, count in sorted(s["server_closes"].items())) or "none"
    add(
        f"| closed by the server, seen by the clients (code: count) / reconnects (failed) | {closes} / "
        f"{s['reconnects']:,} ({s['reconnects_failed']:,}) |"
    )
    add(
        f"| step results emitted / MiB sent to stalled users | {s['step_results']:,} / {s['stall_mib_sent']:,.0f} |"
    )
    add(
        f"| stalled connections opened (failed to open) | {s['stalled_opened']:,} ({s['stalled_open_failed']:,}) |"
    )
    if s.get("stalled_event_before_authenticated"):
        add(
            f"| … sent a live event before their `authenticated` frame | {s['stalled_event_before_authenticated']:,} |"
        )
    add(
        f"| … ended by the server / still open when replaced | {s['stalled_ended_by_server']:,} / "
        f"{s['stalled_closed_by_client']:,} |"
    )
    add(f"| … dropped as slow (`slow_clients_dropped`) | {s['slow_clients_dropped']} |")
    drops = s["stalled_drop_after_s"]
    if s["stalled_drop_after_s_max"] is not None:
        add(
            f"| batches dropped whole as slow, s after opening: min / median / max | "
            f"{s['stalled_drop_after_s_min']:.1f} / {s['stalled_drop_after_s_median']:.1f} / "
            f"{s['stalled_drop_after_s_max']:.1f} ({len(drops) - s['stalled_batches_not_all_dropped']} of "
            f"{len(drops)} batches; token expiry bounds any connection at {s['limits_s']['bound_s']:g} s) |"
        )
    add(
        f"| active connections: max / at the end / held by the clients | {s['active_max']} / {s['active_final']} / "
        f"{s['clients_held_final']} |"
    )
    add(
        "| active connections back to what the clients hold, after the churn stopped | "
        + (f"{s['settle_s']:.1f} s" if s["settle_s"] is not None else "**no**")
        + " |"
    )
    if s.get("errors"):
        add(f"| errors | {'; '.join(s['errors'])} |")
    add("")
    return "\n".join(lines)


def plots(res: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "fanout" in res:
        f = res["fanout"]["fanout"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, mode in zip(axes, ("addressed", "broadcast"), strict=True):
            for kind in KINDS:
                if kind not in f:
                    continue
                ns = sorted(int(n) for n in f[kind] if "msgs_per_s" in f[kind][n].get(mode, {}))
                med = [f[kind][str(n)][mode]["msgs_per_s"]["median"] for n in ns]
                lo = [m - f[kind][str(n)][mode]["msgs_per_s"]["min"] for m, n in zip(med, ns, strict=True)]
                hi = [f[kind][str(n)][mode]["msgs_per_s"]["max"] - m for m, n in zip(med, ns, strict=True)]
                ax.errorbar(ns, med, yerr=[lo, hi], marker="o", capsize=3, label=kind)
            ax.set_xscale("log")
            ax.set_xlabel("connected clients (N)")
            ax.set_ylabel("delivered msgs/s")
            ax.set_title(f"fan-out, {mode} events")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "fanout.png", dpi=110)
        plt.close(fig)
        written.append("fanout.png")
        lat = res["fanout"]["latency"]
        if lat:
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            for ax, load in zip(axes, ("200ms_broadcast", "10ms_addressed"), strict=True):
                kinds = [k for k in KINDS if load in lat.get(k, {})]
                x = range(len(kinds))
                for offset, key in ((-0.2, "p50_ms"), (0.2, "p99_ms")):
                    ax.bar(
                        [i + offset for i in x],
                        [lat[k][load][key]["median"] for k in kinds],
                        width=0.4,
                        label=key.replace("_ms", ""),
                    )
                ax.set_xticks(list(x), kinds)
                ax.set_yscale("log")
                ax.set_ylabel("ms (log)")
                ax.set_title(f"latency, {load}")
                ax.legend()
            fig.tight_layout()
            fig.savefig(out / "latency.png", dpi=110)
            plt.close(fig)
            written.append("latency.png")
    if "emit" in res:
        pc = res["emit"]["per_call_us"]
        keys = ["progress", "publish", "socketio_emit", "update_state"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(keys, [pc[k]["median"] for k in keys])
        ax.set_yscale("log")
        ax.set_ylabel("µs per call (log)")
        ax.set_title("emit cost in the worker")
        fig.tight_layout()
        fig.savefig(out / "emit.png", dpi=110)
        plt.close(fig)
        written.append("emit.png")
    if "soak" in res:
        s = res["soak"]["samples"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([x for x, _ in s], [y for _, y in s], marker=".", label="RSS")
        ax.set_xlabel("s")
        ax.set_ylabel("server RSS MiB")
        ax.set_title("soak")
        active = [
            (t, a)
            for t, a in res["soak"].get("active_samples", [])
            + [(t, a) for t, a, _ in res["soak"].get("end_trace", [])]
            if a is not None
        ]
        if active:
            ax2 = ax.twinx()
            ax2.plot(
                [t for t, _ in active],
                [a for _, a in active],
                color="tab:orange",
                marker=".",
                linewidth=0.8,
                label="active connections",
            )
            ax2.set_ylabel("active connections")
            lo, hi = min(a for _, a in active), max(a for _, a in active)
            ax2.set_ylim(lo - max(5, (hi - lo)), hi + max(5, (hi - lo)))
            handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
            ax.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "soak.png", dpi=110)
        plt.close(fig)
        written.append("soak.png")
    return written


def _into_latest(partial: dict[str, Any]) -> dict[str, Any]:
    """The latest full results with the sections of ``partial`` in place of
    theirs, each noted with the date it was re-run (same machine assumed)."""
    latest: dict[str, Any] = json.loads((RESULTS / "latest.json").read_text())
    for section, seconds in partial["timings_s"].items():
        latest[section] = partial[section]
        latest.setdefault("rerun", {})[section] = partial["date"]
        latest["timings_s"][section] = seconds
    latest["total_s"] = sum(latest["timings_s"].values())
    return latest


def update_readme(text: str, marker: str = "results") -> None:
    """Put ``text`` between the README's ``<!-- {marker}:start -->`` and ``:end`` lines."""
    readme = ROOT / "benchmarks" / "README.md"
    if not readme.exists():
        return
    content = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start in content and end in content:
        content = re.sub(
            re.escape(start) + ".*?" + re.escape(end),
            lambda _: f"{start}\n{text}\n{end}",
            content,
            flags=re.S,
        )
        readme.write_text(content)


def run_idle(url: str, quick: bool, repeats: int, baseline: str, log: Any) -> dict[str, Any]:
    sizes = (200, 1000) if quick else bench_ws.IDLE_SIZES
    duration = 5.0 if quick else bench_ws.IDLE_DURATION
    if not baseline:
        return bench_ws.run_idle(url, sizes, repeats, log, duration=duration)
    with bench_interest.baseline_tree(baseline) as tree:
        result = bench_ws.run_idle(
            url,
            sizes,
            repeats,
            log,
            duration=duration,
            trees={"celery-ws": ROOT, f"baseline {baseline}": tree},
        )
    result["baseline_commit"] = baseline
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small N, one repeat: a smoke run")
    parser.add_argument("--soak", type=float, default=0, help="run only the soak, for this many seconds")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated: emit,confirm,deferred,fanout,memory,idle,scaleout,interest,cluster,soak,profile "
        "(all by default)",
    )
    parser.add_argument(
        "--idle-baseline",
        default="",
        help="also run the idle section's servers from this commit (a temporary worktree), interleaved",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--into-latest",
        action="store_true",
        help="with --only: put those sections into the latest full results (the others keep their run)",
    )
    opts = parser.parse_args()
    raise_nofile()
    from celery_ws.testing.redis_server import RedisServer

    quick = opts.quick
    repeats = opts.repeats or (1 if quick else 3)
    sizes = [50, 200] if quick else [100, 1000, 5000]
    lat_n = 200 if quick else 1000
    only = set(filter(None, opts.only.split(","))) or {
        "emit",
        "confirm",
        "deferred",
        "fanout",
        "memory",
        "idle",
        "scaleout",
        "interest",
        "cluster",
        "soak",
        "profile",
    }
    if opts.soak:
        only = {"soak"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    res: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": quick,
        "repeats": repeats,
    }
    with RedisServer() as server:
        url = server.url

        def section(name: str, fn: Any) -> None:
            if name in only:
                t0 = time.monotonic()
                log(f"== {name}")
                res[name] = fn()
                timings[name] = time.monotonic() - t0

        section("emit", lambda: bench_worker.run_emit(url, repeats, 20_000 if quick else 100_000, log))
        section("confirm", lambda: bench_worker.run_confirm(url, repeats, 60 if quick else 300, log))
        section("deferred", lambda: bench_deferred.run_deferred(url, 10, 20 if quick else 40, log))
        # addressed: 5,000 events (medians were stable at 20,000 and 10,000, whose runs took 1-5 s each);
        # broadcasts: 20,000 deliveries (at N=5,000 that is already the floor of 3-4 events)
        deliveries = {"addressed": 3_000 if quick else 5_000, "broadcast": 5_000 if quick else 20_000}
        section(
            "fanout",
            lambda: bench_ws.run_fanout(
                url, list(KINDS), sizes, repeats, deliveries, lat_n, 1.0 if quick else 2.0, log
            ),
        )
        # celery-ws-nodeflate (a reference, not a peer) only at the smaller size: a 5,000 stack costs ~20 s a repeat
        section(
            "memory",
            lambda: bench_ws.run_memory(
                url,
                [
                    ("celery-ws", True, sizes[1:]),
                    ("celery-ws-nodeflate", True, sizes[1:2]),
                    ("relay", False, sizes[1:]),
                ],
                repeats,
                log,
            ),
        )
        # 15,000 idle connections on one server: a stack of that size per repeat, ~80 s each.
        # make bench runs one, which keeps it under 10 minutes; make bench-idle (--only idle)
        # runs the section alone with every repeat (and a baseline, with --idle-baseline)
        idle_repeats = repeats if only == {"idle"} else 1
        section("idle", lambda: run_idle(url, quick, idle_repeats, opts.idle_baseline, log))
        section("scaleout", lambda: bench_ws.run_scaleout(url, sizes[1:], repeats, deliveries, log))
        section("interest", lambda: bench_interest.run_interest(url, repeats, 2_000 if quick else 5_000, log))
        section("cluster", lambda: bench_cluster.run_cluster(url, repeats, 5_000 if quick else 20_000, log))
        # make bench: a 20-s soak (RSS every 2.5 s); make soak: 10 minutes (RSS every 5 s)
        section(
            "soak",
            lambda: bench_ws.run_soak(
                url,
                200 if quick else 500,
                opts.soak or (10 if quick else 20),
                log,
                every=5.0 if opts.soak else 2.5,
            ),
        )
        if "profile" in only:
            t0 = time.monotonic()
            log("== profile (celery-ws server under pyinstrument, N=1000 fan-out)")
            profile = RESULTS / "profile_server.txt"
            stack = bench_ws.Stack("celery-ws", url, lat_n, token=True, profile=str(profile))
            pub = bench_ws.Pub("celery-ws", url)
            try:  # capped: one run of each mode, 5,000 deliveries each
                for mode in ("addressed", "broadcast"):
                    bench_ws.fanout_once(stack, pub, mode, min(5_000, deliveries[mode]), drain=4.0)
            finally:
                pub.close()
                stack.close()
            res["profile"] = str(profile.relative_to(ROOT))
            timings["profile"] = time.monotonic() - t0
    res["timings_s"] = timings
    res["total_s"] = time.monotonic() - started
    # a smoke run, the soak alone or some sections only never replace the full results;
    # the idle section alone (make bench-idle) has results of its own
    name = (
        "latest_quick"
        if quick
        else "soak"
        if opts.soak
        else "idle"
        if only == {"idle"}
        else "partial"
        if opts.only
        else "latest"
    )
    if opts.into_latest and name == "partial":
        res, name = _into_latest(res), "latest"
        timings = res["timings_s"]
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
    out_dir = RESULTS / ("quick" if quick else "partial" if name == "partial" else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = plots(res, out_dir)
    rerun = "".join(f"; {section} re-run {date}" for section, date in res.get("rerun", {}).items())
    text = (
        f"Run {res['date']} on {res['machine']}{rerun}; {repeats} repeats per figure; total "
        f"{res['total_s']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ").\n\n"
        + table(res)
    )
    (RESULTS / f"{name}.md").write_text(text)
    print("\n" + text)
    print(f"\nwrote {RESULTS / (name + '.json')}, {RESULTS / (name + '.md')}, plots {written}")
    if name == "latest":
        update_readme(text)
    elif name == "idle":
        update_readme(text, "idle")


if __name__ == "__main__":
    main()
