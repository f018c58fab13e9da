"""The front page and the docs: short, cited, generated parts fresh, commands that run."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
GETTING_STARTED = REPO_ROOT / "docs" / "getting-started.md"
CITATION = ("Bridging radiology and pathology: domain-generalized cross-modal learning")
# A shell block is skipped, by design, when it holds one of these commands.
SKIPPED_BY_DESIGN = {
    "make demo": "installs .venv and trains for minutes; tests/test_demo.py runs the same "
                 "stages and CI runs make test itself",
    "make test": "is what CI runs; running it here would run this test inside itself",
    "radpath serve": "serves until stopped; tests/serve exercise the app and the command",
}
# Pages whose `radpath serve` block is started as printed and asked for its health.
SERVED = ("README.md",)
HEALTH = "http://127.0.0.1:8000/v1/health"


def _script(name: str) -> ModuleType:
    path = REPO_ROOT / "scripts" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"radpath_scripts_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def code_blocks(page: Path, language: str) -> list[str]:
    """The fenced ``language`` blocks of a Markdown page, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.S | re.M)


def test_readme_is_a_short_front_page_with_the_citation():
    text = README.read_text()
    assert len(text.splitlines()) <= 150, "README.md is a front page: at most 150 lines"
    assert CITATION in " ".join(text.split())
    assert "npj Digital Medicine" in text and "251" in text
    # Provenance (commits) belongs in docs/ and benchmarks/results, not the front page.
    hashes = [word for word in re.findall(r"\b[0-9a-f]{7,40}\b", text)
              if re.search(r"\d", word) and re.search(r"[a-f]", word)]
    assert not hashes, f"commit hashes on the front page: {hashes}"


def test_citation_cff_names_the_paper():
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"].startswith("1.2")
    cited = cff["preferred-citation"]
    assert CITATION in " ".join(cited["title"].split())
    assert (cited["journal"], cited["volume"], cited["start"], cited["year"]) == (
        "npj Digital Medicine", 9, 251, 2026)


def test_generated_docs_are_fresh():
    gen = _script("gen_docs")
    stale = [str(path.relative_to(REPO_ROOT)) for path in gen.stale()]
    assert not stale, (f"stale generated docs {stale}: a config model or a results file "
                       f"changed; regenerate with {gen.COMMAND} and commit the result")


def test_readme_results_table_is_the_scripts_output():
    table = _script("results_table").render()
    text = README.read_text()
    block = text[text.index("<!-- results:begin -->"):text.index("<!-- results:end -->")]
    assert table in block
    # The figures really come from the files: the recipe's seed 0 row of its table.
    encoders = (REPO_ROOT / "benchmarks/results/real_cpu_cv_encoders.md").read_text()
    seed0 = re.search(r"\| erm \| histo \| (\d\.\d{3} \[[^]]+\])", encoders.split(
        "(two0)")[1]).group(1)
    assert seed0 in table


def test_configuration_reference_lists_every_field():
    from radpath.engine.config import TrainConfig

    page = (REPO_ROOT / "docs/reference/configuration.md").read_text()

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            nested = field.annotation
            if isinstance(nested, type) and hasattr(nested, "model_fields"):
                yield from keys(nested, f"{prefix}{name}.")
            yield f"{prefix}{name}"

    missing = [key for key in keys(TrainConfig) if f"| `{key}` |" not in page]
    assert not missing, f"not in the configuration reference: {missing}"
    assert "| `optim.lr` | float, > 0 | `0.0003` |" in page


def test_config_reference_reads_descriptions_from_all_three_places():
    reference = _script("config_reference")
    from radpath.engine.config import OptimConfig, PretrainConfig, TrainerConfig

    assert "snapshot" in reference._described(OptimConfig)["cycles"]  # Field(description=)
    assert "masked" in reference._described(PretrainConfig)["mask_ratio"]  # Attributes:
    assert "torch.compile" in reference._described(TrainerConfig)["compile"]  # a comment


