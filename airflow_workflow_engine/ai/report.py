"""A plain-text cost table from a ledger roll-up (the demo and the CLI print it)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from airflow_workflow_engine.ai.ledger import GROUP_BY_ALIASES, Ledger, RollupRow

__all__ = ["cost_table", "format_cost"]


def format_cost(value: Decimal | None, unpriced: int = 0) -> str:
    """``$0.000123``; a ``+?`` suffix when some calls had no known price."""
    text = "unknown" if value is None else f"${value:.6f}"
    return f"{text} +?" if unpriced and value is not None else text


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def cost_table(
    ledger: Ledger,
    workflow_run_id: str | None = None,
    group_by: Sequence[str] = ("stage_id", "model_key"),
) -> str:
    """Calls, tokens and cost per group (at least one dimension), with a total line."""
    if not group_by:
        raise ValueError("cost_table needs at least one dimension to group by")
    rows: list[RollupRow] = ledger.rollup(group_by, workflow_run_id=workflow_run_id)
    dims = [GROUP_BY_ALIASES[d] for d in group_by]
    header = [*(d.removesuffix("_id").removesuffix("_key") for d in dims)]
    header += ["calls", "in tokens", "out tokens", "cost"]
    body = [
        [
            *(_cell(row.group[d]) for d in dims),
            str(row.calls),
            str(row.input_tokens),
            str(row.output_tokens),
            format_cost(row.cost, row.unpriced_calls),
        ]
        for row in rows
    ]
    total_cost = sum((r.cost for r in rows), Decimal(0))
    body.append(
        [
            "total",
            *([""] * (len(dims) - 1)),
            str(sum(r.calls for r in rows)),
            str(sum(r.input_tokens for r in rows)),
            str(sum(r.output_tokens for r in rows)),
            format_cost(total_cost, sum(r.unpriced_calls for r in rows)),
        ]
    )
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = set(range(len(dims), len(header)))

    def render(line: list[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join(
        [render(header), rule, *(render(line) for line in body[:-1]), rule, render(body[-1])]
    )
