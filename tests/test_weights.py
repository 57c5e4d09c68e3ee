"""Weight loading and saving: official .pyth, Hugging Face, tsf, the zoo cache, ImageNet init, build_model."""
import contextlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import tsf
from tsf import zoo
from tsf.build import build_model
from tsf.errors import CheckpointError, DownloadError
from tsf.huggingface import state_dict_to_hf
from tsf.model import ATTENTION_TYPES, TimeSformer, create_model
from tsf.weights import kinetics400_classes, load_checkpoint_file

from conftest import OFFICIAL_FIXTURES as OFFICIAL
from conftest import OFFICIAL_PYTH as PYTH


@pytest.fixture(scope="module")
def official_io():
    return torch.load(OFFICIAL / "tiny_divided_space_time.io.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("fused", [True, False])
def test_official_checkpoint_reproduces_official_logits(official_io, fused):
    model = tsf.from_pretrained(PYTH, num_heads=4)
    spec = json.loads((OFFICIAL / "tiny_divided_space_time.json").read_text())
    cfg = model.config
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_frames, cfg.num_classes, cfg.attention_type) == (
        spec["img_size"], spec["patch_size"], spec["embed_dim"], spec["depth"], spec["num_frames"],
        spec["num_classes"], spec["attention_type"])
    with torch.no_grad(), (contextlib.nullcontext() if fused else model.explicit_attention()):
        torch.testing.assert_close(model(official_io["input"]), official_io["logits"], atol=1e-4, rtol=0)


def test_official_checkpoint_loads_with_weights_only():
    ckpt = load_checkpoint_file(PYTH)  # weights_only=True underneath
    assert set(ckpt) >= {"model_state", "epoch", "optimizer_state", "cfg"}


def test_seed_api_pretrained_model_argument(official_io):
    model = TimeSformer(img_size=32, num_classes=5, num_frames=4, pretrained_model=str(PYTH),
                        patch_size=16, embed_dim=64, depth=2, num_heads=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(official_io["input"]), official_io["logits"], atol=1e-4, rtol=0)
    finetune = TimeSformer(img_size=32, num_classes=7, num_frames=4, pretrained_model=str(PYTH),
                           patch_size=16, embed_dim=64, depth=2, num_heads=4)
    assert finetune.head.out_features == 7


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_inference_of_every_architecture_number(tmp_path, attention_type):
    torch.manual_seed(0)
    model = create_model("micro", attention_type=attention_type, patch_size=8, num_frames=3, img_size=24,
                         embed_dim=48, depth=3, num_heads=3, mlp_ratio=2.0, num_classes=6)
    tsf.save_pretrained(model, tmp_path / "m.pyth", format="official")
    loaded = tsf.from_pretrained(tmp_path / "m.pyth", num_heads=3)
    for field in ("img_size", "patch_size", "num_frames", "embed_dim", "depth", "mlp_ratio", "num_classes", "attention_type"):
        assert getattr(loaded.config, field) == getattr(model.config, field), field
    x = torch.randn(1, 3, 3, 24, 24)
    torch.testing.assert_close(loaded(x), model.eval()(x), atol=1e-5, rtol=1e-5)


def test_official_format_loads_in_the_official_wrapper(tmp_path):
    """The official code wraps VisionTransformer as `.model` and calls load_state_dict(model_state)."""
    model = create_model("micro")
    tsf.save_pretrained(model, tmp_path / "m.pyth", format="official")
    ckpt = torch.load(tmp_path / "m.pyth", weights_only=True)
    wrapper = nn.Module()
    wrapper.model = create_model("micro")
    wrapper.load_state_dict(ckpt["model_state"], strict=True)
    assert "NUM_FRAMES: 4" in ckpt["cfg"] and ckpt["epoch"] == 0


@pytest.mark.parametrize("attention_type", ["divided_space_time", "joint_space_time"])
def test_hf_export_matches_transformers_and_round_trips(tmp_path, attention_type):
    from transformers import TimesformerForVideoClassification

    torch.manual_seed(0)
    names = tuple(f"class {i}" for i in range(5))
    model = create_model("micro", attention_type=attention_type, class_names=names).eval()
    tsf.save_pretrained(model, tmp_path / "hf", format="hf")
    hf = TimesformerForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.id2label[3] == "class 3"
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits, ours, atol=1e-5, rtol=1e-5)
        # HF -> tsf: a directory written by transformers itself
        hf.save_pretrained(tmp_path / "hf_native")
        back = tsf.from_pretrained(tmp_path / "hf_native")
        assert back.config.class_names == names and back.config.num_heads == 2
        torch.testing.assert_close(back(x), ours, atol=1e-5, rtol=1e-5)


