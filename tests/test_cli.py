import json
import re
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from radpath.cli.main import _register_commands, app
from radpath.data.manifest import read_manifest
from tests.conftest import REPO_ROOT

runner = CliRunner()
_register_commands()


def test_help_is_instant_and_imports_no_heavy_module():
    code = ("import sys; from radpath.cli.main import main; sys.argv=['radpath','--help'];\n"
            "try: main()\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'numpy', 'pydicom', 'cv2') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ingest" in done.stdout and "HEAVY []" in done.stdout
    assert time.perf_counter() - started < 10


def test_import_radpath_stays_light():
    code = ("import sys, radpath\n"
            "print(sorted(m for m in ('typer', 'numpy', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.realdata
def test_ingest_mias_command(mias_dir, tmp_path):
    out = tmp_path / "mias.csv"
    result = runner.invoke(app, ["ingest", "mias", str(mias_dir), "--out", str(out),
                                 "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "194 images, 97 patients, 75 lesions" in result.output.replace("\n", " ")
    assert (tmp_path / "skipped.csv").read_text().strip() == "path,reason"


def test_ingest_exits_nonzero_when_nothing_ingested(tmp_path):
    (tmp_path / "data" / "benign").mkdir(parents=True)
    (tmp_path / "data" / "benign" / "x.png").write_text("not an image")
    done = subprocess.run([sys.executable, "-m", "radpath", "ingest", "folder",
                           str(tmp_path / "data"), "--modality", "mammo",
                           "--out", str(tmp_path / "m.csv")], capture_output=True, text=True)
    assert done.returncode == 1
    assert "nothing could be ingested" in done.stderr
    assert "x.png" in (tmp_path / "skipped.csv").read_text()


def test_benchmark_cross_validation_command(tiny_manifest, tmp_path):
    result = runner.invoke(app, [
        "benchmark", "--protocol", "cv", "--folds", "2", "--algorithms", "erm",
        "--manifest", str(tiny_manifest), "--out", str(tmp_path / "cv"),
        "--config", str(REPO_ROOT / "configs" / "tiny.yaml"),
        "--checkpoint", "last", "--val-fraction", "0.4", "--set", "optim.epochs=1",
        "--set", f"data.cache_dir={tmp_path / 'cache'}", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "2-fold cross-validation" in result.output and "checkpoint: last epoch" in result.output
    # The table is rendered for the terminal (rows whole, not Markdown source); the file
    # keeps the Markdown.
    assert re.search(r"^\s*erm\s+mammo\s+\d\.\d{3}", result.output, re.M), result.output
    assert "| erm | mammo |" not in result.output
    assert "| erm | mammo |" in (tmp_path / "cv" / "cv.md").read_text()
    for fold in ("fold-1", "fold-2"):
        fold_manifest = read_manifest(tmp_path / "cv" / fold / "manifest.csv")
        units = {s: {r.pair_id or r.patient_id for r in fold_manifest if r.split == s}
                 for s in ("train", "val")}
        # 4 or 5 training units a fold: 2 in validation at 0.4, 1 at the default 0.15.
        assert len(units["val"]) == round(0.4 * sum(map(len, units.values()))) == 2, units
    refused = runner.invoke(app, ["benchmark", "--protocol", "cv", "--adapt", "tent",
                                  "--manifest", str(tiny_manifest), "--out", str(tmp_path)])
    assert refused.exit_code != 0 and "--protocol lodo" in str(refused.exception)
    for option, message in (("0", "between 0 and 1"), ("1.5", "between 0 and 1")):
        refused = runner.invoke(app, ["benchmark", "--protocol", "cv", "--val-fraction",
                                      option, "--manifest", str(tiny_manifest),
                                      "--out", str(tmp_path)])
        assert refused.exit_code != 0 and message in str(refused.exception), option
    refused = runner.invoke(app, ["benchmark", "--val-fraction", "0.2", "--manifest",
                                  str(tiny_manifest), "--out", str(tmp_path)])
    assert refused.exit_code != 0 and "--protocol cv" in str(refused.exception)


def test_benchmark_cross_validation_by_column(tiny_manifest, tmp_path):
    common = ["benchmark", "--protocol", "cv", "--algorithms", "erm", "--manifest",
              str(tiny_manifest), "--config", str(REPO_ROOT / "configs" / "tiny.yaml"),
              "--set", "optim.epochs=1", "--set", f"data.cache_dir={tmp_path / 'cache'}",
              "--workers", "1"]
    # The tiny cohort's split column holds whole units (pairs are split together).
    result = runner.invoke(app, [*common, "--group", "split", "--out", str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    assert "leave-one-group-out over 2 groups" in result.output
    for column, message in (("colour", "not a manifest column"),
                            ("domain", "has records in groups")):
        refused = runner.invoke(app, [*common, "--group", column, "--out", str(tmp_path)])
        assert refused.exit_code != 0 and message in str(refused.exception), column


def test_evaluate_command_prints_auc_and_localisation(tiny_run, tiny_manifest, tmp_path):
    result = runner.invoke(app, ["evaluate", "--run", str(tiny_run), "--manifest",
                                 str(tiny_manifest), "--out", str(tmp_path / "eval"),
                                 "--split", "val", "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("malignancy" in line and "AUC" in line and "(n=" in line for line in lines)
    assert any("localisation" in line and "hit rate" in line for line in lines)
    assert "per-unit probabilities" in result.output
    assert (tmp_path / "eval" / "predictions.csv").is_file()


def test_evaluate_scores_several_runs_as_one_ensemble(tiny_run, second_tiny_run,
                                                      tiny_manifest, tmp_path):
    out = tmp_path / "both"
    result = runner.invoke(app, ["evaluate", "--run", str(tiny_run), "--run",
                                 str(second_tiny_run), "--manifest", str(tiny_manifest),
                                 "--out", str(out), "--split", "val", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "ensemble: mean logit of 2 runs per unit" in result.output
    rows = json.loads((out / "metrics.json").read_text())
    assert any(r["metric"] == "auc" and r["value"] is not None for r in rows)
    report = (out / "report.html").read_text()
    assert str(tiny_run) in report and str(second_tiny_run) in report


def test_evaluate_on_a_device_the_machine_lacks_says_so(tiny_run, tiny_manifest, tmp_path,
                                                        monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = runner.invoke(app, ["evaluate", "--run", str(tiny_run), "--manifest",
                                 str(tiny_manifest), "--out", str(tmp_path / "eval"),
                                 "--split", "val", "--device", "cuda:0"])
    assert result.exit_code != 0
    assert "0 visible CUDA device(s); use --device cpu" in str(result.exception)
    assert not (tmp_path / "eval").exists()


def test_flags_show_no_value_type_in_help():
    from typer.testing import CliRunner

    from radpath.cli.main import _register_commands, app

    _register_commands()
    for args in (["--help"], ["train", "--help"], ["ingest", "--help"]):
        result = CliRunner().invoke(app, args, terminal_width=100)
        assert result.exit_code == 0
        assert "<bool>" not in result.output, args
    train_help = CliRunner().invoke(app, ["train", "--help"], terminal_width=100).output
    assert "<path>" in train_help  # options that take a value still say which


def test_hints_name_a_command_that_runs(tmp_path, monkeypatch):
    from radpath.cli import hints

    program = tmp_path / "venv" / "bin" / "radpath"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [str(program)])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert hints.radpath_command() == "venv/bin/radpath"  # not on PATH: its path
    monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")
    assert hints.radpath_command() == "radpath"  # on PATH, the same program
    assert hints.shown_path(tmp_path / "demo-out" / "run") == "demo-out/run"
    assert hints.shown_path("/elsewhere/run") == "/elsewhere/run"


def test_demo_prints_its_serve_hint_whole(tmp_path, monkeypatch, capsys):
    """On a narrow terminal the hint still comes out on one line, ready to copy."""
    import rich.console

    from radpath.cli import demo_command

    out = tmp_path / ("a-rather-long-folder-name-" * 4)
    out.mkdir()
    (out / "summary.txt").write_text("fused  AUC 0.900 [0.800, 1.000]  p min 0.010\n")
    paths = {"summary": out / "summary.txt", "report": out / "report.html", "run": out / "run"}
    monkeypatch.setattr("radpath.demo.run_demo", lambda *a, **k: paths)
    monkeypatch.setattr(demo_command, "console", rich.console.Console(width=40, stderr=True))
    monkeypatch.setattr("sys.argv", ["/nowhere/bin/radpath"])
    demo_command.demo(out=out, patients=4, seed=0, workers=1)
    printed = capsys.readouterr().err
    assert f"/nowhere/bin/radpath serve --run {out / 'run'}" in printed.splitlines()[-1]
    assert "fused  AUC 0.900 [0.800, 1.000]  p min 0.010" in printed
