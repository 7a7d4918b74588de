"""Every reference from the code and the docs to the docs resolves, and nothing cites an outside note.

Scanned: every ``.py`` file under ``tucker_ref/``, ``validation/`` and ``tests/`` (this file
included), every ``docs/*.md`` and ``README.md``. Nothing is skipped.

Accepted reference forms (``<page>`` is a page of ``docs/``: theory, algorithms, conventions,
crosscheck, validation, results, training, performance, api; the ``docs/`` prefix is optional,
and a markdown link ``[theory.md §3](theory.md)`` is read through its text):

1. **Numbered section**: ``<page>.md §<n>`` resolves when the page has a heading
   ``## <n>. <title>`` (the heading style of every numbered page of ``docs/``). A letter suffix,
   as in ``algorithms.md §1b``, names a run-in paragraph ``**1b. <title>`` inside section 1
   (the style of docs/algorithms.md §1). One citation may list several sections:
   ``docs/theory.md §3, §5``, ``algorithms.md §1–§3`` (a range: every section in it must
   exist), ``algorithms.md §1b–1c``.
2. **Heading anchor**: ``<page>.md#<slug>``, also as a link target
   ``(validation.md#2-robustness-to-small-core-singular-values)``, resolves when a heading of
   the page has that GitHub slug. This is how unnumbered sections are cited, e.g.
   docs/algorithms.md#variants or docs/results.md#setup.
3. **Whole page**: ``docs/<page>.md``; the file must exist.
4. **Inside a page of docs/** a bare ``§<n>`` (no page named just before it) means that
   page's own section and must resolve there. In a ``.py`` file a bare section sign is an
   error: a docstring names the page it cites. Fenced code blocks of a page are checked as
   code (rule 4 for ``.py``), and their ``# comment`` lines are not headings.

Forbidden anywhere: the word *spec* used as a citation (followed by a section sign, or right
after an opening parenthesis), and tracker numbers (the words issue, ticket or tracker followed
by a number). Those point at documents that do not ship
with the package.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SS = "\u00a7"  # the section sign, kept out of this file's own text (see rule 4)
MISSING = "no" + "such" + "page"  # a page name that does not exist, not spelled out for the scan

SEC = r"\d+[a-z]?"
ITEM = rf"{SS}({SEC})(?:\s*[–-]\s*{SS}?({SEC}))?"
LIST = rf"{ITEM}(?:\s*(?:,|and|or)\s*{ITEM})*"
# `NAME.md` optionally prefixed by docs/ or ../docs/, not part of a longer path or name.
PAGE = r"(?<![\w/.-])(?:\.\./)?(?:docs/)?([A-Za-z_][\w-]*)\.md"
SECTION_REF = re.compile(rf"{PAGE}\s*({LIST})")
ANCHOR_REF = re.compile(rf"{PAGE}#([\w-]+)")
PAGE_REF = re.compile(r"(?<![\w/.-])(?:\.\./)?docs/([A-Za-z_][\w-]*)\.md(?![\w#])")
BARE_LIST = re.compile(LIST)
ITEM_RE = re.compile(ITEM)

FORBIDDEN = [
    (re.compile(rf"\b[Ss]pec\s*\(?{SS}"), "cites the outside spec"),
    (re.compile(r"(?<![\w.])\([Ss]pec\b"), "cites the outside spec"),
    (re.compile(r"\b(?:issue|ticket|tracker)s?\s*(?:#|no\.?\s*)?\d+", re.I), "cites a tracker number"),
]


def scanned_files() -> list[Path]:
    files = [p for top in ("tucker_ref", "validation", "tests") for p in sorted((ROOT / top).rglob("*.py"))
             if "__pycache__" not in p.parts]
    return files + sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@lru_cache(maxsize=None)
def page_structure(name: str):
    """``(numbered sections, run-in subsections like '1b', heading slugs)`` of docs/<page>.md, or None."""
    path = ROOT / "README.md" if name == "README" else DOCS / f"{name}.md"
    if not path.is_file():
        return None
    sections, subsections, slugs = set(), set(), set()
    fenced = False
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slugs.add(slug(heading.group(1)))
            numbered = re.match(r"##\s+(\d+)\.\s", line)
            current = numbered.group(1) if numbered else None
            if numbered:
                sections.add(current)
            continue
        runin = re.match(r"\*\*(\d+)([a-z])\.", line)
        if runin and runin.group(1) == current:
            subsections.add(runin.group(1) + runin.group(2))
    return frozenset(sections), frozenset(subsections), frozenset(slugs)


def _missing_sections(name: str, listing: str) -> list[str]:
    """The sections of one citation list (rule 1: a list, a range, run-in letters) that the page lacks."""
    structure = page_structure(name)
    if structure is None:
        return [f"{name}.md (no such page in docs/)"]
    sections, subsections, _ = structure
    missing = []
    for item in ITEM_RE.finditer(listing):
        first, last = item.group(1), item.group(2)
        wanted = [first] if last is None else [first, last]
        if last is not None and first.isdigit() and last.isdigit():
            wanted = [str(k) for k in range(int(first), int(last) + 1)]
        for sec in wanted:
            ok = sec in sections if sec.isdigit() else (sec in subsections and sec[:-1] in sections)
            if not ok:
                missing.append(f"{name}.md {SS}{sec}")
    return missing


def check_text(text: str, own_page: str | None) -> list[str]:
    """Problems of one file's text; ``own_page`` is the docs page the text is (None for code)."""
    problems = []
    lines = text.splitlines()

    def where(pos: int) -> str:
        n = text.count("\n", 0, pos)
        return f"line {n + 1}: {lines[n].strip()[:120]}"

    covered = []
    for m in SECTION_REF.finditer(text):
        covered.append((m.start(2), m.end(2)))
        for miss in _missing_sections(m.group(1), m.group(2)):
            problems.append(f"{where(m.start())} -> {miss} does not resolve")
    for m in ANCHOR_REF.finditer(text):
        structure = page_structure(m.group(1))
        if structure is None or m.group(2) not in structure[2]:
            problems.append(f"{where(m.start())} -> {m.group(1)}.md#{m.group(2)} does not resolve")
    for m in PAGE_REF.finditer(text):
        if not (DOCS / f"{m.group(1)}.md").is_file():
            problems.append(f"{where(m.start())} -> docs/{m.group(1)}.md does not exist")
    for m in BARE_LIST.finditer(text):
        if any(a <= m.start() < b for a, b in covered):
            continue
        if own_page is None:
            problems.append(f"{where(m.start())} -> a bare section sign names no page of docs/")
        else:
            for miss in _missing_sections(own_page, m.group(0)):
                problems.append(f"{where(m.start())} -> {miss} (this page's own section) does not resolve")
    forbidden = {}
    for pattern, why in FORBIDDEN:
        for m in pattern.finditer(text):
            forbidden.setdefault((text.count("\n", 0, m.start()), why), f"{where(m.start())} -> {why}")
    return problems + [forbidden[key] for key in sorted(forbidden)]


