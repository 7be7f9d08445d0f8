"""The docs' Python examples run: every ```python block of docs/*.md, page by page.

A page's blocks run in order in one namespace, so later blocks may use what earlier ones
defined. A block whose first line is ``# not-run`` is skipped (for Airflow-side snippets and
fragments). Only fences that start at the beginning of a line are extracted, so keep examples
out of admonitions and lists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
SKIP_MARKER = "# not-run"
#: Pages that must keep runnable examples (an extraction bug must not pass silently).
PAGES_WITH_EXAMPLES = ("quickstart.md", "concepts.md")


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line number, source)`` of each runnable ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        source = match.group(1)
        if source.lstrip().startswith(SKIP_MARKER):
            continue
        blocks.append((text.count("\n", 0, match.start(1)) + 1, source))
    return blocks


PAGES = sorted(DOCS.glob("*.md"))


def test_docs_exist() -> None:
    names = {p.name for p in PAGES}
    assert set(PAGES_WITH_EXAMPLES) <= names


@pytest.mark.parametrize("name", PAGES_WITH_EXAMPLES)
def test_pages_have_runnable_examples(name: str) -> None:
    assert python_blocks(DOCS / name), f"docs/{name} has no runnable ```python block"


def test_block_extraction(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "a\n```python\nx = 1\n```\n```python\n# not-run\nboom\n```\n```bash\nls\n```\n"
        '```python title="t.py"\ny = 2\n```\n',
        encoding="utf-8",
    )
    assert python_blocks(page) == [(3, "x = 1\n"), (13, "y = 2\n")]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for line, source in python_blocks(page):
        # dont_inherit: run as a user would, without this module's `from __future__` flags.
        code = compile(source, f"docs/{page.name}:{line}", "exec", dont_inherit=True)
        try:
            exec(code, namespace)
        except Exception as exc:
            raise AssertionError(
                f"the ```python block at docs/{page.name} line {line} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
