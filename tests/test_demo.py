import json

import pytest
import torch

from hf_transfer import TransferConfig, TransferDiffusionPipeline
from hf_transfer.cli import main


def test_quick_demo_writes_its_files(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    cache_dir = tmp_path / "cache"
    exit_code = main(["demo", "--quick", "--output-dir", str(output_dir), "--cache-dir", str(cache_dir), "--shots-per-class", "3"])
    assert exit_code == 0

    metrics = json.loads((output_dir / "metrics.json").read_text())
    labels = set(metrics["strategies"])
    assert labels == {"frozen_embedding (warm head)", "frozen_embedding (fresh head)", "lora", "full_finetune", "from_scratch"}
    for row in metrics["strategies"].values():
        assert 0.0 <= row["class_consistency"] <= 1.0
        assert row["frechet_distance"] >= 0.0
    assert metrics["classifier_accuracy"] > 0.8

    for name in ("frozen_embedding", "frozen_embedding_fresh", "lora", "full_finetune", "from_scratch"):
        assert (output_dir / f"samples_{name}.png").stat().st_size > 0

    pipeline = TransferDiffusionPipeline.from_pretrained(output_dir / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(torch.tensor([0, 9]), num_inference_steps=2, output_type="pt").images
    assert images.shape == (2, 1, 8, 8)
    assert TransferConfig.from_pretrained(output_dir / "pipeline").strategy == "frozen_embedding"

    table = capsys.readouterr().out
    assert "| from_scratch |" in table

    # A second run reuses the cached source model instead of training it again.
    cached = list(cache_dir.iterdir())
    assert len(cached) == 1
    main(["demo", "--quick", "--output-dir", str(tmp_path / "again"), "--cache-dir", str(cache_dir), "--shots-per-class", "3", "--strategies", "from_scratch"])
    assert list(cache_dir.iterdir()) == cached


def test_demo_rejects_too_many_shots(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--quick", "--output-dir", str(tmp_path / "out"), "--shots-per-class", "500"])
    assert exit_info.value.code == 2
    assert "`shots_per_class` must lie in [1, 35]" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_demo_rejects_unknown_strategy_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--quick", "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--strategies", "frozen"])
    assert exit_info.value.code == 2
    assert "Unknown strategy 'frozen'" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_demo_settings_reject_too_few_shots():
    from hf_transfer.demo import DemoSettings

    with pytest.raises(ValueError, match="use at least 3 shots per class"):
        DemoSettings(shots_per_class=2)
