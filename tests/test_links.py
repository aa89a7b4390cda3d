"""What the README, docs/*.md and docker-compose.yml point at is in the repository: every
relative Markdown link resolves to a file or folder of this checkout (not outside it), and
every repository path docker-compose.yml names (mounts, and the files its comments cite)
exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMPOSE_FILE = ROOT / "docker-compose.yml"

# [text](target "title") and reference definitions "[name]: target".
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)
# In docker-compose.yml: ./anything, or a path into one of the repository's folders, or a
# top-level file by its extension; an absolute path (inside a container) is not ours.
COMPOSE_PATH = re.compile(
    r"(?<![\w/.:-])(?:\./[\w./-]+|(?:deploy|docs|examples|benchmarks|migrations)/[\w./-]+"
    r"|[\w-]+\.(?:md|ya?ml|conf|toml|lock|json|txt))"
)
# The operator's data folder: a bind mount compose creates, never part of the repository.
NOT_IN_REPO = {"./data"}


def _without_code(text: str) -> str:
    """Markdown without fenced code blocks (examples there are not links)."""
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)


def _inside_repo(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    text = _without_code(document.read_text())
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    broken = []
    for target in targets:
        if EXTERNAL.match(target):
            continue
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not _inside_repo(path) or not path.exists():
            broken.append(target)
    assert broken == [], f"{document.name} links to what the repository lacks: {broken}"


def test_the_link_check_sees_links_and_catches_a_broken_one(tmp_path: Path) -> None:
    sample = "[ok](docs/api.md#auth) [x](https://e.org) [gone](docs/nope.md)\n[ref]: ../out.md\n"
    found = INLINE_LINK.findall(sample) + REFERENCE_LINK.findall(sample)
    assert found == ["docs/api.md#auth", "https://e.org", "docs/nope.md", "../out.md"]
    assert (ROOT / "docs/api.md").exists() and not (ROOT / "docs/nope.md").exists()
    assert not _inside_repo(ROOT / "../out.md")


def test_every_repository_path_docker_compose_names_exists() -> None:
    cited = set(COMPOSE_PATH.findall(COMPOSE_FILE.read_text())) - NOT_IN_REPO
    assert {"./deploy/nginx.conf", "./deploy/prometheus.yml", "docs/operations.md"} <= cited
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    assert missing == [], f"docker-compose.yml names what the repository lacks: {missing}"
