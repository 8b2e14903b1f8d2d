"""Point the course at the repository where it is published: ``retarget.py OWNER/REPO [--ref REF]``.

The setting lives in pyproject.toml's ``[tool.lesion-course]`` table (``repository``, ``ref``).
This command rewrites it together with everything that depends on it, as plain text so every
other byte stays as it is (notebook JSON formatting included):

- every "Open in Colab" badge: ``https://colab.research.google.com/github/OWNER/REPO/blob/REF/...``
- every set-up cell's ``COURSE_SOURCE = "git+https://github.com/OWNER/REPO@REF"`` line
- every GitHub link to the course (``https://github.com/OWNER/REPO``, ``.../tree/REF/...``,
  ``.../blob/REF/...``, ``...@REF``) in README.md, data/README.md, docs/*.md and notebooks/*.ipynb.

Links to other projects stay untouched. ``--check`` (or :func:`mismatches`) lists what disagrees
with the setting and exits 1 when anything does. Bad input exits 2 and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLE = "tool.lesion-course"
COLAB = "https://colab.research.google.com/github/"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

# GitHub: owners are letters, digits and single inner hyphens (at most 39); repositories are
# letters, digits, '.', '_' and '-' (at most 100).
_OWNER = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9])*")
_REPO = re.compile(r"[A-Za-z0-9._-]+")
_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")

# A URL inside Markdown or a JSON string ends at whitespace, a quote, a backslash or a bracket.
_STOP = r"\s\"'\\()<>\[\]"
_COLAB_URL = re.compile(
    r"https://colab\.research\.google\.com/github/"
    rf"(?P<owner>[^/{_STOP}]+)/(?P<repo>[^/{_STOP}]+)/blob/(?P<ref>[^/{_STOP}]+)/(?P<path>[^{_STOP}]*)"
)
_BADGE = re.compile(
    r"\[!\[[^\]\n]*\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    rf"\((?P<url>[^{_STOP}]*)\)"
)
_GITHUB_LINK = re.compile(
    r"https://github\.com/(?P<owner>[A-Za-z0-9-]+)/(?P<repo>[A-Za-z0-9._-]+)"
    rf"(?:(?P<kind>/(?:tree|blob)/|@)(?P<ref>[^/#{_STOP}]+))?"
)
# The set-up cell's line; in a notebook file its quotes are JSON-escaped (\").
_SOURCE_RAW = re.compile(r"(?P<head>COURSE_SOURCE[ \t]*=[ \t]*)(?P<q>\\?\")[^\"\\\n]*(?P=q)")
_SOURCE_LINE = re.compile(r"^\s*COURSE_SOURCE\s*=\s*(?P<value>.*?)\s*$")


class RetargetError(Exception):
    """Bad input or a missing setting: the command says why and exits 2."""


@dataclass(frozen=True)
class Setting:
    """Where the course is published: ``repository`` is OWNER/REPO, ``ref`` a tag or branch."""

    repository: str
    ref: str

    @property
    def source(self) -> str:
        """The pip source the set-up cells install."""
        return f"git+https://github.com/{self.repository}@{self.ref}"

    def badge_url(self, path: str) -> str:
        """The Colab URL that opens ``path`` (relative to the repository root)."""
        return f"{COLAB}{self.repository}/blob/{self.ref}/{path}"


def validate_repository(value: str) -> str:
    """Return OWNER/REPO unchanged, or raise RetargetError saying what is wrong."""
    parts = value.split("/")
    if len(parts) != 2:
        raise RetargetError(f"expected OWNER/REPO with exactly one '/', got {value!r}")
    owner, repo = parts
    if not (_OWNER.fullmatch(owner) and len(owner) <= 39):
        raise RetargetError(
            f"bad GitHub owner {owner!r}: letters, digits and single inner hyphens, 39 at most"
        )
    if not _REPO.fullmatch(repo) or len(repo) > 100 or repo in {".", ".."}:
        raise RetargetError(
            f"bad GitHub repository name {repo!r}: letters, digits, '.', '_' and '-', 100 at most"
        )
    if repo.lower().endswith(".git"):
        raise RetargetError(f"give the repository without '.git': {owner}/{repo[:-4]}")
    return value


def validate_ref(value: str) -> str:
    """Return a tag or branch name unchanged, or raise RetargetError saying what is wrong."""
    if not _REF.fullmatch(value) or ".." in value or value.endswith((".", ".lock")):
        raise RetargetError(
            f"bad ref {value!r}: a tag or branch of letters, digits, '.', '_', '+' and '-' "
            "(no spaces, quotes or slashes)"
        )
    return value


def _table_span(text: str) -> tuple[int, int]:
    """Start and end offsets of the ``[tool.lesion-course]`` table's body in pyproject.toml."""
    header = re.search(rf"^\[{re.escape(TABLE)}\][ \t]*(?:#.*)?$", text, re.MULTILINE)
    if header is None:
        raise RetargetError(
            f'pyproject.toml has no [{TABLE}] table with repository = "OWNER/REPO" and ref = "REF"'
        )
    following = re.compile(r"^[ \t]*\[", re.MULTILINE).search(text, header.end())
    return header.end(), following.start() if following else len(text)


