"""1,000 suspended batch stages in one triggerer: our ``SuspendedStageTrigger`` against the
official openai provider's ``OpenAIBatchTrigger``, on the fake LLM server.

    .venv/bin/python benchmarks/triggerer.py [--triggers 1000] [--poll-interval 30]
        [--kinds ours,theirs]

Needs the ``bench`` extra (``apache-airflow-providers-openai``):
``.venv/bin/uv pip install -e '.[dev,bench]'``.

What runs where:

* This process starts the fake LLM server (``airflow_workflow_engine.testing.fake_llm``) with
  batches that never finish on their own, creates the engine's tables in a SQLite file and
  makes the suspended stages: for ours, ``--triggers`` one-stage workflow runs whose
  ``define_ai_batch_stage`` submits an OpenAI batch through the real ``openai`` SDK and
  suspends (``run.create``, ``run.claimPending``, ``job.execute`` through the kernel the
  triggerer uses, as the deferrable operator does); for theirs, as many batches submitted with
  the ``openai`` SDK directly (what ``OpenAIBatchOperator`` does before deferring). Both use one
  Airflow connection, ``openai_default`` (type ``openai``, host = the fake server's base URL).
* Each kind then runs in a fresh child process: Airflow's own ``TriggerRunner`` (its ``arun``
  event loop, ``create_triggers``, ``run_trigger``, cleanup and its block watchdog) with the
  supervisor side replaced by an in-process stub that hands it ``RunTrigger`` workloads. Each
  workload carries the trigger's ``serialize()`` output encrypted with Fernet, exactly as the
  ``trigger`` table stores it, so the runner deserializes and builds every trigger as the real
  triggerer does. The workloads are handed over spread across one poll interval, as tasks
  defer at different times. A real ``airflow triggerer`` would also need 1,000 deferred task
  instances in a metadata database and their DAG runs; the event loop, the triggers and the
  HTTP/SQL they do are the same here, without the supervisor's database round trips.
* Once every trigger has polled its batch at least once (seen by the fake server), the child
  reports its RSS; half a poll interval later this process flips every batch to
  ``completed`` at a known instant (``time.monotonic()``, one clock for all processes on
  Linux). The child timestamps each event as ``run_trigger`` queues it.

Figures per kind:

* RSS per trigger: (RSS with all triggers polling - RSS before the first trigger) / N. The
  baseline is taken after the modules and clients the triggers use are loaded (for ours: the
  kernel of ``[workflow_engine]``, SQLAlchemy and the openai SDK; for theirs: the hook's
  client), so one-off imports are not counted per trigger.
* batch done -> stage resumed, p50/p99: from the flip to the trigger's event (for ours the
  kernel has recorded the stage completed with the batch's output by then; for theirs the
  event only says the batch is done: the worker downloads the results later). It includes
  waiting for the next poll, so it is about half a poll interval; "poll -> event" is the part
  after the first status request that saw the batch completed (stamped by this process as the
  fake server logs it), i.e. the trigger's own cost.
* event-loop lateness: a watchdog coroutine in the triggerer's loop sleeps 10 ms over and
  over and records how late it wakes; max and p99 over the whole run (target: never > 50 ms).

Progress goes to stderr; the figures are printed last, as a markdown table (log lines that
Airflow's logging sends to stdout may come before them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder
from airflow_workflow_engine.ai import BatchItem, BatchRequest, define_ai_batch_stage
from airflow_workflow_engine.ai.prices import register_model
from airflow_workflow_engine.definitions.context import StageContext

MODEL = "openai:bench-batch"
STAGE_ID = "answer"
WORKFLOW_REF = "triggerer:WORKFLOW"  # this file, importable as "triggerer" (PYTHONPATH)
OURS = "airflow_workflow_engine.triggers.suspended.SuspendedStageTrigger"
THEIRS = "airflow.providers.openai.triggers.openai.OpenAIBatchTrigger"
WATCHDOG_SLEEP = 0.010
register_model(MODEL, input_per_mtok=1, output_per_mtok=4, batch_discount=0.5)


# -- the workflow of the suspended stages (imported by the triggerer through WORKFLOW_REF) --


class Question(BaseModel):
    text: str = "what is 1+1?"


class Answer(BaseModel):
    text: str


def _requests(ctx: StageContext[Question, Any]) -> list[BatchRequest]:
    return [BatchRequest(id="q", prompt=ctx.input.text, max_tokens=20)]


def _collect(items: list[BatchItem], ctx: StageContext[Question, Any]) -> Answer:
    return Answer(text=items[0].text or "")


def _poll_interval() -> float:
    return float(os.environ.get("WFE_BENCH_POLL_INTERVAL", "30"))


WORKFLOW = (
    WorkflowBuilder("bench_trigger", "Trigger benchmark", input=Question, output=Answer)
    .pipe(
        define_ai_batch_stage(
            id=STAGE_ID,
            input=Question,
            output=Answer,
            model=MODEL,
            build_requests=_requests,
            collect=_collect,
            poll_interval=_poll_interval(),
            max_wait=86_400,
        )
    )
    .build()
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the child: Airflow's TriggerRunner with a stub supervisor ----------------------------


def _workloads(kind: str, items: list[str], interval: float) -> list[Any]:
    """The triggers of ``kind`` as the triggerer gets them from the ``trigger`` table:
    ``serialize()`` output, Fernet-encrypted. Loads once what every trigger of this kind uses,
    so the RSS baseline after it counts no one-off import per trigger."""
    from airflow.executors.workloads import RunTrigger
    from airflow.models.trigger import Trigger

    triggers: list[Any]
    if kind == "ours":
        import openai  # noqa: F401

        from airflow_workflow_engine.hooks.engine import WorkflowEngineHook, kernel_for
        from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger

        kernel_for(WorkflowEngineHook(conn_id=None).get_settings(), WORKFLOW)
        triggers = [
            SuspendedStageTrigger(
                workflow_run_id=run_id,
                stage_id=STAGE_ID,
                workflow_ref=WORKFLOW_REF,
                dag_id="bench_trigger",
                task_id=STAGE_ID,
                poll_interval=interval,
                conn_id=None,
            )
            for run_id in items
        ]
    else:
        from airflow.providers.openai.hooks.openai import OpenAIHook
        from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

        OpenAIHook(conn_id="openai_default").get_conn()
        triggers = [
            OpenAIBatchTrigger(
                conn_id="openai_default", batch_id=batch_id, poll_interval=interval, timeout=86_400
            )
            for batch_id in items
        ]
    workloads = []
    for trigger_id, trigger in enumerate(triggers, start=1):
        classpath, kwargs = trigger.serialize()
        workloads.append(
            RunTrigger(
                id=trigger_id, classpath=classpath, encrypted_kwargs=Trigger.encrypt_kwargs(kwargs)
            )
        )
    return workloads


class _Comms:
    """What TriggerRunner.arun reads of its supervisor connection: a reader task."""

    _reader_task: asyncio.Task[None]


def _bench_runner(workloads: list[Any], per_tick: int, event_times: dict[int, float]) -> Any:
    """Airflow's TriggerRunner whose supervisor is this process: each sync (once a second)
    hands it the next ``per_tick`` workloads; events are timestamped as they are queued."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner, messages

    statuses: dict[str, int] = {}

    class StampedEvents(deque[Any]):
        def append(self, entry: Any) -> None:
            event_times.setdefault(entry.trigger_id, time.monotonic())
            status = str(entry.event.payload.get("status"))
            statuses[status] = statuses.get(status, 0) + 1
            super().append(entry)

    class BenchRunner(TriggerRunner):  # type: ignore[misc]
        async def init_comms(self) -> None:
            comms = _Comms()
            comms._reader_task = asyncio.create_task(asyncio.Event().wait())
            self.comms_decoder = comms

        async def asend(self, msg: Any) -> Any:
            take = [pending.popleft() for _ in range(min(per_tick, len(pending)))]
            return messages.TriggerStateSync(to_create=take, to_cancel=set())

    pending = deque(workloads)
    runner = BenchRunner()
    runner.events = StampedEvents()
    runner.statuses = statuses
    return runner


