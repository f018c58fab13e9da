"""Where a trained model predicts: device names, and batches moved to the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radpath.batch.dataset import PatientBagDataset
from radpath.engine.config import TrainerConfig
from radpath.engine.devices import batch_to, prediction_device, resolve_device
from radpath.errors import RadpathError
from radpath.evaluation.predict import predict_dataset


def _visible_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_finds_a_gpu_when_one_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    _visible_gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    _visible_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(("name", "gpus", "message"), [
    ("cuda", 0, "0 visible CUDA device"), ("cuda:2", 2, "2 visible CUDA device"),
    ("tpu", 0, "not one of"), ("gpu please", 0, "not one of")])
def test_a_device_the_machine_lacks_is_refused(monkeypatch: pytest.MonkeyPatch, name: str,
                                               gpus: int, message: str) -> None:
    _visible_gpus(monkeypatch, gpus)
    with pytest.raises(RadpathError, match=message):
        resolve_device(name)


def test_folds_predict_where_they_trained(monkeypatch: pytest.MonkeyPatch) -> None:
    _visible_gpus(monkeypatch, 1)
    assert prediction_device(TrainerConfig(accelerator="cpu")) == torch.device("cpu")
    assert prediction_device(TrainerConfig(accelerator="auto")) == torch.device("cuda")
    _visible_gpus(monkeypatch, 0)
    assert prediction_device(TrainerConfig(accelerator="auto")) == torch.device("cpu")


def test_batch_to_moves_tensors_and_keeps_the_rest() -> None:
    batch = {"mammo": torch.zeros(2, 1, 4, 4), "unit_id": ["a", "b"], "label": torch.ones(2)}
    moved = batch_to(batch, torch.device("meta"))
    assert moved["mammo"].is_meta and moved["label"].is_meta
    assert moved["unit_id"] == ["a", "b"] and batch["mammo"].device.type == "cpu"


def test_predictions_run_on_the_device_of_the_weights(tiny_run, tiny_manifest) -> None:
    from radpath.data.workflow import read_paired
    from radpath.engine.checkpoint import load_run

    run = load_run(tiny_run)
    dataset = PatientBagDataset(read_paired([tiny_manifest], seed=run.config.seed),
                                run.config.data, split="val",
                                domains=run.record.get("domains", []))
    seen = []

    def predictor(batch: dict) -> dict:
        # The weights sit on the meta device: the batch must have followed them there.
        seen.append({k for k, v in batch.items() if torch.is_tensor(v) and not v.is_meta})
        units = batch["label"].shape[0]
        return {f"{m}_prob": torch.full((units,), 0.5) for m in ("mammo", "histo", "fused")}

    run.algorithm.to("meta")
    predictions = predict_dataset(run.algorithm, dataset, predictor=predictor)
    assert seen and all(not left for left in seen)
    assert len(predictions) == len(dataset) and np.all(predictions.prob["fused"] == 0.5)
