"""Stage-id rules and helpers (the seed's ``createStageIds`` / ``defineStageIds``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from airflow_workflow_engine.errors import StageNotFoundError

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow

__all__ = [
    "STAGE_ID_PATTERN",
    "StageIds",
    "assert_valid_stage_id",
    "create_stage_ids",
    "define_stage_ids",
    "is_valid_stage_id",
    "is_well_formed_stage_id",
]

#: Stage ids double as Airflow task ids, so they use the characters both allow.
STAGE_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$")


def is_well_formed_stage_id(stage_id: str) -> bool:
    return bool(STAGE_ID_PATTERN.match(stage_id))


def constant_name(stage_id: str) -> str:
    """``"extract-text"`` -> ``"EXTRACT_TEXT"``."""
    return stage_id.replace("-", "_").upper()


class StageIds:
    """Constants for a set of stage ids: ``ids.EXTRACT_TEXT == "extract-text"``; iterable."""

    def __init__(self, stage_ids: Iterable[str]) -> None:
        self._ids = tuple(stage_ids)
        for sid in self._ids:
            object.__setattr__(self, constant_name(sid), sid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getattr__(self, name: str) -> str:
        # Only reached for missing names; dunder lookups (copy, pickle) must not touch _ids.
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"No stage id constant {name!r}; known: {', '.join(self._ids)}")

    def __repr__(self) -> str:
        return f"StageIds({list(self._ids)!r})"


def create_stage_ids(workflow: Workflow) -> StageIds:
    """Stage-id constants from a built workflow."""
    return StageIds(workflow.stage_ids())


def define_stage_ids(stage_ids: Iterable[str]) -> StageIds:
    """Stage-id constants declared up front, before the workflow exists."""
    ids = list(stage_ids)
    bad = [s for s in ids if not is_well_formed_stage_id(s)]
    if bad:
        raise ValueError(f"Invalid stage ids {bad}: must match {STAGE_ID_PATTERN.pattern}")
    return StageIds(ids)


def is_valid_stage_id(workflow: Workflow, stage_id: str) -> bool:
    return stage_id in workflow.stage_ids()


def assert_valid_stage_id(workflow: Workflow, stage_id: str) -> None:
    if not is_valid_stage_id(workflow, stage_id):
        raise StageNotFoundError(workflow.id, stage_id, workflow.stage_ids())
