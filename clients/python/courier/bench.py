"""A small bench of the Python client, to show it is not the bottleneck.

    python -m courier.bench --addr HOST:PORT [--duration 5] [--size 128]
                            [--batch 100] [--pipeline 16] [--json]

Two measurements against a running broker (start one with ``broker``):

- *batched*: pipelined PUBLISH_BATCH of ``--batch`` messages of ``--size``
  bytes, ``--pipeline`` batches in flight, for ``--duration`` seconds:
  acknowledged messages per second;
- *single*: one PUBLISH at a time, each waiting for its acknowledgement:
  publishes per second and the latency p50 / p99.

The topic has no subscriber, so the broker acknowledges and drops each
message: this is the Rust bench's ``bench send`` default (``--subscribers
0``), which the README compares it with.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List

from .client import Client, Completion


def percentile(sorted_values: List[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


def batched(client: Client, topic: str, duration: float, size: int, batch: int, depth: int) -> Dict[str, float]:
    payloads = [os.urandom(size) for _ in range(batch)]
    in_flight: List[Completion] = []
    sent = acked = 0
    start = time.perf_counter()
    end = start + duration
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        while len(in_flight) < depth:
            in_flight.append(client.publish_batch_nowait(topic, payloads))
            sent += batch
        client.flush()
        oldest = in_flight.pop(0)
        acked += oldest.result().count
    for c in in_flight:
        acked += c.result().count
    elapsed = time.perf_counter() - start
    return {"messages": acked, "seconds": elapsed, "msgs_per_s": acked / elapsed,
            "mb_per_s": acked * size / elapsed / 1e6}


def single(client: Client, topic: str, duration: float, size: int) -> Dict[str, float]:
    payload = os.urandom(size)
    latencies: List[float] = []
    start = time.perf_counter()
    end = start + duration
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        client.publish(topic, payload)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "publishes": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_us": percentile(latencies, 0.50) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
        "max_us": (latencies[-1] if latencies else 0.0) * 1e6,
    }


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m courier.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", default="localhost:5555", help="broker HOST:PORT")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--size", type=int, default=128, help="payload bytes")
    parser.add_argument("--batch", type=int, default=100, help="messages per batch")
    parser.add_argument("--pipeline", type=int, default=16, help="batches in flight")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.size < 0 or args.batch < 1 or args.pipeline < 1:
        parser.error("duration > 0, size >= 0, batch >= 1 and pipeline >= 1")

    topic = f"pybench.{os.getpid()}"
    with Client(args.addr, client_name="courier.bench") as client:
        client.register_publisher()
        client.create_topic(topic)
        try:
            b = batched(client, topic, args.duration, args.size, args.batch, args.pipeline)
            s = single(client, topic, args.duration, args.size)
        finally:
            client.delete_topic(topic)
    if args.json:
        print(json.dumps({"batched": b, "single": s}))
    else:
        print(f"batched: {b['msgs_per_s']:,.0f} msgs/s ({b['mb_per_s']:.1f} MB/s), "
              f"{args.size} B x {args.batch} per batch, {args.pipeline} batches in flight")
        print(f"single:  {s['per_s']:,.0f} publishes/s, ack latency p50 {s['p50_us']:.1f} us, "
              f"p99 {s['p99_us']:.1f} us, max {s['max_us']:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