def _own_page(path: Path) -> str | None:
    if path.suffix != ".md":
        return None
    return "README" if path == ROOT / "README.md" else path.stem


def _code_fence_free(text: str) -> str:
    """The text with fenced code blocks blanked (line numbers kept), for pages of docs/."""
    return re.sub(r"```.*?```", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)


FILES = scanned_files()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_references_resolve(path):
    text = path.read_text(encoding="utf-8")
    own = _own_page(path)
    if own is not None:
        # Inside a page, code blocks are output or code: check them as code (no bare section
        # sign, no outside citation), the prose as prose.
        fences = "".join(m.group(0) + "\n" for m in re.finditer(r"```.*?```", text, flags=re.S))
        problems = check_text(_code_fence_free(text), own) + [f"(code block) {p}" for p in check_text(fences, None)]
    else:
        problems = check_text(text, None)
    assert not problems, f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_the_scan_sees_the_references():
    """The patterns match the references that are there (a silent regex would pass everything)."""
    count = sum(len(SECTION_REF.findall(p.read_text(encoding="utf-8"))) for p in FILES)
    assert count >= 60, count
    assert page_structure("theory")[0] >= {"1", "2", "3", "4", "5", "6"}
    assert page_structure("algorithms")[0] >= {"0", "1", "2", "3", "4", "5"}
    assert {"1a", "1b", "1c"} <= page_structure("algorithms")[1]
    assert {"variants", "worked-example"} <= page_structure("algorithms")[2]
    assert "2-robustness-to-small-core-singular-values" in page_structure("validation")[2]


@pytest.mark.parametrize("text, expected", [
    (f"see docs/theory.md {SS}5", []),
    (f"docs/algorithms.md {SS}1{SS}3", None),  # not a list form: the second sign is bare
    (f"docs/algorithms.md {SS}1–{SS}3 and {SS}5", []),
    (f"algorithms.md {SS}1b–1c", []),
    (f"docs/theory.md {SS}9", [f"theory.md {SS}9"]),
    (f"docs/theory.md {SS}3, {SS}8", [f"theory.md {SS}8"]),
    (f"docs/theory.md {SS}5–{SS}8", [f"theory.md {SS}7", f"theory.md {SS}8"]),
    (f"algorithms.md {SS}3z", [f"algorithms.md {SS}3z"]),
    (f"docs/{MISSING}.md {SS}1", [f"{MISSING}.md (no such page", f"docs/{MISSING}.md does not exist"]),
    ("docs/algorithms.md#variants", []),
    ("docs/algorithms.md" + "#nope", ["#nope does not resolve"]),
    ("docs/" + MISSING + ".md", [f"docs/{MISSING}.md does not exist"]),
    (f"as in {SS}2", ["bare section sign"]),
    ("(" + f"spec {SS}3 step 1b)", ["outside spec"]),
    ("Spec" + f" {SS}4: the bound", ["outside spec"]),
    ("(" + "spec, tolerance glossary)", ["outside spec"]),
    ("see issue" + " 5", ["tracker number"]),
    ("load_dataset(spec, **kwargs); spec_from_file_location(name)", []),
])
def test_check_text_fails_on_bad_references(text, expected):
    problems = check_text(text, None)
    if expected is None:
        assert problems
        return
    if not expected:
        assert problems == []
    for want in expected:
        assert any(want in got for got in problems), (want, problems)


def test_bare_sections_in_a_page_resolve_in_that_page():
    assert check_text(f"see {SS}5 and {SS}1–{SS}3", "algorithms") == []
    assert check_text(f"see {SS}6", "algorithms") and check_text(f"see {SS}6", "theory") == []
