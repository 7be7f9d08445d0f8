"""Per-call overhead of ``ctx.ai.generate_text`` (pricing and ledger write included) against a
bare ``openai`` client call, both on the same local fake LLM server.

    .venv/bin/python benchmarks/ai_overhead.py [--calls 500] [--postgres-url URL]

The fake server runs in a child process (so its threads do not compete with the measured code
for the GIL). The bare call is ``client.chat.completions.create(...)`` with the SDK's retries
off. The
helper call adds model-key parsing, the budget check (a ledger read, as a ``max_cost`` is
set), the retry wrapper, ``genai-prices`` pricing, the prompt policy and one ledger row:
in memory, in a SQLite file (migrated, WAL), and optionally in PostgreSQL. Calls alternate
between the variants in rounds so that drift of the machine hits them alike; the figures are
medians per call.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from typing import Any

from airflow_workflow_engine.ai import InMemoryLedger, Ledger, ProviderSettings, make_ai_factory
from airflow_workflow_engine.definitions.context import StageContext
from airflow_workflow_engine.testing.fake_llm import FakeLLMServer

MODEL_ID = "gpt-5-mini"
PROMPT = "Summarize: the nightly pipeline loaded 1,204 files and failed on none."


class _Config:
    model = f"openai:{MODEL_ID}"
    max_cost = 1_000.0  # a budget, so every call also reads the ledger first


def _serve(conn: Any) -> None:
    with FakeLLMServer() as fake:
        conn.send(fake.openai_base_url)
        conn.recv()  # until the parent is done


@contextmanager
def _fake_server() -> Iterator[str]:
    """The fake LLM server in a child process; yields its OpenAI base URL."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,))
    process.start()
    try:
        yield str(parent.recv())
    finally:
        parent.send("stop")
        process.join(timeout=10)


def _ctx(ledger: Ledger, base_url: str, run: str) -> StageContext[Any, Any]:
    factory = make_ai_factory(
        ledger, providers={"openai": ProviderSettings(api_key="bench-key", base_url=base_url)}
    )
    return StageContext(
        workflow_run_id=run,
        workflow_id="bench",
        stage_id="summarize",
        input=None,
        config=_Config(),
        workflow_context={},
        now=lambda: datetime.now(timezone.utc),
        ai_factory=factory,
    )


def _timed(fn: Callable[[], object], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500, help="calls per variant")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--postgres-url", help="also measure a SqlLedger on this database")
    args = parser.parse_args()

    import openai

    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.persistence.sql import migrate

    with _fake_server() as base_url, tempfile.TemporaryDirectory() as tmp:
        client = openai.OpenAI(base_url=base_url, api_key="bench-key", max_retries=0)
        messages: Any = [{"role": "user", "content": PROMPT}]

        def bare() -> object:
            return client.chat.completions.create(model=MODEL_ID, messages=messages)

        url = f"sqlite:///{tmp}/ledger.db"
        migrate(url)
        ledgers: dict[str, Ledger] = {"memory": InMemoryLedger(), "sqlite": SqlLedger(url)}
        if args.postgres_url:
            migrate(args.postgres_url)
            ledgers["postgres"] = SqlLedger(args.postgres_url)
        variants: dict[str, Callable[[], object]] = {"bare openai": bare}
        for name, ledger in ledgers.items():
            ai = _ctx(ledger, base_url, f"bench-{name}").ai
            variants[f"ctx.ai + {name} ledger"] = partial(
                ai.generate_text, f"openai:{MODEL_ID}", PROMPT
            )

        for fn in variants.values():  # warm-up: imports, clients, price lookups, pools
            _timed(fn, 20)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        per_round = max(args.calls // args.rounds, 1)
        for _ in range(args.rounds):
            for name, fn in variants.items():
                samples[name] += _timed(fn, per_round)

    base = statistics.median(samples["bare openai"])
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"openai {openai.__version__}; {per_round * args.rounds} calls per variant, medians"
    )
    print(f"{'variant':<28} {'ms/call':>8} {'overhead ms':>12} {'ratio':>6}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:<28} {median * 1000:>8.3f} {(median - base) * 1000:>12.3f} "
            f"{median / base:>6.2f}"
        )
    for ledger in ledgers.values():
        if isinstance(ledger, SqlLedger):
            ledger.close()


if __name__ == "__main__":
    main()
