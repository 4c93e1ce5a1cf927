"""Every fenced code block of README.md and docs/*.md runs as pasted, and every link points into the repository.

Blocks, by their language tag:

* ``bash``: each command (comments dropped, ``\\`` continuations joined) runs through ``bash`` in a fresh
  temporary directory per page, holding a copy of ``examples/``, with the installed ``toymodels`` on PATH.
  A page's blocks run in order in that directory, so a later block may read what an earlier one wrote.
  Only ``toymodels ...`` commands and the few commands of ``NOT_RUN`` (each with its reason) may appear;
* ``python``: the block, as a file, runs with this interpreter in the page's temporary directory;
* ``text`` (output, diagrams): not run. Any other tag, or none, fails: a block says what it is.

Every subprocess gets ``MPLBACKEND=Agg`` and a JAX compilation cache shared by the blocks; nothing is
written into the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# command (exactly as in the block) -> why the test does not run it
NOT_RUN = {
    "pip install -e . && toymodels run analogy-15deg":
        "installs the package into the environment and runs the full main preset (about a minute); the "
        "preset is rerun and compared with its committed results by tests/test_reproduce.py",
    'pip install -e ".[test]" && python -m pytest -q':
        "installs the package and runs the whole test suite, this test included",
}
RUN_LANGS = {"bash", "python"}
# "console": commands for a machine this test cannot be (a GPU node, several hosts); allowed only on the pages
# below, and what can run on CPU is tested there instead (tests/test_sharding.py: 4 devices, 2 processes)
TEXT_LANGS = {"text", "console"}
CONSOLE_PAGES = {"docs/scale.md": 3}
TIMEOUT = 300

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, body, line number) of every fenced block of a page."""
    text = page.read_text()
    return [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    """A bash block's commands, one per line as bash reads them: comment lines dropped, ``\\`` continuations
    joined (a trailing comment stays; bash ignores it)."""
    out, cur = [], ""
    for raw in body.splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            cur += line[:-1].rstrip() + " "
            continue
        out.append(cur + line)
        cur = ""
    return out


def words(cmd: str) -> list[str]:
    """A command's words as bash splits them, its trailing comment dropped."""
    return shlex.split(cmd, comments=True)


def not_run_reason(cmd: str) -> str | None:
    return next((reason for c, reason in NOT_RUN.items() if words(c) == words(cmd)), None)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The blocks' environment: Agg figures, this interpreter's ``toymodels`` first on PATH, and one JAX
    compilation cache shared by the blocks (several compile the same programs; the cache changes no
    result, only how often XLA compiles)."""
    env = dict(os.environ, MPLBACKEND="Agg", JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax-cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def _tail(p: subprocess.CompletedProcess) -> str:
    return (p.stdout[-1500:] + "\n--- stderr ---\n" + p.stderr[-2500:]).strip()


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_block_runs_as_pasted(page, tmp_path, env):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    failed, ran = [], 0
    for i, (lang, body, line) in enumerate(blocks(page)):
        where = f"{page.relative_to(ROOT)}:{line}"
        assert lang in RUN_LANGS | TEXT_LANGS, (f"{where}: a fenced block needs a language tag, one of "
                                                f"{sorted(RUN_LANGS | TEXT_LANGS)} (text: not run); got {lang!r}")
        if lang == "python":
            script = tmp_path / f"block_{i}.py"
            script.write_text(body)
            p = _run([sys.executable, str(script)], tmp_path, env)
            ran += 1
            if p.returncode != 0:
                failed.append(f"{where}: the python block exited with {p.returncode}\n{_tail(p)}")
        elif lang == "bash":
            for cmd in commands(body):
                if not_run_reason(cmd):
                    continue
                w = words(cmd)
                assert w[0] == "toymodels" and not {"&&", "||", "|", ";", ">", "<"} & set(w), (
                    f"{where}: {cmd!r} is neither one toymodels command nor listed in NOT_RUN with a reason")
                p = _run(["bash", "-c", cmd], tmp_path, env)
                ran += 1
                if p.returncode != 0:
                    failed.append(f"{where}: `{cmd}` exited with {p.returncode}\n{_tail(p)}")
    assert not failed, f"{len(failed)} of {ran} blocks and commands failed:\n\n" + "\n\n".join(failed)


def test_not_run_is_small_and_every_entry_is_on_a_page():
    assert len(NOT_RUN) <= 4, "only commands that are long by nature may be left out"
    for page in PAGES:   # console blocks: only where the commands need another machine, and few
        rel = str(page.relative_to(ROOT))
        n = sum(m.group(1).strip() == "console" for m in FENCE.finditer(page.read_text()))
        assert n <= CONSOLE_PAGES.get(rel, 0), f"{rel}: {n} console blocks (not run); allowed {CONSOLE_PAGES.get(rel, 0)}"
    assert all(len(reason) > 20 for reason in NOT_RUN.values())
    on_pages = [words(cmd) for page in PAGES for lang, body, _ in blocks(page) if lang == "bash"
                for cmd in commands(body)]
    stale = [cmd for cmd in NOT_RUN if words(cmd) not in on_pages]
    assert not stale, f"NOT_RUN lists commands that no page holds: {stale}"


def test_the_readme_keeps_its_two_commands():
    bash = [cmd for lang, body, _ in blocks(ROOT / "README.md") if lang == "bash" for cmd in commands(body)]
    assert [words(c) for c in bash[:2]] == [words(c) for c in NOT_RUN]


# --- links --------------------------------------------------------------------------------------------
LINK = re.compile(r'(?:\]\(|(?:href|src)=")([^)"\s]+)')


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    h = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h)
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    found = {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}
    return found | set(re.findall(r'<a id="([^"]+)"', text))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_points_into_the_repository(page):
    text = FENCE.sub("", page.read_text())
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z+.-]*:", target):   # a URL
            continue
        path, _, frag = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or ROOT not in (dest, *dest.parents):
            bad.append(f"{target}: no such file in the repository")
        elif frag and dest.suffix == ".md" and frag not in anchors(dest):
            bad.append(f"{target}: no heading or anchor #{frag} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


# --- the generated blocks -----------------------------------------------------------------------------
def _readme_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_script", ROOT / "experiments" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_blocks_are_current():
    """Each generated block is in exactly one page and reads as ``python experiments/readme.py`` would write
    it from the committed results: a changed table or result shows up here until the pages are regenerated."""
    stale = [str(path.relative_to(ROOT)) for path, text in _readme_script().render().items() if path.read_text() != text]
    assert not stale, f"run `python experiments/readme.py`: generated blocks out of date in {stale}"


def test_relink_makes_paths_relative_to_the_page():
    readme = _readme_script()
    body = ('<a href="figures/a.png"><img src="figures/a.png"></a> [t](results/x/t.md) [r](docs/robustness.md) '
            "[h](#here) [u](https://example.org/x)")
    assert readme.relink(body, ROOT / "README.md") == body
    assert readme.relink(body, ROOT / "docs" / "lab.md") == (
        '<a href="../figures/a.png"><img src="../figures/a.png"></a> [t](../results/x/t.md) [r](robustness.md) '
        "[h](#here) [u](https://example.org/x)")
