"""Fine-tuning (paper §5.3): initialising from a checkpoint, the recipe, freezing, class subsets, one-line errors."""
import signal

import pytest
import torch
from conftest import read_log, train_subprocess

from ev2lib import train as T
from ev2lib.augment import augment
from ev2lib.data import load_data
from ev2lib.errors import DataError, WeightsError
from ev2lib.model import init_model
from ev2lib.recipe import RECIPES, finetune_config, lr_factor
from ev2lib.train import make_config, setup, train

# A tiny source run on all 10 generated classes; the targets fine-tune it on 5 of them.
SOURCE = dict(data="synthetic:256", image_size=16, batch_size=32, epochs=1, lr=0.05, progress=False,
              deterministic=True, log_every=1, eval_subset=64)


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("source")
    train(make_config("smoke", **SOURCE, out=str(out)))
    path = out / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["normalization"] = ((10.0, 20.0, 30.0), (40.0, 50.0, 60.0))  # weights "trained" with their own inputs
    torch.save(state, path)
    return path, state


def test_finetuning_from_a_checkpoint_replaces_only_the_classifier_and_takes_its_normalization(source_checkpoint,
                                                                                              tmp_path):
    path, state = source_checkpoint
    run = setup(make_config("smoke", **{**SOURCE, "classes": "5-9", "init": str(path), "out": str(tmp_path)}))
    assert run.step == 0 and run.model.num_classes == 5
    new, old = run.model.state_dict(), state["model"]
    body = [k for k in old if not k.startswith("classifier.")]
    assert body and all(torch.equal(new[k], old[k]) for k in body)  # bit-identical at step 0
    assert new["classifier.1.weight"].shape == (5, old["classifier.1.weight"].shape[1])
    assert run.model.normalization == ((10.0, 20.0, 30.0), (40.0, 50.0, 60.0))
    same_classes = init_model(state["config"]["model"], 10, str(path))  # as many classes: still a new classifier
    assert not torch.equal(same_classes.state_dict()["classifier.1.weight"], old["classifier.1.weight"])