def test_space_only_hf_export_is_refused(tmp_path):
    with pytest.raises(ValueError, match="space_only"):
        tsf.save_pretrained(create_model("micro", attention_type="space_only"), tmp_path / "hf", format="hf")


def test_tsf_checkpoint_round_trip_keeps_config(tmp_path):
    model = create_model("micro", class_names=tuple("abcde"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).eval()
    tsf.save_pretrained(model, tmp_path / "m.pt")
    loaded = tsf.from_pretrained(tmp_path / "m.pt")
    assert loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    # a training checkpoint is a tsf checkpoint with extra keys
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["optimizer"] = {"state": {}}
    torch.save(ckpt, tmp_path / "train.pt")
    assert tsf.from_pretrained(tmp_path / "train.pt").config == model.config


def test_fine_tuning_overrides_and_kinetics_names(tmp_path):
    model = create_model("micro", num_classes=400)
    tsf.save_pretrained(model, tmp_path / "k400.pyth", format="official")
    loaded = tsf.from_pretrained(tmp_path / "k400.pyth", num_heads=2)
    assert loaded.config.class_names == tuple(kinetics400_classes()) and len(loaded.config.class_names) == 400
    assert loaded.config.class_names[0] == (OFFICIAL.parent / "kinetics400_classes.txt").read_text().splitlines()[0].strip()
    finetune = tsf.from_pretrained(tmp_path / "k400.pyth", num_heads=2, num_classes=3, class_names=("a", "b", "c"))
    assert finetune.head.out_features == 3 and finetune.config.class_names == ("a", "b", "c")
    assert torch.equal(finetune.blocks[0].mlp.fc1.weight, model.blocks[0].mlp.fc1.weight)
    unnamed = tsf.from_pretrained(tmp_path / "k400.pyth", num_heads=2, num_classes=3)
    assert unnamed.head.out_features == 3 and unnamed.config.class_names is None


def test_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="zoo name"):
        tsf.from_pretrained(tmp_path / "nope.pyth")
    with pytest.raises(ValueError, match=r"embed_dim=32 \(the weights have 64\)"):
        tsf.from_pretrained(PYTH, num_heads=4, embed_dim=32)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        tsf.from_pretrained(tmp_path / "junk.pt")
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a TimeSformer"):
        tsf.from_pretrained(tmp_path / "other.pt")
    model = create_model("micro", attention_type="joint_space_time")
    with pytest.raises(ValueError, match=r"(?s)unexpected .*temporal_attn.*attention_type differs"):
        tsf.weights.load_weights_into(model, PYTH)


