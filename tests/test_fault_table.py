"""docs/FAULTS.md is the fault table with the tests that show each row; the project rule is a fast default
suite (`make test`, ``-m "not slow"``) that still covers every fault row.

Checked here, by reading docs/FAULTS.md and the test files' syntax trees (nothing is imported or trained):
(a) every required fault id (the project's FAULTS.md, D1-D18, C1-C6, M1-M3, T1-T13, U1-U5) has one row, in
that order; (b) every test a row names exists as a top-level function of its file; (c) every row names at
least one test that is not slow-marked, and a test is noted `` (slow)`` exactly when it is slow-marked
(``@pytest.mark.slow`` on the function, or a module-level ``pytestmark`` that includes it). The last test
feeds the checker a small bad table to show it reports each kind of problem.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "FAULTS.md"

# the rows every version of docs/FAULTS.md must keep (D1-D18, C1-C6, M1-M3, T1-T13, U1-U5), listed here
REQUIRED = ("D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8", "D9", "D10", "D11", "D12", "D13", "D14", "D15", "D16",
            "D17", "D18",
            "C1", "C2", "C3", "C4", "C5", "C6",
            "M1", "M2", "M3",
            "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13",
            "U1", "U2", "U3", "U4", "U5")

COLUMNS = 4  # id | fault | what lstmcast does | test
_ID = re.compile(r"[A-Z]\d+")
_ENTRY = re.compile(r"`?(?P<path>tests/[\w/]+\.py)::(?P<name>\w+)`?(?P<slow> \(slow\))?")
_SLOW_MARKS = ("pytest.mark.slow", "mark.slow")


@dataclass(frozen=True)
class NamedTest:
    path: str
    name: str
    noted_slow: bool

    def __str__(self) -> str:
        return f"{self.path}::{self.name}"


@dataclass
class Row:
    id: str
    line: int
    cells: int
    tests: list[NamedTest] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table line (``\\|`` is a literal bar inside a cell)."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip() for p in parts[1:-1]]


def parse_table(text: str) -> list[Row]:
    """Every body row of the Markdown tables in ``text``: its id (first cell) and the tests of its last cell."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("|"):
            continue
        cells = _cells(line)
        if len(cells) < 2 or cells[0] == "id" or not cells[0].strip("-: "):
            continue  # header or separator
        row = Row(cells[0], number, len(cells))
        for entry in (e.strip() for e in cells[-1].split(", ")):
            match = _ENTRY.fullmatch(entry)
            if match:
                row.tests.append(NamedTest(match["path"], match["name"], bool(match["slow"])))
            else:
                row.malformed.append(entry)
        rows.append(row)
    return rows