def test_finetuning_resumes_bit_identically_after_sigkill(source_checkpoint, tmp_path):
    path, _ = source_checkpoint
    fields = {**SOURCE, "classes": "5-9", "init": str(path), "epochs": 2, "ckpt_every": 2, "cutout": 0.5}
    ref = train_subprocess({**fields, "out": str(tmp_path / "ref")})
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = train_subprocess({**fields, "out": str(tmp_path / "run")}, kill_at=5)
    assert killed.returncode == -signal.SIGKILL
    resumed = train_subprocess({**fields, "out": str(tmp_path / "run")})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert any(r.get("event") == "resume" and r["step"] == 4 for r in read_log(tmp_path / "run"))
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["model"] for d in ("ref", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_paper_recipe_has_no_weight_decay_a_cosine_ending_at_its_step_and_cutout(tmp_path):
    cfg = finetune_config("smoke", "paper", data="synthetic:256", image_size=16, classes="", eval_subset=64,
                          out=str(tmp_path), progress=False)
    assert (cfg.steps, cfg.lr_schedule, cfg.cutout, cfg.crop) == (20, "cosine", 0.5, "resize")
    assert cfg.lr == pytest.approx(0.001 * 32 / 512)  # scaled with the batch from the paper's 0.001 at 512
    run = setup(cfg)
    assert all(g["weight_decay"] == 0 for g in run.optimizer.param_groups)
    spe = run.data.steps_per_epoch  # 8: the 20 steps end mid-epoch, and the cosine with them
    assert lr_factor(cfg.steps, cfg, spe) == pytest.approx(0.0) and lr_factor(cfg.steps - 1, cfg, spe) > 0
    assert lr_factor(cfg.steps // 2, cfg, spe) == pytest.approx(0.5)
    assert run.data.augmentation["cutout"] == 0.5
    summary = train(cfg)
    assert summary["steps"] == 20
    official = finetune_config("smoke", "official")
    assert (official.lr_schedule, official.weight_decay, official.ema_decay) == ("constant", 1e-5, 0.9996)
    assert RECIPES["paper"]["steps"] == RECIPES["official"]["steps"] == 10_000


def test_cutout_blanks_a_box_of_half_the_side_with_random_pixels():
    img = torch.full((3, 32, 32), 7, dtype=torch.uint8)
    plain = augment(img, 3, 32, crop="resize")
    cut = augment(img, 3, 32, crop="resize", cutout=0.5)
    changed = (cut != plain).any(0)
    rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
    assert 0 < rows.numel() <= 16 and 0 < cols.numel() <= 16  # one box, at most 16 x 16, clipped at a border
    assert len(cut[:, changed].unique()) > 10  # random values, not one grey


def test_frozen_stages_keep_weights_and_batchnorm_statistics(tmp_path):
    cfg = make_config("smoke", **{**SOURCE, "freeze": "0-2", "warmup_epochs": 0, "out": str(tmp_path)})
    run = setup(cfg)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.model.train()
    assert not run.model.features[1].training and run.model.features[3].training
    for _, x, y in run.data.train_batches(0):
        T.train_step(run, x, y)
        break
    after = run.model.state_dict()
    frozen = [k for k in before if k.split(".")[:2] in (["features", "0"], ["features", "1"], ["features", "2"])]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # weights and running statistics
    assert not torch.equal(before["features.3.0.block.0.0.weight"], after["features.3.0.block.0.0.weight"])


def test_classes_keep_and_relabel_a_subset_of_every_split():
    full = load_data("synthetic:512", image_size=16, val_images=64)
    half = load_data("synthetic:512", image_size=16, val_images=64, classes="5-9")
    assert half.num_classes == 5
    for split in ("train", "val", "test"):
        (xf, yf), (xh, yh) = (getattr(d, split) for d in (full, half))
        assert torch.equal(xh, xf[yf >= 5]) and torch.equal(yh, yf[yf >= 5] - 5)
    with pytest.raises(DataError, match="classes 0-9"):
        load_data("synthetic:512", image_size=16, classes="8-12")


def test_finetuning_from_a_checkpoints_ema_takes_the_averaged_weights(tmp_path):
    out = tmp_path / "ema"
    train(make_config("smoke", **{**SOURCE, "ema_decay": 0.5, "out": str(out)}))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    model = init_model(state["config"]["model"], 5, str(out / "checkpoint.pt"))
    averaged = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    key = "features.1.0.block.0.0.weight"
    assert torch.equal(model.state_dict()[key], averaged[key]) and not torch.equal(averaged[key], state["model"][key])


def test_finetuning_from_the_model_pt_of_a_timm_initialised_run_keeps_same_padding_and_timms_normalization(
        tmp_path, monkeypatch):
    """A run that started from timm's weights (TF "same" padding, timm's input normalisation) writes a model.pt that
    says so; fine-tuning from it builds the same network. A bare state dict is taken with the assumption logged."""
    import timm

    from ev2lib import model as model_module
    from ev2lib.weights import load_pretrained, weights_info

    timm_file = tmp_path / "tf_efficientnetv2_b0.pth"  # timm's layout, random weights: no download
    torch.save(timm.create_model("tf_efficientnetv2_b0", pretrained=False, num_classes=1000).state_dict(), timm_file)
    monkeypatch.setattr(model_module, "load_pretrained", lambda m, source: load_pretrained(m, source, path=timm_file))
    fields = dict(data="synthetic:64", image_size=32, batch_size=16, steps=2, progress=False, eval_subset=16,
                  model="efficientnetv2_b0")
    first = train(make_config("smoke", **fields, init="timm", out=str(tmp_path / "a")))
    timm_norm = (weights_info("efficientnetv2_b0", "timm").mean, weights_info("efficientnetv2_b0", "timm").std)
    assert first["config"]["init"] == "timm"
    run = setup(make_config("smoke", **fields, classes="0-4", init=str(tmp_path / "a" / "model.pt"),
                            out=str(tmp_path / "b")))
    assert run.model.padding == "same" and run.model.normalization == timm_norm
    weights = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(run.model.state_dict()[k], v) for k, v in weights.items() if not k.startswith("classifier"))
    torch.save(weights, tmp_path / "bare.pt")  # only the tensors: padding and normalisation unknown
    bare = setup(make_config("smoke", **fields, classes="0-4", init=str(tmp_path / "bare.pt"), out=str(tmp_path / "c")))
    assert bare.model.padding == "symmetric" and bare.model.normalization != timm_norm
    start = next(r for r in T.read_log(tmp_path / "c") if r.get("event") == "start")
    assert "assumed" in start["init"] and "bare state dict" in start["init"]["assumed"]


def test_bad_init_source_and_foreign_checkpoint_are_one_line_errors(source_checkpoint, tmp_path):
    path, _ = source_checkpoint
    with pytest.raises(WeightsError, match="neither a weights source") as e:
        init_model("efficientnetv2_cifar", 5, "imagenet21k")
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(WeightsError, match="do not fit efficientnetv2_cifar_half") as e:
        init_model("efficientnetv2_cifar_half", 5, str(path))
    assert "--model efficientnetv2_cifar" in str(e.value) and len(str(e.value).splitlines()) == 1
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")  # not an ev2lib network at all
    with pytest.raises(WeightsError, match="holds weights of another architecture") as e:
        init_model("efficientnetv2_cifar_half", 5, str(tmp_path / "other.pt"))
    assert "--model" not in str(e.value) and len(str(e.value).splitlines()) == 1


def test_a_dataset_that_cannot_be_fetched_is_one_line_error(tmp_path, monkeypatch):
    from torchvision import datasets

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match="could not download cifar100") as e:
        load_data("cifar100", image_size=32, root=tmp_path)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(DataError, match="cannot be downloaded .* put a copy there") as e:  # torchvision cannot
        load_data("stanford_cars", image_size=32, root=tmp_path)
    assert len(str(e.value).splitlines()) == 1