def _key(name: str) -> re.Pattern[str]:
    return re.compile(rf"^(?P<head>[ \t]*{name}[ \t]*=[ \t]*\")(?P<value>[^\"\n]*)\"", re.MULTILINE)


def read_setting(root: Path) -> Setting:
    """Read ``repository`` and ``ref`` from root/pyproject.toml's ``[tool.lesion-course]``."""
    path = root / "pyproject.toml"
    if not path.is_file():
        raise RetargetError(f"{path} not found (use --root to name the repository)")
    text = path.read_text(encoding="utf-8")
    start, end = _table_span(text)
    body = text[start:end]
    values = {}
    for name in ("repository", "ref"):
        found = _key(name).search(body)
        if found is None:
            raise RetargetError(f'pyproject.toml: [{TABLE}] has no {name} = "..." line')
        values[name] = found["value"]
    try:
        return Setting(validate_repository(values["repository"]), validate_ref(values["ref"]))
    except RetargetError as err:
        raise RetargetError(f"pyproject.toml: [{TABLE}]: {err}") from None


def course_files(root: Path) -> list[Path]:
    """The files whose links follow the setting (pyproject.toml first), those that exist."""
    candidates = [root / "pyproject.toml", root / "README.md", root / "data" / "README.md"]
    candidates += sorted((root / "docs").glob("*.md")) + notebooks(root)
    return [path for path in candidates if path.is_file()]


def notebooks(root: Path) -> list[Path]:
    """The course notebooks and their solutions, by name."""
    return sorted((root / "notebooks").glob("*.ipynb")) + sorted(
        (root / "solutions").glob("*.ipynb")
    )


def _course_repositories(root: Path, setting: Setting) -> set[str]:
    """Lower-cased OWNER/REPO names that mean "this course": the setting's and the set-up cells'."""
    names = {setting.repository.lower()}
    for path in notebooks(root):
        text = path.read_text(encoding="utf-8")
        for line in _SOURCE_RAW.finditer(text):
            link = _GITHUB_LINK.search(line.group())
            if link:
                names.add(f"{link['owner']}/{_bare(link['repo'])}".lower())
    return names


def _bare(repo: str) -> str:
    """A repository name as matched in running text, less a '.git' suffix or a sentence's '.'."""
    repo = repo.rstrip(".")
    return repo[:-4] if repo.lower().endswith(".git") else repo


def _is_course_colab(owner: str, repo: str, path: str, course: set[str], names: set[str]) -> bool:
    """A Colab URL is the course's when it names a course repository or opens a course notebook."""
    return f"{owner}/{repo}".lower() in course or (
        path.startswith("notebooks/") and path.removeprefix("notebooks/") in names
    )


def _substitute(
    pattern: re.Pattern[str], text: str, replace: Callable[[re.Match[str]], str]
) -> tuple[str, int]:
    """``pattern.sub`` that also counts the matches whose text actually changed."""
    changed = 0

    def sub(match: re.Match[str]) -> str:
        nonlocal changed
        new = replace(match)
        changed += new != match.group()
        return new

    return pattern.sub(sub, text), changed


def rewrite_text(text: str, new: Setting, course: set[str], names: set[str]) -> tuple[str, int]:
    """Point the badges, set-up lines and course links in ``text`` at ``new``; count the changes."""
    owner, repo = new.repository.split("/")

    def source(match: re.Match[str]) -> str:
        return f"{match['head']}{match['q']}{new.source}{match['q']}"

    def colab(match: re.Match[str]) -> str:
        if not _is_course_colab(match["owner"], match["repo"], match["path"], course, names):
            return match.group()
        return new.badge_url(match["path"])

    def link(match: re.Match[str]) -> str:
        name = _bare(match["repo"])
        if f"{match['owner']}/{name}".lower() not in course:
            return match.group()
        if match["kind"] is None:  # keep a '.git' suffix or a full stop after the link
            return f"https://github.com/{owner}/{repo}{match['repo'][len(name) :]}"
        suffix = match["repo"][len(name) :]
        return f"https://github.com/{owner}/{repo}{suffix}{match['kind']}{new.ref}"

    total = 0
    for pattern, replace in ((_SOURCE_RAW, source), (_COLAB_URL, colab), (_GITHUB_LINK, link)):
        text, count = _substitute(pattern, text, replace)
        total += count
    return text, total


def _rewrite_setting(text: str, new: Setting) -> tuple[str, int]:
    """Set ``repository`` and ``ref`` inside the ``[tool.lesion-course]`` table only."""
    start, end = _table_span(text)
    body, total = text[start:end], 0
    for name, value in (("repository", new.repository), ("ref", new.ref)):
        body, count = _substitute(_key(name), body, lambda m, value=value: f'{m["head"]}{value}"')
        total += count
    return text[:start] + body + text[end:], total