def _gc_recorder(pauses: list[float]) -> Any:
    """A ``gc.callbacks`` hook that appends the length of each full collection to ``pauses``
    (a full collection holds the GIL, so it stalls the event loop too)."""
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started.append(time.monotonic())
        elif started:
            pauses.append(time.monotonic() - started.pop())

    return on_gc


def child_main(kind: str, spec_path: str, proto_fd: int) -> None:
    """Runs one kind's triggers in Airflow's TriggerRunner; talks JSON lines on ``proto_fd``
    (out) and stdin (in)."""
    import gc

    proto = os.fdopen(proto_fd, "w", buffering=1)
    spec = json.loads(Path(spec_path).read_text())
    n = len(spec["items"])
    interval = float(spec["poll_interval"])
    event_times: dict[int, float] = {}
    lateness: list[float] = []
    stamps: list[float] = []
    gc_pauses: list[float] = []
    # Hand the workloads over across one poll interval, as tasks defer at different times.
    runner = _bench_runner(
        _workloads(kind, spec["items"], interval),
        max(1, -(-n // max(1, int(interval)))),
        event_times,
    )

    def send(**payload: Any) -> None:
        proto.write(json.dumps(payload) + "\n")

    async def watchdog() -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(WATCHDOG_SLEEP)
            now = time.monotonic()
            lateness.append(now - start - WATCHDOG_SLEEP)
            stamps.append(now)

    async def control() -> None:
        if os.environ.get("WFE_BENCH_LOOP_DEBUG"):  # --loop-debug: name the slow callbacks
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = 0.02
            handler = logging.StreamHandler(sys.stderr)
            logging.getLogger("asyncio").addHandler(handler)
        loop_task = asyncio.create_task(runner.arun())
        dog = asyncio.create_task(watchdog())
        send(phase="started", rss=baseline)
        await asyncio.to_thread(sys.stdin.readline)  # "measure": every trigger has polled
        send(phase="loaded", rss=rss_bytes(), triggers=len(runner.triggers))
        flip = json.loads(await asyncio.to_thread(sys.stdin.readline))["flip"]
        deadline = time.monotonic() + 3 * interval + 120
        while len(event_times) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        runner.stop = True
        if runner._stop_event is not None:
            runner._stop_event.set()
        await loop_task
        dog.cancel()
        events = {str(k): v for k, v in event_times.items()}
        send(
            phase="done",
            flip=flip,
            events=events,
            lateness=lateness,
            stamps=stamps,
            gc_pauses=gc_pauses,
            statuses=runner.statuses,
        )

    gc.collect()
    gc.callbacks.append(_gc_recorder(gc_pauses))
    baseline = rss_bytes()
    asyncio.run(control())


# -- the parent ---------------------------------------------------------------------------


def _batches_of(fake: Any) -> dict[str, Any]:
    # The fake server keeps batches in its state object (package layout) or on itself.
    state = getattr(fake, "_state", None)
    return state.batches if state is not None else fake._batches  # type: ignore[no-any-return]


def flip_batches(fake: Any, batch_ids: list[str]) -> float:
    """These batches finish at their next status poll; returns the instant (monotonic)."""
    with fake._lock:
        batches = _batches_of(fake)
        for batch_id in batch_ids:
            batches[batch_id].polls_until_done = 0
        return time.monotonic()


class PollStamper:
    """Stamps (monotonic) the first status request of each batch after ``start()``, as the
    fake server logs it; a thread looking every 2 ms."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.first_poll: dict[str, float] = {}
        self._seen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _new_requests(self) -> list[Any]:
        with self.fake._lock:
            log_ = self.fake.requests
            new = log_[self._seen :]
            self._seen = len(log_)
        return new

    def start(self) -> None:
        self._new_requests()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for req in self._new_requests():
                parts = req.path.strip("/").split("/")
                if req.method == "GET" and len(parts) == 3 and parts[1] == "batches":
                    self.first_poll.setdefault(parts[2], now)
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def polled_batches(fake: Any, since: int) -> set[str]:
    ids = set()
    for req in fake.requests[since:]:
        parts = req.path.strip("/").split("/")
        if req.method == "GET" and len(parts) == 3 and parts[1] == "batches":
            ids.add(parts[2])
    return ids


def make_our_stages(n: int, interval: float) -> tuple[list[str], list[str]]:
    """``n`` suspended stages through the kernel the triggerer uses; (run ids, batch ids)."""
    import importlib

    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.kernel.commands import JobExecute, RunClaimPending, RunCreate

    # The workflow as the triggerer imports it, built now that the poll interval is set.
    workflow = importlib.import_module(WORKFLOW_REF.partition(":")[0]).WORKFLOW
    kernel = WorkflowEngineHook(conn_id=None).get_kernel(workflow)
    run_ids, batch_ids = [], []
    start = time.monotonic()
    for i in range(n):
        created = kernel.dispatch(
            RunCreate(workflow_id=workflow.id, input={"text": f"question {i}"})
        )
        run_id = str(created.workflow_run_id)
        kernel.dispatch(RunClaimPending(workflow_run_id=run_id, worker_id="bench"))
        result = kernel.dispatch(
            JobExecute(
                workflow_run_id=run_id, stage_id=STAGE_ID, attempt=1, max_attempts=1, worker_id="b"
            )
        )
        if result.outcome != "suspended":
            raise RuntimeError(f"stage of run {run_id} did not suspend: {result}")
        stage = kernel.persistence.get_stage(run_id, STAGE_ID)
        assert stage is not None and stage.suspended_state is not None
        batch_ids.append(stage.suspended_state["handle"]["batch_id"])
        run_ids.append(run_id)
        # Spread the submissions over one poll interval: their first polls fall due spread.
        time.sleep(max(0.0, start + (i + 1) * interval / n - time.monotonic()))
    return run_ids, batch_ids


def make_their_batches(base_url: str, n: int, interval: float) -> list[str]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="bench")
    line = {
        "custom_id": "q",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "bench-batch", "messages": [{"role": "user", "content": "1+1?"}]},
    }
    ids = []
    for _ in range(n):
        file = client.files.create(file=("q.jsonl", json.dumps(line).encode()), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ids.append(batch.id)
    del interval
    return ids


def run_kind(
    kind: str, items: list[str], fake: Any, *, env: dict[str, str], work: Path, interval: float
) -> dict[str, Any]:
    spec = work / f"{kind}.json"
    spec.write_text(json.dumps({"items": items, "poll_interval": interval}))
    read_fd, write_fd = os.pipe()
    child_log = open(work / f"{kind}.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            *("--child", kind, "--spec", str(spec)),
            "--proto-fd",
            str(write_fd),
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=child_log,
        stderr=subprocess.STDOUT,
        pass_fds=(write_fd,),
        text=True,
    )
    os.close(write_fd)
    proto = os.fdopen(read_fd)
    assert proc.stdin is not None

    def expect(phase: str) -> dict[str, Any]:
        line = proto.readline()
        if not line:
            proc.wait()
            raise RuntimeError(f"{kind}: the child died (see {work / (kind + '.log')})")
        msg: dict[str, Any] = json.loads(line)
        if msg["phase"] != phase:
            raise RuntimeError(f"{kind}: expected {phase}, got {msg['phase']}")
        return msg

    try:
        since = len(fake.requests)
        started = expect("started")
        log(f"{kind}: triggerer started; waiting until all {len(items)} triggers have polled")
        deadline = time.monotonic() + 3 * interval + 120
        batch_ids = set(fake_ids[kind])
        polled: set[str] = set()
        while time.monotonic() < deadline:
            polled = polled_batches(fake, since) & batch_ids
            if len(polled) == len(batch_ids):
                break
            time.sleep(1)
        else:
            log(f"{kind}: only {len(polled)} triggers polled within {3 * interval + 120:.0f}s")
        proc.stdin.write("measure\n")
        proc.stdin.flush()
        loaded = expect("loaded")
        log(f"{kind}: all polling; flipping the batches in {interval / 2:.0f}s")
        time.sleep(interval / 2)
        stamper = PollStamper(fake)
        stamper.start()
        flip = flip_batches(fake, fake_ids[kind])
        proc.stdin.write(json.dumps({"flip": flip}) + "\n")
        proc.stdin.flush()
        done = expect("done")
        stamper.stop()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        child_log.close()
    figures = _figures(
        kind, items, done, first_poll=stamper.first_poll, started=started, loaded=loaded
    )
    figures["polled_before_flip"] = len(polled)
    return figures


def _figures(
    kind: str,
    items: list[str],
    done: dict[str, Any],
    *,
    first_poll: dict[str, float],
    started: dict[str, Any],
    loaded: dict[str, Any],
) -> dict[str, Any]:
    flip = done["flip"]
    n = len(items)
    events = {int(k): v for k, v in done["events"].items()}
    resumed = [events[i + 1] - flip for i in range(n) if i + 1 in events]
    own = [
        events[i + 1] - first_poll[fake_ids[kind][i]]
        for i in range(n)
        if i + 1 in events and fake_ids[kind][i] in first_poll
    ]
    late = [x * 1000 for x in done["lateness"]]
    before = [x * 1000 for x, t in zip(done["lateness"], done["stamps"], strict=True) if t < flip]
    after = [x * 1000 for x, t in zip(done["lateness"], done["stamps"], strict=True) if t >= flip]
    return {
        "kind": kind,
        "n": n,
        "events": len(events),
        "statuses": done["statuses"],
        "rss_baseline_mb": started["rss"] / 2**20,
        "rss_loaded_mb": loaded["rss"] / 2**20,
        "rss_per_trigger_kb": (loaded["rss"] - started["rss"]) / n / 1024,
        "resume_p50_s": percentile(resumed, 50),
        "resume_p99_s": percentile(resumed, 99),
        "own_p50_ms": percentile(own, 50) * 1000,
        "own_p99_ms": percentile(own, 99) * 1000,
        "late_max_ms": max(late) if late else float("nan"),
        "late_p99_ms": percentile(late, 99),
        "late_over_50ms": sum(1 for x in late if x > 50),
        "gc_full_count": len(done["gc_pauses"]),
        "gc_full_max_ms": max(done["gc_pauses"], default=0.0) * 1000,
        "late_max_polling_ms": max(before) if before else float("nan"),
        "late_p99_polling_ms": percentile(before, 99),
        "late_max_resuming_ms": max(after) if after else float("nan"),
        "late_p99_resuming_ms": percentile(after, 99),
        "late_samples": len(late),
    }


fake_ids: dict[str, list[str]] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument("--kinds", default="ours,theirs")
    parser.add_argument(
        "--loop-debug",
        action="store_true",
        help="asyncio debug mode in the triggerer: logs callbacks over 20 ms to <kind>.log",
    )
    parser.add_argument("--child")
    parser.add_argument("--spec")
    parser.add_argument("--proto-fd", type=int)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.spec, args.proto_fd)
        return
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    n, interval = args.triggers, args.poll_interval

    from cryptography.fernet import Fernet

    from airflow_workflow_engine.testing.fake_llm import FakeLLMServer

    work = Path(tempfile.mkdtemp(prefix="wfe-trigbench-"))
    fake = FakeLLMServer(batch_polls_until_done=10**9).start()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'engine.db'}",
        "AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE": str(work / "blobs"),
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {"conn_type": "openai", "host": fake.openai_base_url, "password": "bench"}
        ),
        "WFE_BENCH_POLL_INTERVAL": str(interval),
        **({"WFE_BENCH_LOOP_DEBUG": "1"} if args.loop_debug else {}),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    os.environ.update(env)  # this process makes the stages with the same settings
    sys.path.insert(0, env["PYTHONPATH"].split(os.pathsep)[0])
    logging.getLogger().setLevel(logging.WARNING)  # fewer log lines before the figures
    from airflow_workflow_engine.persistence.sql import migrate

    migrate(env["AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"])
    items: dict[str, list[str]] = {}
    if "ours" in kinds:
        log(f"ours: making {n} suspended stages (spread over {interval:.0f}s)")
        items["ours"], fake_ids["ours"] = make_our_stages(n, interval)
    if "theirs" in kinds:
        log(f"theirs: submitting {n} batches")
        items["theirs"] = fake_ids["theirs"] = make_their_batches(fake.openai_base_url, n, interval)
    results = []
    try:
        for kind in kinds:
            results.append(run_kind(kind, items[kind], fake, env=env, work=work, interval=interval))
            log(f"{kind}: {json.dumps(results[-1])}")
    finally:
        fake.stop()
    log(f"child logs in {work}")
    report(results, interval, n)


def report(results: list[dict[str, Any]], interval: float, n: int) -> None:
    import airflow

    print(
        f"\n{n} suspended batch stages in one TriggerRunner, poll interval {interval:.0f}s; "
        f"Airflow {airflow.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    rows = [
        ("RSS per trigger", "rss_per_trigger_kb", "{:.1f} KiB"),
        ("RSS before the triggers (baseline)", "rss_baseline_mb", "{:.0f} MiB"),
        ("batch done -> stage resumed, p50", "resume_p50_s", "{:.2f} s"),
        ("batch done -> stage resumed, p99", "resume_p99_s", "{:.2f} s"),
        ("poll that saw it done -> event, p50", "own_p50_ms", "{:.0f} ms"),
        ("poll that saw it done -> event, p99", "own_p99_ms", "{:.0f} ms"),
        ("event-loop lateness, max", "late_max_ms", "{:.1f} ms"),
        ("event-loop lateness, p99", "late_p99_ms", "{:.1f} ms"),
        ("  while polling (before the flip), max", "late_max_polling_ms", "{:.1f} ms"),
        ("  while polling (before the flip), p99", "late_p99_polling_ms", "{:.1f} ms"),
        ("  while resuming (after the flip), max", "late_max_resuming_ms", "{:.1f} ms"),
        ("  while resuming (after the flip), p99", "late_p99_resuming_ms", "{:.1f} ms"),
        ("wake-ups > 50 ms late", "late_over_50ms", "{}"),
        ("full (generation 2) garbage collections", "gc_full_count", "{}"),
        ("longest full garbage collection", "gc_full_max_ms", "{:.0f} ms"),
        ("triggers that had polled before the flip", "polled_before_flip", "{}"),
        ("events received", "events", "{}"),
    ]
    by_kind = {r["kind"]: r for r in results}
    ours, theirs = by_kind.get("ours"), by_kind.get("theirs")
    print("| figure | ours | openai provider | ratio (ours / theirs) |")
    print("|---|---|---|---|")
    for label, key, fmt in rows:
        a = fmt.format(ours[key]) if ours else "-"
        b = fmt.format(theirs[key]) if theirs else "-"
        ratio = "-"
        if ours and theirs and theirs[key]:
            ratio = f"{ours[key] / theirs[key]:.2f}"
        print(f"| {label} | {a} | {b} | {ratio} |")


if __name__ == "__main__":
    main()
