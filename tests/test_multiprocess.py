"""Data-parallel training on two CPU processes (gloo), launched with `accelerate launch` as a subprocess.

Run as a script, this file is the worker that both processes execute. pytest runs the launch once
per module and checks what the worker wrote.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_transfer import ClassLabelEmbedding, ConditionalDiffusionModel, SharedEmbeddingUNet2DModel
from hf_transfer.data import make_digits_task
from hf_transfer.training import TrainingConfig, train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_PROCESS_BATCH = 4
NUM_EXAMPLES = 24  # 3 steps per epoch at 8 examples per step, so 5 steps cross an epoch boundary.
NUM_STEPS = 5
CRASH_AT_FORWARD = 4  # the 4th forward call raises, after the checkpoint of step 2


class SimulatedCrash(RuntimeError):
    """Raised by the model to stop a run the way a killed job stops."""


class FixedNoiseDiffusionModel(ConditionalDiffusionModel):
    """The denoising loss with noise and timesteps read from the batch, so the loss of a sample is deterministic.

    With the randomness tied to the sample, a step on 2 processes x B samples and a step on 1 process x 2B
    samples compute the same loss and the same gradient, up to float summation order.
    """

    crash_at_forward: int | None = None
    forward_calls = 0

    def forward(self, pixel_values, condition, noise, timesteps):
        self.forward_calls += 1
        if self.crash_at_forward is not None and self.forward_calls >= self.crash_at_forward:
            raise SimulatedCrash(f"simulated crash at forward call {self.forward_calls}")
        noisy = self.noise_scheduler.add_noise(pixel_values, noise, timesteps)
        prediction = self.generator(noisy, timesteps, self.shared_embedding(condition)).sample
        return F.mse_loss(prediction, noise)


def make_fixed_noise_model() -> FixedNoiseDiffusionModel:
    """A tiny UNet on a frozen class embedding: the shared embedding must stay out of DDP's gradient buckets."""
    torch.manual_seed(0)
    generator = SharedEmbeddingUNet2DModel(
        unet_config={
            "sample_size": 8,
            "in_channels": 1,
            "out_channels": 1,
            "block_out_channels": (8, 16),
            "down_block_types": ("DownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "UpBlock2D"),
            "layers_per_block": 1,
            "norm_num_groups": 4,
        },
        embedding_dim=4,
    )
    # The projection's last layer starts at zero; random weights make the frozen embedding matter to the loss.
    torch.nn.init.normal_(generator.condition_projection.linear_2.weight, std=0.1)
    embedding = ClassLabelEmbedding(num_classes=10, embedding_dim=4)
    embedding.requires_grad_(False)
    return FixedNoiseDiffusionModel(embedding, generator, condition_dropout=0.0)


def make_fixed_noise_data() -> Dataset:
    digits = make_digits_task().source.select(range(NUM_EXAMPLES))[:]
    generator = torch.Generator().manual_seed(1234)
    noise = torch.randn(NUM_EXAMPLES, 1, 8, 8, generator=generator)
    timesteps = torch.randint(0, 1000, (NUM_EXAMPLES,), generator=generator)
    dataset = Dataset.from_dict(
        {
            "pixel_values": digits["pixel_values"].numpy(),
            "condition": digits["condition"].numpy(),
            "noise": noise.numpy(),
            "timesteps": timesteps.numpy(),
        }
    )
    return dataset.with_format("torch")


def fixed_noise_config(batch_size: int, **options) -> TrainingConfig:
    return TrainingConfig(
        max_steps=NUM_STEPS,
        batch_size=batch_size,
        learning_rate=1e-3,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        ema_decay=0.9,
        progress_bar=False,
        **options,
    )


def parameters_as_lists(model) -> dict:
    return {name: tensor.detach().flatten().tolist() for name, tensor in model.state_dict().items()}


def _record_writes(output_root: str, events: list) -> None:
    """Install an audit hook that records every file write, rename, deletion or new folder under `output_root`.

    NOTE: audit hooks see Python-level file operations only. `torch.save` (C++) and safetensors (Rust)
    write without an audit event, but every save in this library also creates a folder, writes a JSON
    file or renames a folder from Python, and the hook records those.
    """

    def under_root(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(output_root)
        except TypeError:
            return False

    def hook(event, arguments):
        if event == "open" and under_root(arguments[0]):
            mode = arguments[1] or "r"
            flags = arguments[2] or 0
            if any(letter in str(mode) for letter in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                events.append([event, os.fsdecode(arguments[0])])
        elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree") and under_root(arguments[0]):
            events.append([event, os.fsdecode(arguments[0])])
        elif event == "os.mkdir" and under_root(arguments[0]) and not os.path.isdir(arguments[0]):
            events.append([event, os.fsdecode(arguments[0])])

    sys.addaudithook(hook)


def run_worker(work_dir: str) -> None:
    """Body of each of the two processes: a fixed-noise run, a crash and resume, and the diffusion recipe."""
    rank = int(os.environ.get("RANK", "0"))
    output_root = os.path.abspath(os.path.join(work_dir, "outputs"))
    rank_events: list = []
    if rank != 0:
        _record_writes(output_root, rank_events)
    report = {}

    # 1. An uninterrupted fixed-noise run: per-process batch B on 2 processes.
    model = make_fixed_noise_model()
    embedding_before = parameters_as_lists(model.shared_embedding)
    result = train(model, make_fixed_noise_data(), fixed_noise_config(PER_PROCESS_BATCH))
    report["losses"] = result.losses
    report["parameters"] = parameters_as_lists(model)
    report["embedding_unchanged"] = parameters_as_lists(model.shared_embedding) == embedding_before

    # 2. The same run, crashed after its step-2 checkpoint and resumed from the latest checkpoint.
    run_dir = os.path.join(output_root, "resume")
    options = {"output_dir": run_dir, "checkpointing_steps": 2}
    crashed = make_fixed_noise_model()
    crashed.crash_at_forward = CRASH_AT_FORWARD
    try:
        train(crashed, make_fixed_noise_data(), fixed_noise_config(PER_PROCESS_BATCH, **options))
    except SimulatedCrash:
        report["crashed"] = True
    resumed = make_fixed_noise_model()
    result = train(resumed, make_fixed_noise_data(), fixed_noise_config(PER_PROCESS_BATCH, resume_from_checkpoint="latest", **options))
    report["resumed_losses"] = result.losses
    report["resumed_parameters"] = parameters_as_lists(resumed)

    # 3. The diffusion recipe, target learning with a frozen shared embedding, checkpoints and tensorboard.
    sys.path.insert(0, os.path.join(REPO_ROOT, "recipes"))
    import train_diffusion

    train_diffusion.main(
        [
            "--dataset_name", "digits", "--digits_split", "target_train", "--shots_per_class", "2",
            "--source_model_name_or_path", os.path.join(work_dir, "source"), "--strategy", "frozen_embedding",
            "--max_train_steps", "2", "--train_batch_size", "5", "--lr_warmup_steps", "0",
            "--checkpointing_steps", "1", "--checkpoints_total_limit", "1", "--validation_steps", "2",
            "--validation_inference_steps", "2", "--report_to", "tensorboard", "--cpu", "--progress_bar", "false",
            "--output_dir", os.path.join(output_root, "recipe"),
        ]
    )

    reports_dir = os.path.join(work_dir, "reports")
    os.makedirs(reports_dir, exist_ok=True)
    report["writes_under_outputs"] = rank_events
    with open(os.path.join(reports_dir, f"rank-{rank}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("two_processes")
    # A tiny source model for the recipe's target learning: saved, not trained.
    torch.manual_seed(0)
    source = make_fixed_noise_model()
    source.shared_embedding.requires_grad_(True)
    ConditionalDiffusionModel(source.shared_embedding, source.generator).to_pipeline().save_pretrained(work_dir / "source")

    # `accelerate launch --cpu --num_processes 2` would start one process; --multi_gpu with CPU forced starts two.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
        os.path.abspath(__file__), str(work_dir),
    ]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        pytest.fail(f"accelerate launch exited with {completed.returncode}:\n{completed.stderr[-6000:]}")
    reports = {}
    for rank in (0, 1):
        with open(work_dir / "reports" / f"rank-{rank}.json", encoding="utf-8") as handle:
            reports[rank] = json.load(handle)
    return work_dir, reports


def _max_difference(first: dict, second: dict) -> float:
    return max(
        (torch.tensor(first[name]) - torch.tensor(second[name])).abs().max().item() if first[name] else 0.0
        for name in first
    )


def test_two_processes_match_double_batch(two_process_run):
    _, reports = two_process_run
    model = make_fixed_noise_model()
    reference = train(model, make_fixed_noise_data(), fixed_noise_config(2 * PER_PROCESS_BATCH))
    # Tolerance: the two runs sum the same per-sample gradients in a different order (all-reduce of two
    # halves against one batch), which changes float32 results at the 1e-6 level.
    assert len(reports[0]["losses"]) == NUM_STEPS
    torch.testing.assert_close(torch.tensor(reports[0]["losses"]), torch.tensor(reference.losses), rtol=1e-4, atol=1e-6)
    assert _max_difference(reports[0]["parameters"], parameters_as_lists(model)) < 1e-4


def test_processes_hold_same_weights(two_process_run):
    _, reports = two_process_run
    assert reports[0]["losses"] == reports[1]["losses"]
    assert _max_difference(reports[0]["parameters"], reports[1]["parameters"]) == 0.0


def test_frozen_embedding_survives_ddp(two_process_run):
    _, reports = two_process_run
    assert reports[0]["embedding_unchanged"]
    assert reports[1]["embedding_unchanged"]


def test_two_process_resume_is_exact(two_process_run):
    _, reports = two_process_run
    assert reports[0]["crashed"]
    assert reports[0]["resumed_losses"] == reports[0]["losses"]
    assert _max_difference(reports[0]["resumed_parameters"], reports[0]["parameters"]) == 0.0


def test_only_main_process_writes(two_process_run):
    work_dir, reports = two_process_run
    assert reports[1]["writes_under_outputs"] == []
    recipe_dir = work_dir / "outputs" / "recipe"
    assert (recipe_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (recipe_dir / "samples" / "step-000002.png").is_file()
    assert list((recipe_dir / "logs").rglob("events.out.tfevents.*"))
    checkpoints = sorted(path.name for path in recipe_dir.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"]
    # accelerate's save_state writes one random-state file per process: the one file rank 1 writes.
    assert (recipe_dir / "checkpoint-2" / "random_states_1.pkl").is_file()
    state = json.loads((recipe_dir / "checkpoint-2" / "training_state.json").read_text())
    assert state["num_processes"] == 2


if __name__ == "__main__":
    run_worker(sys.argv[1])
