"""The training loop on in-memory clips: optimiser groups, schedules, data order, checkpoints,
resume, NaN stop, gradient accumulation, fine-tuning. (Video data, the CLI, kill -9 and DDP:
test_train_cli.py.)"""
import json

import pytest
import torch
from torch import nn

import tsf
from tsf.build import build_model
from tsf.model import create_model
from tsf.training import (
    Callback, LivePlot, LRSchedule, NonFiniteLossError, ShardedShuffleSampler, TrainConfig, Trainer, parameter_groups,
)
from tsf.weights import load_checkpoint_file


class ColourClips(torch.utils.data.Dataset):
    """Random uint8 clips whose label is which colour channel is brightened: learnable in a few steps."""

    def __init__(self, n, classes=3, frames=4, size=32, seed=0, views=1):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, classes, (n,), generator=g)
        self.clips = torch.randint(0, 100, (n, 3, frames, size, size), generator=g, dtype=torch.uint8)
        self.views = views

    def __len__(self):
        return len(self.labels) * self.views

    def __getitem__(self, i):
        video, view = divmod(i, self.views)
        clip = self.clips[video].clone()
        label = int(self.labels[video])
        clip[label % 3] += 120
        return {"clip": clip, "label": label, "index": video, "view": view}


pytestmark = pytest.mark.usefixtures("one_thread")


FAST = dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=0.2, grad_clip=1.0,
            num_workers=0, progress=False)


def micro(**overrides):
    torch.manual_seed(0)
    return create_model("micro", num_classes=3, **overrides)


def test_config_errors_name_the_field_and_value():
    with pytest.raises(ValueError, match=r"lr=-1.0 must be > 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match=r"optimizer='adam' is not one of \('sgd', 'adamw'\)"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="unknown TrainConfig keys \\['epoch'\\]"):
        TrainConfig.from_dict({"epoch": 3})


def test_parameter_groups_skip_decay_on_norms_biases_embeddings_and_decay_lr_by_layer():
    model = micro()
    groups = parameter_groups(model, weight_decay=0.05, layer_decay=0.5, lr=1.0)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = {}
    for group in groups:
        for p in group["params"]:
            seen[names[id(p)]] = (group["weight_decay"], group["lr"])
    assert set(seen) == set(names.values())
    for name, (wd, _) in seen.items():
        undecayed = name.endswith(".bias") or "norm" in name or name in ("cls_token", "pos_embed", "time_embed")
        assert (wd == 0.0) == undecayed, name
    depth = model.config.depth  # 2: embeddings 0.5^3, block 0 0.5^2, block 1 0.5, head and norm 1
    assert seen["pos_embed"][1] == seen["patch_embed.proj.weight"][1] == 0.5 ** (depth + 1)
    assert seen["blocks.0.attn.qkv.weight"][1] == 0.5**depth
    assert seen["blocks.1.mlp.fc1.bias"][1] == 0.5
    assert seen["head.weight"][1] == seen["norm.weight"][1] == 1.0


def test_lr_schedules():
    cosine = LRSchedule(total_steps=110, warmup_steps=10, schedule="cosine", milestones=(), step_factor=0.1)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5) and cosine(110) == pytest.approx(0.0, abs=1e-12)
    step = LRSchedule(total_steps=150, warmup_steps=0, schedule="step", milestones=(110, 140), step_factor=0.1)
    assert [step(s) for s in (0, 109, 110, 139, 140)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_sampler_global_batches_do_not_depend_on_world_size():
    batch = 4
    single = list(ShardedShuffleSampler(50, seed=3))
    ranks = [list(ShardedShuffleSampler(50, rank=r, world_size=2, seed=3)) for r in range(2)]
    for step in range(50 // (2 * batch)):
        global_batch = single[step * 2 * batch:(step + 1) * 2 * batch]
        sharded = ranks[0][step * batch:(step + 1) * batch] + ranks[1][step * batch:(step + 1) * batch]
        assert sorted(global_batch) == sorted(sharded)
    resumed = ShardedShuffleSampler(50, seed=3)
    resumed.set_epoch(0, start=12)
    assert list(resumed) == single[12:]


def test_training_writes_a_loadable_run_folder(tmp_path):
    config = TrainConfig(epochs=3, batch_size=8, log_every=2, checkpoint_every=3, **FAST)
    trainer = Trainer(micro(), config, ColourClips(48), ColourClips(12, seed=1, views=2), run_dir=tmp_path,
                      run_info={"note": "test"})
    summary = trainer.fit()
    assert summary["steps"] == 18 and summary["best_val_top1"] >= 0.9, summary
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "start" and records[0]["global_batch"] == 8
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(2, 19, 2))
    for key in ("loss", "lr", "top1", "clips_per_s", "data_wait", "bad_videos", "grad_norm"):
        assert all(key in r for r in train), key
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and all(r["val_videos"] == 12 for r in epochs)
    assert json.loads((tmp_path / "summary.json").read_text())["best_val_top1"] == summary["best_val_top1"]
    best = load_checkpoint_file(tmp_path / "best.pt")  # weights_only=True: plain containers and tensors
    assert best["epoch"] - 1 == summary["best_epoch"] and best["run_info"] == {"note": "test"}
    assert set(best["rng"][0]) >= {"python", "numpy", "torch"}
    model = tsf.from_pretrained(tmp_path / "last.pt")
    assert torch.equal(model.state_dict()["head.weight"], trainer.model.state_dict()["head.weight"])


class Interrupt(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, trainer):
        if trainer.step == self.at_step:
            raise KeyboardInterrupt


def test_resume_mid_epoch_is_bit_identical_with_dropout(tmp_path):
    """In-process version of the kill -9 test (test_train_cli.py), with dropout and drop-path on."""
    config = TrainConfig(epochs=2, batch_size=8, log_every=4, checkpoint_every=4, **FAST)

    def trainer(run_dir):
        model = micro(drop_rate=0.1, drop_path_rate=0.2)
        return Trainer(model, config, ColourClips(48), ColourClips(6, seed=1), run_dir=run_dir)

    straight = trainer(tmp_path / "a")
    straight.fit()
    interrupted = trainer(tmp_path / "b")
    interrupted.add_callback(Interrupt(at_step=10))
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = trainer(tmp_path / "b")
    resumed.resume(tmp_path / "b")
    assert (resumed.step, resumed.epoch, resumed.step_in_epoch) == (8, 1, 2)
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = lambda run: [line for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
                         if '"kind": "train"' in line]
    assert [json.loads(x)["loss"] for x in lines("a")] == [json.loads(x)["loss"] for x in lines("b")]


class PoisonAfter(nn.Module):
    """Any model-agnostic classifier: pooled colour means -> logits; NaN logits from call ``at`` on."""

    def __init__(self, at):
        super().__init__()
        self.head = nn.Linear(3, 3)
        self.calls, self.at = 0, at

    def forward(self, x):
        self.calls += 1
        logits = self.head(x.mean(dim=(2, 3, 4)))
        return logits * float("nan") if self.calls >= self.at else logits


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = TrainConfig(epochs=5, batch_size=8, checkpoint_every=2, **FAST)
    trainer = Trainer(PoisonAfter(at=6), config, ColourClips(32), run_dir=tmp_path,
                      normalization=((0.5,) * 3, (0.25,) * 3))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 6 .* last good checkpoint is .*last.pt"):
        trainer.fit()
    checkpoint = load_checkpoint_file(tmp_path / "last.pt")
    assert checkpoint["step"] == 4
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters()), "the NaN step updated nothing"
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "error"


