"""``e2e_celery_documents`` written with plain ``@task``s, for the Celery benchmark
(``benchmarks/celery_vs_task.py``): the same shape (``intake -> [summarize, classify] -> embed
-> publish``), the same work, the values passed through XCom, and ``embed`` sending the same
two requests as one batch through the openai SDK to ``llm_openai_default``'s host, polling
it in the task (what a plain task does: it holds its worker slot while it waits).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

CATEGORIES = {
    "engineering": ("airflow", "pipeline", "deploy", "code", "scheduler"),
    "finance": ("revenue", "cost", "budget", "profit"),
}

with DAG("e2e_celery_tasks", schedule=None, start_date=datetime(2025, 1, 1)) as dag:

    @task
    def intake() -> dict[str, Any]:
        from airflow.sdk import get_current_context

        conf = get_current_context()["dag_run"].conf or {}
        words = str(conf["text"]).split()
        return {"title": conf["title"], "words": words, "word_count": len(words)}

    @task
    def summarize(doc: dict[str, Any]) -> str:
        return " ".join(doc["words"][:6])

    @task
    def classify(doc: dict[str, Any]) -> str:
        lowered = [w.lower().strip(".,") for w in doc["words"]]
        scores = {c: sum(lowered.count(w) for w in ws) for c, ws in CATEGORIES.items()}
        category, hits = max(scores.items(), key=lambda kv: kv[1])
        return category if hits else "general"

    @task
    def embed(summary: str, category: str) -> dict[str, Any]:
        import openai
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection("llm_openai_default")
        client = openai.OpenAI(api_key=conn.password, base_url=conn.host)
        lines = [
            {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p}]},
            }
            for cid, p in (
                ("summary", f"embed: {summary}"[:200]),
                ("category", f"embed: {category}"),
            )
        ]
        data = "\n".join(json.dumps(line) for line in lines).encode()
        file = client.files.create(file=("requests.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(1.0)
            batch = client.batches.retrieve(batch.id)
        if batch.status != "completed" or not batch.output_file_id:
            raise RuntimeError(f"batch {batch.id} ended {batch.status}")
        results = [
            json.loads(x) for x in client.files.content(batch.output_file_id).text.split("\n") if x
        ]
        texts = {
            r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"]
            for r in results
        }
        return {"vectors": [len(texts[c]) for c in ("summary", "category")], "batch_id": batch.id}

    @task
    def publish(
        doc: dict[str, Any], summary: str, category: str, embedded: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "title": doc["title"],
            "summary": summary,
            "category": category,
            "dimensions": len(embedded["vectors"]),
            "batch_id": embedded["batch_id"],
        }

    doc = intake()
    summary, category = summarize(doc), classify(doc)
    publish(doc, summary, category, embed(summary, category))
