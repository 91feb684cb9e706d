"""Summaries of the known-truth benchmark: blow-up counts, target ratios, the negative-control check, settings."""

import math

import pytest

from benchmarks.known_truth import (
    BenchmarkSettings,
    check_targets,
    format_summary,
    negative_control_gains,
    summarize,
)


def _row(arm, size, seed, kl, standard_error=0.01):
    return {"arm": arm, "target_size": size, "seed": seed, "kl": kl, "kl_standard_error": standard_error}


def test_summarize_counts_blow_ups_and_infinite_runs():
    rows = [_row("oracle", 32, seed, kl) for seed, kl in enumerate([0.1, 0.12, 0.11, 5.0, math.inf])]
    (entry,) = summarize(rows, ("oracle",))
    assert entry["runs"] == 5
    assert entry["kl_median"] == pytest.approx(0.12)
    assert entry["blow_ups"] == 2
    assert entry["kl_mean"] == math.inf


def test_summarize_without_blow_ups():
    rows = [_row("from_scratch", 100, seed, kl) for seed, kl in enumerate([1.0, 2.0, 3.0])]
    (entry,) = summarize(rows, ("from_scratch",))
    assert entry["blow_ups"] == 0
    assert entry["kl_mean"] == pytest.approx(2.0)
    assert entry["kl_mean_standard_error"] == pytest.approx(1 / math.sqrt(3))


def test_check_targets_reports_ratios():
    rows = [_row("from_scratch", 32, 0, 2.0), _row("frozen_embedding_fresh", 32, 0, 0.5), _row("oracle", 32, 0, 0.25)]
    lines = check_targets(summarize(rows, ("from_scratch", "frozen_embedding_fresh", "oracle")))
    assert "n=32: frozen_embedding_fresh / from_scratch = 0.250" in lines
    assert "n=32: frozen_embedding_fresh / oracle = 2.000" in lines
    assert lines[-1] == "blown-up runs in all arms: 0"


def test_negative_control_gain_is_reported():
    rows = [_row("from_scratch", 32, 0, 2.0), _row("negative_control", 32, 0, 1.0)]
    (message,) = negative_control_gains(rows)
    assert "n=32, seed 0" in message


def test_negative_control_within_noise_is_quiet():
    rows = [_row("from_scratch", 32, 0, 2.0, 0.1), _row("negative_control", 32, 0, 1.9, 0.1)]
    assert negative_control_gains(rows) == []


def test_format_summary_has_one_row_per_arm():
    rows = [_row("from_scratch", 32, 0, 2.0), _row("oracle", 32, 0, 0.25), _row("oracle", 316, 0, 0.1)]
    table = format_summary(summarize(rows, ("from_scratch", "oracle")))
    lines = table.splitlines()
    assert lines[0] == "| arm | n=32 | n=316 |"
    assert lines[2].startswith("| from_scratch | 2.000 (2.000)")
    assert lines[3].startswith("| oracle | 0.250 (0.250)")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": "gan"}, "Unknown model"),
        ({"arms": ("from_scratch", "lora_everything")}, "Unknown arms"),
        ({"target_sizes": (4,)}, "at least 8"),
        ({"validation_fraction": 0.6}, "validation_fraction"),
        ({"max_validation_size": 2}, "max_validation_size"),
        ({"embedding_output_activation": "relu"}, "embedding_output_activation"),
    ],
)
def test_settings_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BenchmarkSettings(**kwargs)
