"""Flow demo tests: the dequantised digits, the diabetes task, NLL units and a short end-to-end run."""

import json
import math

import numpy as np
import pytest
import torch

from hf_transfer.cli import main
from hf_transfer.data.digits import make_digits_task
from hf_transfer.data.tabular import FEATURE_NAMES, make_diabetes_task
from hf_transfer.flows import demo
from hf_transfer.flows.data import DequantizedDigits, bits_per_dim, nll_in_pixel_units


@pytest.fixture(scope="module")
def digits_task():
    return make_digits_task(shots_per_class=3, seed=0)


def test_dequantized_digits_range_and_noise(digits_task):
    training = DequantizedDigits(digits_task.target_train)
    first, second = training[0]["x"], training[0]["x"]
    assert first.shape == (64,)
    assert not torch.equal(first, second)  # fresh noise at every access
    pixels = digits_task.target_train[0]["pixels"].reshape(64)
    assert torch.all((first + 2.0) / training.scale >= pixels)
    assert torch.all((first + 2.0) / training.scale < pixels + 1)
    fixed = DequantizedDigits(digits_task.target_train, noise_seed=5)
    assert torch.equal(fixed[1]["x"], fixed[1]["x"])
    assert fixed[1]["condition"].dtype == torch.long


def test_log_jacobian_converts_to_pixel_units(digits_task):
    # A uniform density on [-2, 2)^64 is uniform on [0, 17)^64 in pixel units: 64 log 17 nats.
    data = DequantizedDigits(digits_task.target_test, noise_seed=0)
    uniform_nll_x = 64 * math.log(4.0)
    nll = nll_in_pixel_units(uniform_nll_x, data.log_jacobian)
    assert nll == pytest.approx(64 * math.log(17.0))
    assert bits_per_dim(nll, 64) == pytest.approx(math.log2(17.0))


def test_diabetes_task_splits():
    task = make_diabetes_task(shots_per_stratum=5, seed=1)
    assert len(task.source) == 235
    assert len(task.target_train) == 20
    assert len(task.target_pool) + len(task.target_test) == 207
    assert task.source[0]["x"].shape == (len(FEATURE_NAMES),)
    assert task.source[0]["condition"].shape == (1,)
    source_x = task.source[:]["x"].numpy()
    assert np.allclose(source_x.mean(0), 0.0, atol=1e-5)
    pool = {tuple(row) for row in task.target_pool[:]["x"].numpy().round(5)}
    test = {tuple(row) for row in task.target_test[:]["x"].numpy().round(5)}
    shots = {tuple(row) for row in task.target_train[:]["x"].numpy().round(5)}
    assert not pool & test
    assert shots <= pool


def test_diabetes_task_rejects_too_many_shots():
    with pytest.raises(ValueError, match="shots_per_stratum"):
        make_diabetes_task(shots_per_stratum=1000)


def test_unknown_dataset_rejected():
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        demo.make_flow_task("mnist", shots_per_class=3, seed=0)


def test_single_shot_rejected():
    with pytest.raises(ValueError, match="shots_per_class` must be at least 2"):
        demo.make_flow_task("digits", shots_per_class=1, seed=0)


def test_shot_split_keeps_every_class():
    task = demo.make_flow_task("digits", shots_per_class=3, seed=0)
    train_labels = {int(item["condition"]) for item in task.target_train}
    val_labels = {int(item["condition"]) for item in task.target_val}
    assert train_labels == val_labels == set(range(10))
    assert len(task.target_train) + len(task.target_val) == 30


@pytest.mark.parametrize("dataset", ["digits", "diabetes"])
def test_flow_demo_end_to_end(tmp_path, monkeypatch, dataset):
    monkeypatch.setattr(demo, "QUICK_BUDGET", (4, 3))
    metrics = demo.run_flow_demo(tmp_path, shots_per_class=3, seed=0, quick=True, dataset=dataset)
    written = json.loads((tmp_path / demo.METRICS_FILE_NAME).read_text())
    assert written["strategies"].keys() == metrics["strategies"].keys()
    assert set(metrics["strategies"]) == {
        "frozen_embedding (warm head)",
        "frozen_embedding (fresh head)",
        "full_finetune",
        "from_scratch",
    }
    for row in metrics["strategies"].values():
        assert math.isfinite(row["target_nll"])
        assert 1 <= row["steps"] <= 3
    assert metrics["unit"] == ("bits/dim" if dataset == "digits" else "nats")


def test_cli_flow_demo_prints_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "QUICK_BUDGET", (3, 2))
    code = main(["demo", "--model", "flow", "--dataset", "diabetes", "--quick", "-k", "2", "--seeds", "0", "1", "--output-dir", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Mean ± standard deviation over seeds [0, 1]" in printed
    assert "| frozen_embedding (warm head) |" in printed
    assert (tmp_path / "seed1" / demo.METRICS_FILE_NAME).is_file()


def test_format_flow_table_mean_and_spread():
    runs = [
        {"unit": "nats", "source": {"target_nll": 3.0}, "strategies": {"from_scratch": {"target_nll": value}}}
        for value in (1.0, 3.0)
    ]
    table = demo.format_flow_table(runs)
    assert "| from_scratch | 2.0000 ± 1.4142 | 1.0000, 3.0000 |" in table