def test_gradient_accumulation_matches_the_large_batch():
    def losses(batch_size, accumulate):
        config = TrainConfig(epochs=1, batch_size=batch_size, grad_accum_steps=accumulate, log_every=1, **FAST)
        records = []

        class Record(Callback):
            def on_log(self, trainer, record):
                records.append(record["loss"])

        trainer = Trainer(micro(), config, ColourClips(64), callbacks=[Record()])
        trainer.fit()
        return records, trainer.model.state_dict()

    big, big_weights = losses(16, 1)
    accumulated, accumulated_weights = losses(8, 2)
    assert len(big) == len(accumulated) == 4
    # same clips per step, gradients summed in another order: float rounding only
    assert big == pytest.approx(accumulated, rel=1e-5)
    for name in big_weights:
        torch.testing.assert_close(big_weights[name], accumulated_weights[name], atol=1e-5, rtol=1e-4)


def test_finetune_from_a_checkpoint_with_new_classes_and_frozen_backbone(tmp_path):
    tsf.save_pretrained(micro(), tmp_path / "pre.pt")
    model = build_model(init=str(tmp_path / "pre.pt"), class_names=["a", "b", "c", "d"])
    assert model.head.out_features == 4 and model.config.class_names == ("a", "b", "c", "d")
    same = build_model(init=str(tmp_path / "pre.pt"), class_names=["x", "y", "z"])
    pretrained = load_checkpoint_file(tmp_path / "pre.pt")["state_dict"]
    assert torch.equal(same.head.weight, pretrained["head.weight"]), "same class count, unnamed: the head is kept"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=8, freeze_backbone=True, **FAST)
    clips = ColourClips(16)
    clips.labels %= 4
    Trainer(model, config, clips, callbacks=[]).fit()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}


def test_live_plot_callback_draws_and_saves(tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, log_every=1, **FAST)
    plot = LivePlot(tmp_path / "curves.png")
    trainer = Trainer(micro(), config, ColourClips(16), ColourClips(6, seed=1), callbacks=[plot])
    trainer.fit()
    assert len(plot.train) == 4 and len(plot.val) == 2
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_paper_recipe_with_every_option_on():
    """SGD-nesterov with step decay (the defaults), label smoothing, layer decay, gradient
    checkpointing, accumulation: the loss falls and the lr follows the schedule."""
    config = TrainConfig(epochs=4, batch_size=4, grad_accum_steps=2, lr=0.05, lr_milestones=(2, 3), label_smoothing=0.1,
                         layer_decay=0.75, gradient_checkpointing=True, log_every=1, num_workers=0, progress=False)
    assert (config.optimizer, config.schedule, config.momentum, config.weight_decay) == ("sgd", "step", 0.9, 1e-4)
    logged = []

    class Record(Callback):
        def on_log(self, trainer, record):
            logged.append(record)

    trainer = Trainer(micro(), config, ColourClips(24), callbacks=[Record()])
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.optimizer.defaults["nesterov"]
    assert trainer.model.gradient_checkpointing
    trainer.fit()
    assert [r["lr"] for r in logged] == pytest.approx([0.05] * 6 + [0.005] * 3 + [0.0005] * 3)
    assert logged[-1]["loss"] < logged[0]["loss"]


def test_precision_and_device_errors():
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        Trainer(micro(), TrainConfig(precision="fp16", progress=False), ColourClips(8))
    with pytest.raises(ValueError, match="fewer than one global batch of 16"):
        Trainer(micro(), TrainConfig(batch_size=16, progress=False), ColourClips(8))