def test_build_model_from_a_preset_an_imagenet_vit_or_a_checkpoint(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    names = ("a", "b")
    started = build_model("tiny", class_names=names, imagenet_init=str(tmp_path / "vit.pth"))
    assert started.config.class_names == names and started.head.out_features == 2
    assert torch.equal(started.blocks[2].attn.qkv.weight, vit.blocks[2].attn.qkv.weight)
    with pytest.raises(ValueError, match=r"does not fit --model micro: embed_dim 32 \(the ViT: 64\)"):
        build_model("micro", class_names=names, imagenet_init=str(tmp_path / "vit.pth"))
    with pytest.raises(ValueError, match="not both"):
        build_model("tiny", init="best.pt", class_names=names)
    assert build_model("micro", class_names=names).config.num_classes == 2


def test_untrusted_pickles_are_refused_with_the_way_out(tmp_path):
    torch.save({"model_state": {}, "cfg": object.__new__(zoo.ZooEntry)}, tmp_path / "pickled.pyth")
    with pytest.raises(ValueError, match="trust_checkpoint=True"):
        tsf.from_pretrained(tmp_path / "pickled.pyth")


def test_zoo_registry_lists_the_official_models():
    names = {e.name for e in tsf.list_models()}
    assert {"timesformer_k400_8x224", "timesformer_hr_k400_16x448", "timesformer_l_k400_96x224",
            "timesformer_ssv2_8x224", "timesformer_howto100m_8x224", "facebook/timesformer-base-finetuned-k400"} <= names
    for entry in tsf.list_models():
        assert entry.url and entry.top1 > 0 and entry.num_classes in (400, 600, 174, 1059)
    assert {e.dataset for e in tsf.list_models("ssv2")} == {"ssv2"}


def test_zoo_download_caches_and_verifies(tmp_path, monkeypatch, official_io):
    source = tmp_path / "remote" / "model.pyth"
    source.parent.mkdir()
    source.write_bytes(PYTH.read_bytes())
    entry = zoo.ZooEntry("test_model", "official", source.as_uri(), "test", 4, 32, 5, 1.0, 1, num_heads=4)
    monkeypatch.setitem(zoo.ZOO, "test_model", entry)
    monkeypatch.setenv("TSF_CACHE", str(tmp_path / "cache"))
    model = tsf.from_pretrained("test_model")
    with torch.no_grad():
        torch.testing.assert_close(model(official_io["input"]), official_io["logits"], atol=1e-4, rtol=0)
    source.unlink()  # the second load must come from the cache
    assert tsf.from_pretrained("test_model").config.num_classes == 5
    cached = tmp_path / "cache" / "test_model.pyth"
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DownloadError, match="damaged"):
        tsf.from_pretrained("test_model")
    monkeypatch.setitem(zoo.ZOO, "bad_hash", zoo.ZooEntry("bad_hash", "official", PYTH.as_uri(), "t", 4, 32, 5, 1.0, 1, sha256="0" * 64, num_heads=4))
    with pytest.raises(DownloadError, match="wrong SHA-256"):
        tsf.from_pretrained("bad_hash")
    assert not (tmp_path / "cache" / "bad_hash.pyth").exists()
    assert not list((tmp_path / "cache").glob("*.partial")), "a failed download leaves no partial file"


def test_zoo_download_offline_fails_in_one_line_and_caches_nothing(tmp_path, monkeypatch):
    url = "http://127.0.0.1:9/TimeSformer.pyth"  # the discard port: nothing listens there
    monkeypatch.setitem(zoo.ZOO, "offline", zoo.ZooEntry("offline", "official", url, "t", 4, 32, 5, 1.0, 1, num_heads=4))
    monkeypatch.setenv("TSF_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DownloadError) as error:
        tsf.from_pretrained("offline")
    message = str(error.value)
    assert url in message and str(tmp_path / "cache" / "offline.pyth") in message and "curl" in message
    assert "\n" not in message
    assert not list((tmp_path / "cache").iterdir()), "nothing is left in the cache"


def test_zoo_hf_entry_downloads_through_huggingface_hub(tmp_path, monkeypatch, fake_hub):
    model = create_model("micro").eval()
    repo = fake_hub / "org" / "name"
    tsf.save_pretrained(model, repo, format="hf")
    (repo / "model.safetensors").unlink(missing_ok=True)  # the released conversions ship pytorch_model.bin
    torch.save(state_dict_to_hf(model.state_dict()), repo / "pytorch_model.bin")
    monkeypatch.setitem(zoo.ZOO, "org/name", zoo.ZooEntry("org/name", "hf", "org/name", "t", 4, 32, 5, 1.0, 1))
    monkeypatch.setenv("TSF_CACHE", str(tmp_path / "cache"))
    loaded = tsf.from_pretrained("org/name")
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)
    snapshots = list((tmp_path / "cache" / "huggingface").rglob("config.json"))
    assert len(snapshots) == 1, "huggingface_hub's cache under $TSF_CACHE/huggingface"
    monkeypatch.setitem(zoo.ZOO, "org/missing", zoo.ZooEntry("org/missing", "hf", "org/missing", "t", 4, 32, 5, 1.0, 1))
    with pytest.raises(DownloadError, match="org/missing.*huggingface-cli download org/missing"):
        tsf.from_pretrained("org/missing")




def test_list_models_knows_the_datasets_by_their_names():
    assert {e.dataset for e in tsf.list_models("kinetics")} == {"k400", "k600"}
    assert {e.dataset for e in tsf.list_models("Kinetics-400")} == {"k400"}
    assert tsf.list_models("something-something-v2") == tsf.list_models("ssv2")
    with pytest.raises(ValueError, match="no zoo model was trained on 'ucf101'.*howto100m"):
        tsf.list_models("ucf101")