def retarget(root: Path, repository: str, ref: str | None = None) -> dict[str, int]:
    """Point the course at ``repository`` (OWNER/REPO) and ``ref`` (default: the current ref).

    Validates everything before writing anything, writes only files that change, and returns
    {path relative to root: number of replacements} for those files.
    """
    old = read_setting(root)
    new = Setting(validate_repository(repository), validate_ref(old.ref if ref is None else ref))
    course = _course_repositories(root, old)
    names = {path.name for path in notebooks(root)}
    updates: dict[Path, tuple[str, int]] = {}
    for path in course_files(root):
        raw = path.read_bytes().decode("utf-8")
        text, count = rewrite_text(raw, new, course, names)
        if path == root / "pyproject.toml":
            text, extra = _rewrite_setting(text, new)
            count += extra
        if text != raw:
            updates[path] = (text, count)
    for path, (text, _) in updates.items():
        path.write_bytes(text.encode("utf-8"))
    return {path.relative_to(root).as_posix(): count for path, (_, count) in updates.items()}


def _badges(text: str) -> Iterable[str]:
    return (match["url"] for match in _BADGE.finditer(text))


def _badge_problem(url: str, setting: Setting, expected_path: str | None, root: Path) -> str | None:
    """Why a badge URL is wrong (None when right); ``expected_path`` is its notebook, if known."""
    parsed = _COLAB_URL.fullmatch(url)
    if parsed is None:
        return f"badge {url} is not a {COLAB}OWNER/REPO/blob/REF/... URL"
    path = parsed["path"]
    if expected_path is not None and path != expected_path:
        return f"badge {url} opens {path}, not this notebook ({expected_path})"
    if expected_path is None and not (path.endswith(".ipynb") and (root / path).is_file()):
        return f"badge {url} opens {path}, which does not exist"
    if url != setting.badge_url(path):
        return f"badge {url} should be {setting.badge_url(path)}"
    return None


def mismatches(root: Path) -> list[str]:
    """Everything that disagrees with the setting, one line each (empty when all agree).

    Badges must point at the setting's repository and ref and open their own notebook (in a
    notebook) or an existing notebook (in Markdown); every notebook needs a badge and a
    ``COURSE_SOURCE`` line equal to the setting's source.
    """
    setting = read_setting(root)
    expected_source = json.dumps(setting.source)
    problems: list[str] = []
    for path in course_files(root):
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".md":
            for url in _badges(path.read_text(encoding="utf-8")):
                problem = _badge_problem(url, setting, None, root)
                if problem:
                    problems.append(f"{rel}: {problem}")
        if path.suffix != ".ipynb":
            continue
        try:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        except (ValueError, KeyError, TypeError) as err:
            problems.append(f"{rel}: not a readable notebook ({err})")
            continue
        badges = sources = 0
        for cell in cells:
            source = cell.get("source", "")
            text = source if isinstance(source, str) else "".join(source)
            for url in _badges(text):
                badges += 1
                problem = _badge_problem(url, setting, rel, root)
                if problem:
                    problems.append(f"{rel}: {problem}")
            for line in text.splitlines():
                found = _SOURCE_LINE.match(line)
                if found is None or cell.get("cell_type") != "code":
                    continue
                sources += 1
                if found["value"] != expected_source:
                    problems.append(
                        f"{rel}: {line.strip()} should be COURSE_SOURCE = {expected_source}"
                    )
        if not badges:
            problems.append(f"{rel}: no 'Open in Colab' badge")
        if not sources:
            problems.append(f"{rel}: no COURSE_SOURCE line in a code cell")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line: retarget (exit 0), ``--check`` (exit 1 on mismatches), bad input (exit 2)."""
    parser = argparse.ArgumentParser(
        prog="retarget.py",
        description="Point the notebooks' Colab badges, set-up cells and course links at "
        "OWNER/REPO (and the setting in pyproject.toml).",
    )
    parser.add_argument("repository", nargs="?", metavar="OWNER/REPO", help="e.g. you/your-fork")
    parser.add_argument(
        "--ref", help="tag or branch the notebooks open and install (default: current)"
    )
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="the repository (default: this one)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only list what disagrees with the setting"
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        if args.check:
            if args.repository or args.ref:
                raise RetargetError(
                    "--check takes no OWNER/REPO or --ref: it checks against the setting"
                )
            problems = mismatches(root)
            for problem in problems:
                print(problem)
            setting = read_setting(root)
            if problems:
                print(f"{len(problems)} mismatch(es) with {setting.repository}@{setting.ref}")
                return 1
            print(f"everything points at {setting.repository}@{setting.ref}")
            return 0
        if not args.repository:
            raise RetargetError("give OWNER/REPO (or --check)")
        changes = retarget(root, args.repository, args.ref)
    except RetargetError as err:
        print(f"retarget.py: error: {err}", file=sys.stderr)
        return 2
    for rel, count in changes.items():
        print(f"{rel}: {count}")
    setting = read_setting(root)
    if changes:
        print(f"now pointing at {setting.repository}@{setting.ref}")
    else:
        print(f"nothing to change: already pointing at {setting.repository}@{setting.ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
