"""Concurrent hybrid searches in one server process, the cores shared between them or not; one JSON line.

Issue 17, target 5 (thread discipline in the server). ``xlsearch serve`` gives a lone request every
core and splits the cores between requests that run at once (``indexer.threads.CoreShare``). This
bench runs the server's own ``IndexService`` over the index of ``bench_e2e.py`` (100,000 chunks,
the exact-shape mdeberta model as query encoder) in one process, with 1 and then ``--clients``
threads sending XQuAD questions as hybrid k=10 searches, alternating rounds of the two policies:

- ``shared``: the server's (each request gets ``cores // running`` threads, at least one);
- ``all cores each``: every request runs torch on every core whatever else runs (the server before).

In-process, so HTTP and the client's own CPU do not blur the comparison (``bench_e2e.py`` measures
those).

    python bench/bench_core_share.py                 # 4 clients, 3 rounds
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_api import xquad_texts
from bench_e2e import cached_index, require_model
from machine_facts import cpu_flags, cpu_name


class AllCoresEach:
    """The policy before: every request runs torch on every core."""

    def __init__(self, cores: int):
        self.cores = cores

    @contextlib.contextmanager
    def threads_for_request(self):
        import torch

        torch.set_num_threads(self.cores)
        yield self.cores


def run(service, questions: list[str], clients: int) -> dict:
    """Every question once, from ``clients`` threads; latency p50 (ms) and searches per second."""
    latencies, lock, todo = [], threading.Lock(), iter(questions)

    def client() -> None:
        while True:
            with lock:
                query = next(todo, None)
            if query is None:
                return
            start = time.perf_counter()
            service.search(query, 10, "hybrid", "auto", 0.5, None, None, None, 0)
            latencies.append((time.perf_counter() - start) * 1e3)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"p50_ms": statistics.median(latencies), "per_s": len(questions) / (time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/mdeberta-shape"),
                        help="exact-shape model directory (default /tmp/mdeberta-shape; see bench_e2e.py)")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks of bench_e2e.py's index (default 100000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent searches (default 4)")
    parser.add_argument("--queries", type=int, default=120, help="searches per round at --clients (default 120)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each policy, alternating (default 3)")
    args = parser.parse_args(argv)
    require_model(args.model)
    load_start = os.getloadavg()
    index, _ = cached_index(args.model, args.chunks, 8, "fp32")
    from xlsearch.api.http.service import IndexService

    service = IndexService(index, str(args.model), "cpu")
    policies = {"shared": service.cores, "all_cores_each": AllCoresEach(service.cores.cores)}
    _, questions = xquad_texts()
    run(service, questions[:20], args.clients)  # warm-up
    rounds: dict[str, list[dict]] = {name: [] for name in policies}
    offset = 20
    for _ in range(args.rounds):
        for name, policy in policies.items():
            service.cores = policy
            batch = questions[offset:offset + args.queries]
            rounds[name].append({"clients_1": run(service, batch[:args.queries // 3], 1),
                                 f"clients_{args.clients}": run(service, batch, args.clients)})
        offset += args.queries
    service.close()
    many = f"clients_{args.clients}"

    def summary(name: str) -> dict:
        return {key: {"p50_ms": [round(r[key]["p50_ms"], 1) for r in rounds[name]],
                      "per_s": [round(r[key]["per_s"], 1) for r in rounds[name]]} for key in ("clients_1", many)}

    print(json.dumps({
        "bench": "core_share", "chunks": args.chunks, "model": str(args.model), "mode": "hybrid", "k": 10,
        "cores": policies["shared"].cores,
        "shared": summary("shared"), "all_cores_each": summary("all_cores_each"),
        f"throughput_ratio_{many}": [round(s[many]["per_s"] / a[many]["per_s"], 3)
                                     for s, a in zip(rounds["shared"], rounds["all_cores_each"])],
        f"p50_ratio_{many}": [round(a[many]["p50_ms"] / s[many]["p50_ms"], 3)
                              for s, a in zip(rounds["shared"], rounds["all_cores_each"])],
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(), "cpu": cpu_name(), "cpu_flags": cpu_flags()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
