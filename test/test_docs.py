"""The README and docs/ as a front door: short, self-contained (every link resolves inside the repository),
free of project-management references, citing the papers, and showing the interfaces as they are."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and ![alt](target); the target ends at the first space or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Issue or pull-request numbers ("issue 19", "issues 19 and 22", "#19", "PR 12") and helper branch names
# ("h19b"). An instance id after a label ("Chair #3", "table #3") is product output, not a reference.
PROJECT_REFS = [
    re.compile(r"\bissues? #?\d", re.IGNORECASE),
    re.compile(r"\b(?:PR|pull request) #?\d", re.IGNORECASE),
    re.compile(r"(?<![A-Za-z] )(?<![A-Za-z0-9_#&])#\d+"),
    re.compile(r"\bh\d{2}[a-z]?\b"),
]


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", _without_code_blocks(page.read_text()),
                                                   re.MULTILINE)}


def test_pages_exist():
    names = {p.name for p in PAGES}
    for name in ("nodes.md", "parameters.md", "interfaces.md", "backends.md", "benchmarks.md", "faults.md",
                 "troubleshooting.md"):
        assert name in names, f"docs/{name} is missing"
    assert (ROOT / "LICENSE").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= 320, f"README.md has {lines} lines; the front door stays under ~300 (details go to docs/)"


def test_readme_cites_the_papers():
    text = README.read_text()
    for arxiv in ("2503.18135", "2603.16461"):
        assert f"arXiv:{arxiv}" in text, f"README.md does not cite arXiv:{arxiv}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_project_references(page: Path):
    text = page.read_text()
    assert "../shared" not in text, f"{page.name} points outside the repository (../shared)"
    for number, line in enumerate(text.splitlines(), 1):
        for pattern in PROJECT_REFS:
            match = pattern.search(line)
            assert match is None, f"{page.name}:{number}: project reference {match.group(0)!r} in: {line.strip()}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve_inside_the_repository(page: Path):
    text = _without_code_blocks(page.read_text())
    targets = LINK.findall(text)
    for target in targets:
        assert not re.match(r"[a-z]+://", target), f"{page.name}: link outside the repository: {target}"
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: link leaves the repository: {target}"
        assert resolved.exists(), f"{page.name}: broken link {target} (no {resolved.relative_to(ROOT)})"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading for #{anchor} in {resolved.name}"


def test_interface_definitions_match_the_files():
    """docs/interfaces.md shows each definition verbatim: a changed .msg/.srv/.action must change it too."""
    text = (ROOT / "docs" / "interfaces.md").read_text()
    shown = dict(re.findall(r"<!-- definition: (\S+) -->\n```\n(.*?)\n```", text, flags=re.DOTALL))
    files = sorted(p.relative_to(ROOT).as_posix() for d in ("action", "srv", "msg") for p in (ROOT / d).iterdir())
    assert sorted(shown) == files, "docs/interfaces.md must show every interface file once"
    for path, body in shown.items():
        assert body == (ROOT / path).read_text().rstrip("\n"), f"docs/interfaces.md: {path} differs from the file"


@pytest.mark.parametrize("node", ["mapping", "memory", "query", "segmentation"])
def test_nodes_page_lists_what_each_node_creates(node: str):
    """docs/nodes.md's table names exactly the private topics and services (`~/x`) the node's code creates."""
    source = (ROOT / "mllm3d_ros" / "ros" / f"{node}_node.py").read_text()
    created = set(re.findall(r"create_(?:publisher|service|subscription)\(\s*\w+,\s*\"~/(\w+)\"", source))
    assert created, f"no ~/ names found in {node}_node.py: the pattern no longer matches the code"
    table = (ROOT / "docs" / "nodes.md").read_text().split("## Behaviour")[0]
    listed = set()
    for names in re.findall(rf"`/mllm3d/{node}/([^`]+)`((?:, `\w+`)*)", table):
        listed.add(names[0])
        listed.update(re.findall(r"`(\w+)`", names[1]))
    assert listed == created, f"docs/nodes.md lists {sorted(listed)} for {node}; the code creates {sorted(created)}"


# The code, tests, benchmarks, scripts and interface definitions: the same rule for their comments,
# docstrings, help and log strings ("issue 19", "issue_12", "(#19)", "PR 12"). A label's instance id
# ("table #3") and a colour ("#555555") are not references.
CODE_DIRS = ("mllm3d_ros", "benchmarks", "scripts", "launch", "config", "action", "srv", "msg", "test")
CODE_REFS = [
    re.compile(r"(?<![A-Za-z])issues?[ _-]#?\d", re.IGNORECASE),
    re.compile(r"\((?:issue |PR )?#\d+\)", re.IGNORECASE),
    re.compile(r"\b(?:PR|pull request) #?\d", re.IGNORECASE),
]


def _tracked_files(dirs: tuple[str, ...]) -> list[Path]:
    """The files git tracks under `dirs` (every file there when this is no git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *dirs], cwd=ROOT, capture_output=True, check=True,
                             timeout=30).stdout.decode()
        paths = [ROOT / name for name in out.split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        paths = []
    if not paths:
        paths = [p for d in dirs for p in (ROOT / d).rglob("*") if p.is_file()]
    return sorted(p for p in paths if p.is_file() and p != Path(__file__).resolve())


def test_code_has_no_project_references():
    files = _tracked_files(CODE_DIRS)
    assert any(p.name == "object_memory.py" for p in files), "no code files found: the scan looks in the wrong place"
    found = []
    for path in files:
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in CODE_REFS:
                match = pattern.search(line)
                if match:
                    found.append(f"{path.relative_to(ROOT).as_posix()}:{number}: {match.group(0)!r} in: {line.strip()}")
    assert not found, "references to the project's internal issue tracker:\n" + "\n".join(found)
