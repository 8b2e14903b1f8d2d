"""Every figure the course quotes from a seed is in the seed it names.

The course grew from five source documents, the seeds (``../shared/seeds/000_*.txt`` to
``004_*.txt``, next to the repository, present in CI, absent on a user's machine). A quote is
trusted only if it can be checked, so this test finds every quote and looks the figure up.

**What counts as a seed quote.** A *unit* of text that names a seed explicitly: ``seed 002``,
``Seed 004's``, ``seeds 000 and 002``, ``seed 000/002``, ``seeds 000-004``, or a variable
``seed004``/``seed_003``.
A generic "the seeds'" is not a citation (it mostly means "the seeds' recipe, re-run by us").

- In markdown (notebook markdown cells, README.md, data/README.md, docs/*.md): one sentence,
  list item or table row.
- In Python (notebook code cells, lesionlib/*.py): a line whose comment names a seed (the
  comment attributes the line's value, so every number on it counts, integers included:
  ``batch_size = 64  # seed 002`` claims seed 002 says 64); the sentence of a string that names a
  seed and holds a figure; else the nearest dict entry, dict, list, tuple or call around that
  string that holds figures (``{"source": "seed 002", "accuracy": 0.8322}``); the value assigned
  to a variable named after a seed.

**What is checked.** Every *figure* in the unit: a decimal (``0.715``), a percentage (``65.8%``)
or a power of ten (``7e-4``). It must equal a number written in one of the seeds the unit names,
as a value: 65.8% matches 0.658 and 65.8; 7e-4 matches 0.0007. Integers in prose are not
checked (image sizes, counts and years are mostly ours), nor are number-only strings in code
(``color="0.3"``).

**Not a quote.** A unit that says the number is the course's own, with the words "our choice"
or "we infer" (the course's convention for inferences: "we infer … because …"), is skipped.
Everything else that names a seed and a figure is a quote, so a changed quote fails here.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS_DIR = ROOT.parent / "shared" / "seeds"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MARKDOWN = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = sorted((ROOT / "lesionlib").glob("*.py"))
SOURCES = NOTEBOOKS + MARKDOWN + PYTHON

CITATION = re.compile(r"\bseeds?[ _]?(\d{3}(?:\s*(?:/|,|and|or|to|-|–)\s*\d{3})*)(?!\d)", re.I)
FIGURE = re.compile(r"(?<![\w.:/-])(\d+(?:\.\d+)?[eE]-?\d+|\d[\d,]*\.\d+(?: ?%)?|\d+ ?%)")
NUMBER = re.compile(r"(?<![\w.:/-])(\d+(?:\.\d+)?[eE]-?\d+|\d[\d,]*(?:\.\d+)?(?: ?%)?)")
SEED_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?: ?%)?")
NUMBER_STRING = re.compile(r"""(["'])[\d.]+\1""")  # "0.3": a colour or a setting, not a quote
OURS = re.compile(r"\bour choice\b|\bwe infer\b", re.I)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(*_`\"'\[])")
NEW_UNIT = re.compile(r"^\s*(?:\||#|>|[-*] |\d+\. )")


@dataclass(frozen=True)
class Unit:
    """One piece of text that names seeds, and whether its integers count too."""

    where: str
    text: str
    seeds: frozenset[str]
    integers: bool = False


def load_seeds(folder: Path) -> dict[str, str]:
    """Seed id ("000") -> the seed's text, from ``000_<hash>.txt`` files."""
    return {
        p.name[:3]: p.read_text(encoding="utf-8")
        for p in sorted(folder.glob("[0-9]" * 3 + "_*.txt"))
    }


def seed_numbers(texts: dict[str, str]) -> dict[str, list[tuple[float, bool, int]]]:
    """Seed id -> every number written in it: (value, written as a percentage, line number)."""
    return {
        seed: [
            (*_value(match.group()), line_no)
            for line_no, line in enumerate(text.splitlines(), 1)
            for match in SEED_NUMBER.finditer(line)
        ]
        for seed, text in texts.items()
    }


def cited(text: str) -> frozenset[str]:
    """The seed ids a text names ("seeds 000 and 002" -> {"000", "002"}; "seeds 000-004": all)."""
    seeds: set[str] = set()
    for match in CITATION.finditer(text):
        parts = re.findall(r"\d{3}|[-–]|to", match.group(1))
        for i, part in enumerate(parts):
            if part in ("-", "–", "to"):
                seeds.update(f"{n:03d}" for n in range(int(parts[i - 1]), int(parts[i + 1]) + 1))
            else:
                seeds.add(part)
    return frozenset(seeds)


def _quotable(text: str) -> str:
    """The text without its seed ids and number-only strings, which are not quotes."""
    return NUMBER_STRING.sub(" ", CITATION.sub(" ", text))


def _value(figure: str) -> tuple[float, bool]:
    """A figure's value, and whether it is a percentage."""
    return float(figure.replace(",", "").replace("%", "").strip()), figure.endswith("%")


def _matches(figure: str, values: list[tuple[float, bool, int]]) -> bool:
    """Equal values; a percentage also equals its fraction below 1 (65.8% = 0.658), in either
    direction (a fraction in the course, a percentage in the seed, or the reverse)."""
    value, percent = _value(figure)
    for seed_value, seed_percent, _ in values:
        if math.isclose(value, seed_value, rel_tol=1e-9):
            return True
        if percent and seed_value < 1 and math.isclose(value / 100, seed_value, rel_tol=1e-9):
            return True
        if seed_percent and value < 1 and math.isclose(value * 100, seed_value, rel_tol=1e-9):
            return True
    return False


def violations(units: list[Unit], numbers: dict[str, list[tuple[float, bool, int]]]) -> list[str]:
    """One message per quoted figure that is not in the seeds its unit names."""
    found = []
    for unit in dict.fromkeys(units):  # the same text can be reached twice
        if OURS.search(unit.text):
            continue
        unknown = sorted(unit.seeds - set(numbers))
        if unknown:
            found.append(
                f"{unit.where}: names seed(s) {unknown}, which do not exist: {unit.text!r}"
            )
            continue
        values = [pair for seed in sorted(unit.seeds) for pair in numbers[seed]]
        text = _quotable(unit.text)
        for match in (NUMBER if unit.integers else FIGURE).finditer(text):
            if not _matches(match.group(1), values):
                found.append(
                    f"{unit.where}: {match.group(1)} is not in seed(s) "
                    f"{', '.join(sorted(unit.seeds))}: {unit.text.strip()[:200]!r}"
                )
    return found


def quoted_figures(units: list[Unit]) -> int:
    """How many figures the units quote (to show the search finds something)."""
    return sum(
        len((NUMBER if u.integers else FIGURE).findall(_quotable(u.text)))
        for u in units
        if not OURS.search(u.text)
    )


# --- finding the units ---------------------------------------------------------------------


def _sentences(text: str) -> list[str]:
    return SENTENCE_END.split(" ".join(text.split()))


def prose_units(text: str, where: str) -> list[Unit]:
    """Markdown: sentences of paragraphs, list items and table rows that name a seed.

    Lines of a fenced code block are units of their own."""
    blocks: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            blocks.append("")
        elif in_fence or not line.strip() or NEW_UNIT.match(line) or not blocks:
            blocks.append(line)
        else:
            blocks[-1] += " " + line
    return [
        Unit(where, sentence, cited(sentence))
        for block in blocks
        for sentence in _sentences(block)
        if cited(sentence)
    ]


def _segment(source: str, node: ast.AST) -> str:
    return ast.get_source_segment(source, node) or ""


def _enclosing_unit(source: str, node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str | None:
    """The nearest text around ``node`` that holds figures: its dict entry, dict, list, tuple,
    set, call or statement. None when even the statement holds none."""
    current = node
    while current in parents:
        parent = parents[current]
        if isinstance(parent, ast.Dict) and current in parent.keys:
            value = parent.values[parent.keys.index(current)]
            return _segment(source, current) + ": " + _segment(source, value)
        text = _segment(source, parent)
        if isinstance(parent, ast.stmt):
            return text if FIGURE.search(_quotable(text)) else None
        if isinstance(
            parent, ast.Dict | ast.List | ast.Tuple | ast.Set | ast.Call
        ) and FIGURE.search(_quotable(text)):
            return text
        current = parent
    return None


def code_units(source: str, where: str) -> list[Unit]:
    """Python: commented lines, strings and seed-named variables that name a seed."""
    units: list[Unit] = []
    lines = source.splitlines()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        tree = ast.parse(source)
    except (SyntaxError, tokenize.TokenError):  # e.g. IPython magics: fall back to lines
        return [Unit(where, line, cited(line)) for line in lines if cited(line)]
    for token in tokens:
        if token.type == tokenize.COMMENT and cited(token.string):
            line = lines[token.start[0] - 1]
            units.append(Unit(f"{where} line {token.start[0]}", line, cited(line), integers=True))

    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if isinstance(parents.get(node), ast.JoinedStr | ast.FormattedValue):
            continue  # parts of an f-string: the f-string as a whole is looked at
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and cited(node.id):
            statement = parents.get(node)
            value = getattr(statement, "value", None)
            if value is not None:
                text = _segment(source, value)
                units.append(Unit(f"{where} line {node.lineno}", text, cited(node.id)))
            continue
        is_text = isinstance(node, ast.JoinedStr) or (
            isinstance(node, ast.Constant) and isinstance(node.value, str)
        )
        if not is_text:
            continue
        text = _segment(source, node)
        seeds = cited(text)
        if not seeds:
            continue
        label = f"{where} line {node.lineno}"
        if FIGURE.search(_quotable(text)):
            units += [Unit(label, s, cited(s)) for s in _sentences(text) if cited(s)]
        else:
            around = _enclosing_unit(source, node, parents)
            if around is not None:
                units.append(Unit(label, around, seeds))
    return units


def units_of(path: Path) -> Iterator[Unit]:
    """Every seed-naming unit of a notebook, markdown or Python file."""
    name = path.relative_to(ROOT).as_posix()
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            source = "".join(cell["source"])
            where = f"{name} cell {i}"
            if cell["cell_type"] == "markdown":
                yield from prose_units(source, where)
            elif cell["cell_type"] == "code":
                yield from code_units(source, where)
    elif path.suffix == ".md":
        yield from prose_units(path.read_text(encoding="utf-8"), name)
    else:
        yield from code_units(path.read_text(encoding="utf-8"), name)


# --- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbers() -> dict[str, list[tuple[float, bool, int]]]:
    if not SEEDS_DIR.is_dir():
        pytest.skip(
            f"seed documents not found at {SEEDS_DIR} (../shared/seeds next to the repository: "
            "present in CI, absent on a user's machine)"
        )
    texts = load_seeds(SEEDS_DIR)
    assert sorted(texts) == ["000", "001", "002", "003", "004"], f"seeds found: {sorted(texts)}"
    return seed_numbers(texts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_quoted_seed_figure_is_in_the_seed_it_names(path: Path, numbers) -> None:
    found = violations(list(units_of(path)), numbers)
    assert not found, "seed quotes not found in their seed:\n" + "\n".join(found)


def test_the_course_quotes_seeds_and_the_search_finds_the_quotes(numbers) -> None:
    units = [unit for path in SOURCES for unit in units_of(path)]
    quoted = quoted_figures(units)
    assert quoted >= 100, f"only {quoted} quoted seed figures found: has the matcher gone blind?"
    for must in ("83.22", "65.8", "0.715", "0.83", "7e-4"):
        assert any(must in unit.text for unit in units), f"no checked quote of {must}"


FAKE_SEEDS = {
    "000": "Training accuracy: 67.8%\nTesting accuracy: 65.8%\nResNet-50: 83.22%",
    "002": "grad_clip = 0.1\nlr_m = 0.0007\nnum_epochs = 25\n(83.22%)",
    "003": "accuracy 0.83, recall 0.72 and 0.93",
    "004": "test accuracy 0.57, 0.69, 0.59, then 0.715",
}


@pytest.mark.parametrize(
    ("kind", "text", "bad"),
    [
        ("prose", "Seed 002 reported 91.3% test accuracy.", ["91.3%"]),
        ("prose", "Seed 003's ResNet-18 reached 0.715 accuracy.", ["0.715"]),  # seed 004's figure
        ("prose", "Seeds 000 and 002 reached 83.22%, and seed 004 reached 0.72.", ["0.72"]),
        ("prose", "| seed 004 | 8 classes | 0.57 → 0.69 → 0.61 |", ["0.61"]),
        ("code", "batch_size = 64  # seed 002", ["64"]),
        ("code", 'ref = {"source": "seed 003", "accuracy": 0.87, "recall": 0.72}', ["0.87"]),
        ("code", 'rows = [("seed 004 v1", 0.57), ("seed 004 v2", 0.7)]', ["0.7"]),
        ("code", "seed004 = {'v1': 0.57, 'v9': 0.99}", ["0.99"]),
        ("code", 'print(f"{acc:.1%} (seed 000 reports 84.22%)")', ["84.22%"]),
        ("code", "lr = 7e-3  # seed 002: peak learning rate", ["7e-3"]),
        ("prose", "Seed 000 reports 83.22% for both training and test accuracy.", []),
        ("prose", "Seed 002 sets `grad_clip = 0.1` and a peak rate of 7e-4.", []),
        ("prose", "Seed 004 gives no momentum. We use 0.9.", []),
        ("prose", "Seed 004 gives no value; 0.9 is our choice.", []),
        ("code", "epochs = 25  # seed 002: num_epochs = 25", []),
        ("code", "momentum = 0.9  # our choice: seed 004 names no value", []),
        (
            "code",
            'ref = {"source": "seed 003", "accuracy": 0.83, "balanced": (0.72 + 0.93) / 2}',
            [],
        ),
    ],
)
def test_the_matcher_reports_made_up_quotes(kind: str, text: str, bad: list[str]) -> None:
    units = prose_units(text, "example") if kind == "prose" else code_units(text, "example")
    assert units, f"the matcher found no seed quote in {text!r}"
    found = violations(units, seed_numbers(FAKE_SEEDS))
    assert [message.split(" is not in ")[0].rsplit(": ", 1)[-1] for message in found] == bad
