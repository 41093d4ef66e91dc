"""The README and the docs site: short README, true set-up commands, links that resolve,
a strict MkDocs build, and every measured figure's date, commit and command."""

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SETUP = [
    'pip install -e ".[dev]" && python src/train.py -m model.latent=1,10 beta=1e-5,1',
    "python -m pytest -q",
]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
MEASURED = re.compile(r"^Measured \d{4}-\d{2}-\d{2}\b.*\bcommits? [0-9a-f]{7}\b.*`[^`]+`")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where links are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (and so MkDocs) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    """Every relative link of a Markdown file whose file or heading does not exist."""
    bad = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{path.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{path.name}: {target} (no heading makes #{anchor})")
    return bad


def test_readme_is_a_five_minute_read():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; keep it to 250"


def test_readme_setup_commands_are_the_two_commands():
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", setup, re.S)
    assert block, "README.md's Set-up section has no bash block"
    assert block.group(1).splitlines() == SETUP


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(path):
    assert broken_links(path) == []


def test_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Some `code` here\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#some-code-here) [gone](nosuch.md) [anchor](a.md#nosuch) "
        "`[in a span](nosuch2.md)` [web](https://example.org/x.md)\n"
    )
    assert broken_links(page) == [
        "b.md: nosuch.md (no such file)",
        "b.md: a.md#nosuch (no heading makes #nosuch)",
    ]


def test_every_results_block_names_its_date_commit_and_command():
    text = (DOCS / "results.md").read_text()
    blocks = re.split(r"^### ", text, flags=re.M)[1:]
    assert len(blocks) >= 10
    for block in blocks:
        title = block.splitlines()[0]
        measured = [line for line in block.splitlines() if line.startswith("Measured ")]
        assert measured, f"results.md, {title!r}: no 'Measured <date> · commit <hash> · `cmd`'"
        # the first paragraph under the title, or under its first dated sub-heading
        first = next(p for p in block.split("\n\n")[1:] if not p.startswith("#"))
        joined = " ".join(first.split("\n"))
        assert MEASURED.match(joined), f"results.md, {title!r}: {joined[:120]!r}"


def test_results_commits_are_in_the_history():
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
    )
    if git.returncode != 0 or git.stdout.strip() != "false":
        pytest.skip("needs a full git clone to look the commits up")
    text = (DOCS / "results.md").read_text()
    named = set(re.findall(r"\bcommits?\s+([0-9a-f]{7})\b", text))
    named |= set(re.findall(r"·\s+([0-9a-f]{7})\s*\|", text))  # the per-row column
    assert len(named) >= 10
    missing = [
        h
        for h in sorted(named)
        if subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", f"{h}^{{commit}}"], capture_output=True
        ).returncode
        != 0
    ]
    assert missing == []


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs not installed (pip install -e '.[dev]')")
    site = tmp_path / "site"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert {
        "index",
        "configuration",
        "metrics",
        "sweeps",
        "runs",
        "firmware",
        "results",
        "references",
    } <= pages
    for page in pages - {"index"}:
        assert (site / page / "index.html").is_file(), page