def _fresh_layout(tmp_path: Path) -> dict[str, str]:
    """A working folder laid out as a clone after ``make``: ``.venv`` and ``configs``, and
    an environment whose PATH holds no radpath until the README's activation line."""
    venv = REPO_ROOT / ".venv"
    if not (venv / "bin" / "activate").is_file():
        pytest.skip(f"{venv} is absent: the README's commands assume the set-up `make` does")
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "configs").symlink_to(REPO_ROOT / "configs")
    # One thread each: the suite's other worker shares the two cores.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    # Some processors need these for OpenBLAS to compute correctly (never change them).
    env.update({k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")})
    return env


def _run_page(page: Path, tmp_path: Path) -> list[str]:
    """Run every fast shell block of ``page``, then its Python blocks, as written."""
    env = _fresh_layout(tmp_path)
    ran, skipped = [], []
    served = []
    for block in code_blocks(page, "bash"):
        if "radpath serve" in block and page.name in SERVED:
            served.append(block)
            continue
        reasons = [why for command, why in SKIPPED_BY_DESIGN.items() if command in block]
        if reasons:
            skipped.append(reasons[0])
            continue
        # Each block in a new shell, as a reader pastes it; activation carries over only
        # because every block that needs radpath activates (or the page says to once).
        script = "set -euo pipefail\nsource .venv/bin/activate\n" + block \
            if "source .venv/bin/activate" not in block else "set -euo pipefail\n" + block
        _check(subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=900), page, block)
        ran.append(block)
    for block in code_blocks(page, "python"):
        _check(subprocess.run([str(tmp_path / ".venv/bin/python"), "-c", block],
                              cwd=tmp_path, env=env, text=True, capture_output=True,
                              timeout=900), page, block)
        ran.append(block)
    for block in served:
        _serve_as_printed(block, tmp_path, env, page)
        ran.append(block)
    assert ran, f"{page.name}: no block ran"
    return skipped


def _serve_as_printed(block: str, cwd: Path, env: dict[str, str], page: Path) -> None:
    """Start ``block`` (a ``radpath serve`` line), wait for its health answer, stop it."""
    script = "set -euo pipefail\nsource .venv/bin/activate\nexec " + block.strip()
    server = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, text=True,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        health = _poll(HEALTH, server, deadline=time.monotonic() + 120)
        assert health is not None, (f"{page.name}: the server never answered:\n{block}\n"
                                    f"--- stderr ---\n{_stop(server)[-3000:]}")
        assert health["status"] == "ok"
        if "--thresholds" in block:
            assert health["thresholds"], f"{page.name}: served without thresholds:\n{block}"
    finally:
        _stop(server)


def _poll(url: str, server: subprocess.Popen, deadline: float) -> dict | None:
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.load(answer)
        except OSError:
            time.sleep(1)
    return None


def _stop(server: subprocess.Popen) -> str:
    """Stop the server's whole session; what it wrote to stderr."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    try:
        return server.communicate(timeout=30)[1] or ""
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        return server.communicate()[1] or ""


def _check(result: subprocess.CompletedProcess, page: Path, block: str) -> None:
    assert result.returncode == 0, (f"{page.name}: a block failed as written:\n{block}\n"
                                    f"--- stderr ---\n{result.stderr[-3000:]}")


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    skipped = _run_page(README, tmp_path)
    assert skipped == [SKIPPED_BY_DESIGN["make demo"]]  # the set-up block, and only it
    assert (tmp_path / "why" / "explanation.json").is_file()
    assert (tmp_path / "eval" / "mine" / "metrics.json").is_file()


@pytest.mark.slow
def test_getting_started_commands_run_as_written(tmp_path):
    skipped = _run_page(GETTING_STARTED, tmp_path)
    assert set(skipped) == {SKIPPED_BY_DESIGN["make demo"], SKIPPED_BY_DESIGN["radpath serve"]}
    assert (tmp_path / "why-python" / "explanation.json").is_file()


def test_readme_activation_is_what_puts_radpath_on_path(tmp_path):
    """Without the activation line the README's commands would not be found."""
    env = _fresh_layout(tmp_path)
    bare = subprocess.run(["bash", "-c", "radpath --version"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert bare.returncode == 127  # command not found: the test layout is really fresh
    active = subprocess.run(["bash", "-c", "source .venv/bin/activate && radpath --version"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert active.returncode == 0 and active.stdout.startswith("radpath ")