def _is_slow(node: ast.expr) -> bool:
    """``pytest.mark.slow`` (or ``pytest.mark.slow(...)``), alone or inside a list/tuple of marks."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow(elt) for elt in node.elts)
    if isinstance(node, ast.Call):
        node = node.func
    return ast.unparse(node) in _SLOW_MARKS


@cache
def functions_in(path: Path) -> dict[str, bool] | None:
    """Top-level test functions of a test file -> slow-marked; None when the file does not exist."""
    if not path.is_file():
        return None
    tree = ast.parse(path.read_text(), filename=str(path))
    module_slow = any(isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                           for t in node.targets) and _is_slow(node.value)
                      for node in tree.body)
    return {node.name: module_slow or any(_is_slow(d) for d in node.decorator_list)
            for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def check_table(rows: list[Row], root: Path, required: tuple[str, ...]) -> dict[str, list[str]]:
    """Problems by kind: "rows" (a), "tests" (b), "fast" (c). Empty lists: the table is sound."""
    problems: dict[str, list[str]] = {"rows": _row_problems(rows, required), "tests": [], "fast": []}
    for row in rows:
        _test_problems(row, root, problems)
    return problems


def _row_problems(rows: list[Row], required: tuple[str, ...]) -> list[str]:
    ids = [row.id for row in rows]
    out = [f"row {rid} appears {ids.count(rid)} times" for rid in dict.fromkeys(ids) if ids.count(rid) > 1]
    for row in rows:
        if not _ID.fullmatch(row.id):
            out.append(f"line {row.line}: the id cell {row.id!r} is not an id such as D1 or H11")
        if row.cells != COLUMNS:
            out.append(f"line {row.line}: row {row.id} has {row.cells} cells, not {COLUMNS} (a '|' in a cell must "
                       "be written '\\|')")
    out += [f"no row for {rid}" for rid in required if rid not in ids]
    present = [rid for rid in dict.fromkeys(ids) if rid in required]
    if present != [rid for rid in required if rid in present]:
        out.append(f"the required rows are not in the order {', '.join(required)}: {', '.join(present)}")
    return out


def _test_problems(row: Row, root: Path, problems: dict[str, list[str]]) -> None:
    fast = False
    for entry in row.malformed:
        problems["tests"].append(f"row {row.id}: {entry!r} is not `tests/<dir>/<file>.py::<test_name>` "
                                 "(optionally followed by ' (slow)')")
    if not row.tests and not row.malformed:
        problems["tests"].append(f"row {row.id} names no test")
    for ref in row.tests:
        functions = functions_in(root / ref.path)
        if functions is None or ref.name not in functions:
            problems["tests"].append(f"row {row.id}: {ref.path} does not exist" if functions is None else
                                     f"row {row.id}: {ref} is not a top-level function of {ref.path}")
            continue
        slow = functions[ref.name]
        fast = fast or not slow
        if slow != ref.noted_slow:
            problems["fast"].append(f"row {row.id}: {ref} is slow-marked but not noted ' (slow)'" if slow else
                                    f"row {row.id}: {ref} is noted ' (slow)' but not slow-marked")
    if not fast:
        problems["fast"].append(f"row {row.id}: no test it names runs in the fast suite (each is slow-marked or "
                                "missing)")


def _problems(kind: str) -> list[str]:
    return check_table(parse_table(TABLE.read_text()), ROOT, REQUIRED)[kind]


def test_required_ids_are_the_45_rows_of_the_fault_table():
    assert len(REQUIRED) == len(set(REQUIRED)) == 45
    assert [sum(r.startswith(k) for r in REQUIRED) for k in "DCMTU"] == [18, 6, 3, 13, 5]


def test_every_required_fault_has_one_row_in_order():
    rows = parse_table(TABLE.read_text())
    assert len(rows) >= len(REQUIRED)
    assert _problems("rows") == []


def test_every_test_named_exists():
    assert _problems("tests") == []


def test_every_row_has_a_fast_test_and_the_slow_notes_match_the_marks():
    assert _problems("fast") == []


BAD_TABLE = """
| id | fault | what lstmcast does | test |
|---|---|---|---|
| A1 | a sound row | a \\| b | `tests/u/test_y.py::test_fast`, `tests/u/test_y.py::test_slow` (slow) |
| A3 | only slow tests | - | `tests/u/test_y.py::test_slow` (slow), `tests/u/test_x.py::test_in_slow_module` (slow) |
| A4 | unknown | | `tests/u/test_y.py::test_gone`, `tests/u/test_no.py::test_fast`, `tests/u/test_y.py::test_method` |
| A5 | wrong notes | - | `tests/u/test_y.py::test_fast` (slow), `tests/u/test_y.py::test_slow_call` |
| A6 | malformed | - | test_y.py::test_fast |
| A1 | twice | - | `tests/u/test_y.py::test_fast` |
| A7 | a | b | c | `tests/u/test_y.py::test_fast` |
"""

FAKE_FAST = """
import pytest

def test_fast():
    pass

@pytest.mark.slow
def test_slow():
    pass

@pytest.mark.slow()  # a call of the mark is the mark too
def test_slow_call():
    pass

class TestGrouped:
    def test_method(self):
        pass
"""

FAKE_SLOW_MODULE = """
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(False, reason="")]

def test_in_slow_module():
    pass
"""


def test_the_checker_reports_missing_rows_unknown_tests_and_rows_with_only_slow_tests(tmp_path):
    (tmp_path / "tests" / "u").mkdir(parents=True)
    (tmp_path / "tests" / "u" / "test_y.py").write_text(FAKE_FAST)
    (tmp_path / "tests" / "u" / "test_x.py").write_text(FAKE_SLOW_MODULE)
    rows = parse_table(BAD_TABLE)
    assert [r.id for r in rows] == ["A1", "A3", "A4", "A5", "A6", "A1", "A7"]
    problems = check_table(rows, tmp_path, ("A1", "A2", "A3", "A4", "A5", "A6"))
    assert problems["rows"] == ["row A1 appears 2 times",
                                "line 10: row A7 has 5 cells, not 4 (a '|' in a cell must be written '\\|')",
                                "no row for A2"]
    assert problems["tests"] == [
        "row A4: tests/u/test_y.py::test_gone is not a top-level function of tests/u/test_y.py",
        "row A4: tests/u/test_no.py does not exist",
        "row A4: tests/u/test_y.py::test_method is not a top-level function of tests/u/test_y.py",
        "row A6: 'test_y.py::test_fast' is not `tests/<dir>/<file>.py::<test_name>` (optionally followed by ' (slow)')",
    ]
    assert problems["fast"] == [
        "row A3: no test it names runs in the fast suite (each is slow-marked or missing)",
        "row A4: no test it names runs in the fast suite (each is slow-marked or missing)",
        "row A5: tests/u/test_y.py::test_fast is noted ' (slow)' but not slow-marked",
        "row A5: tests/u/test_y.py::test_slow_call is slow-marked but not noted ' (slow)'",
        "row A6: no test it names runs in the fast suite (each is slow-marked or missing)",
    ]
    assert check_table(rows[:1], tmp_path, ("A1",)) == {"rows": [], "tests": [], "fast": []}  # a sound row passes
    problems = check_table(list(reversed(rows[:2])), tmp_path, ("A1", "A3"))
    assert problems["rows"] == ["the required rows are not in the order A1, A3: A3, A1"]
