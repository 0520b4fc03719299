"""Fine-tuning: layer decay per parameter, ViT extras active, BN arm, exact resume."""

import os
import signal

import numpy as np
import pytest
import torch

from workflow_scripts import finetune as ft
from workflow_scripts.backbones import build_backbone
from workflow_scripts.sources import ArraySource

MEAN, STD = [0.5] * 3, [0.25] * 3


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def test_layer_decay_gives_the_expected_lr_per_parameter():
    vit = build_backbone("vit_tiny_p8", "cls")
    model = ft.Classifier(vit, 10, "bn")
    recipe = ft.FinetuneRecipe(epochs=2, batch_size=8, lr=0.1, head_lr=0.3, warmup_epochs=0)
    lr_of = {name: g["lr"] for g in ft.param_groups(model, recipe) for name in g["names"]}
    depth = 4
    assert lr_of["backbone.patch_embed.proj.weight"] == pytest.approx(0.1 * 0.65 ** (depth + 1))
    assert lr_of["backbone.cls_token"] == pytest.approx(0.1 * 0.65 ** (depth + 1))
    assert lr_of["backbone.pos_embed"] == pytest.approx(0.1 * 0.65 ** (depth + 1))
    for i in range(depth):
        assert lr_of[f"backbone.blocks.{i}.attn.qkv.weight"] == pytest.approx(
            0.1 * 0.65 ** (depth - i)
        )
        assert lr_of[f"backbone.blocks.{i}.norm2.bias"] == pytest.approx(0.1 * 0.65 ** (depth - i))
    assert lr_of["backbone.norm.weight"] == pytest.approx(0.1)
    assert lr_of["head.weight"] == lr_of["bn.weight"] == pytest.approx(0.3)
    # every parameter is in exactly one group
    names = [n for g in ft.param_groups(model, recipe) for n in g["names"]]
    assert len(names) == len(set(names)) == len(list(model.named_parameters()))


def test_resnet_has_no_layer_decay():
    model = ft.Classifier(build_backbone("resnet10_tiny", "avgpool"), 10, "raw")
    groups = ft.param_groups(
        model, ft.FinetuneRecipe(epochs=2, batch_size=8, lr=0.1, warmup_epochs=0)
    )
    assert [g["lr"] for g in groups] == [0.1]


def test_vit_extras_are_active(monkeypatch):
    seen = []
    real = ft.F.cross_entropy

    def spy(*args, **kwargs):
        seen.append(kwargs.get("label_smoothing", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(ft.F, "cross_entropy", spy)
    images, labels = _data()
    recipe = ft.FinetuneRecipe(epochs=1, batch_size=16, warmup_epochs=0)
    vit = build_backbone("vit_tiny_p8", "cls", drop_path=recipe.drop_path)
    assert vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    data = ArraySource(images, labels, MEAN, STD)
    result, model = ft.finetune(vit, data, data, num_classes=10, arm="raw", recipe=recipe, seed=0)
    assert seen and set(seen) == {0.1}
    assert result["label_smoothing"] == 0.1 and result["drop_path"] == 0.2
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))  # stochastic depth in training
    model.eval()
    assert torch.equal(model(x), model(x))
    seen.clear()
    resnet = build_backbone("resnet10_tiny", "avgpool")
    ft.finetune(resnet, data, data, num_classes=10, arm="bn", recipe=recipe, seed=0)
    assert set(seen) == {0.0}  # no label smoothing for ResNets


def test_bn_arm_puts_batchnorm_before_the_head():
    model = ft.Classifier(build_backbone("resnet10_tiny", "avgpool"), 7, "bn")
    assert isinstance(model.bn, torch.nn.BatchNorm1d) and model.bn.num_features == 128
    assert model.head.bias.abs().sum() == 0 and model.head.weight.std() < 0.02
    with pytest.raises(ValueError, match="unknown arm"):
        ft.Classifier(build_backbone("resnet10_tiny", "avgpool"), 7, "ln")


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize(
    ("arch", "embedding"), [("vit_tiny_p8", "cls"), ("resnet10_tiny", "avgpool")]
)
def test_resume_equals_uninterrupted(tmp_path, arch, embedding):
    torch.set_num_threads(1)
    images, labels = _data()
    recipe = ft.FinetuneRecipe(epochs=4, batch_size=16, warmup_epochs=1)

    def fresh():
        torch.manual_seed(123)
        return build_backbone(arch, embedding, drop_path=recipe.drop_path)

    data = ArraySource(images, labels, MEAN, STD)
    kwargs = dict(num_classes=10, arm="bn", recipe=recipe, seed=5)
    full, model_full = ft.finetune(fresh(), data, data, state_path=tmp_path / "a.pt", **kwargs)

    def kill(epoch):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        ft.finetune(fresh(), data, data, state_path=tmp_path / "b.pt", on_epoch_end=kill, **kwargs)
    state = torch.load(tmp_path / "b.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (2, 0)  # two epochs done
    torch.manual_seed(999)  # the global RNG state is restored from the file, not inherited
    resumed, model_resumed = ft.finetune(
        fresh(), data, data, state_path=tmp_path / "b.pt", **kwargs
    )
    _assert_same_weights(model_full, model_resumed)
    assert resumed["top1"] == full["top1"]


def _assert_same_weights(a, b):
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


@pytest.mark.parametrize(
    ("arch", "embedding"), [("vit_tiny_p8", "cls"), ("resnet10_tiny", "avgpool")]
)
def test_periodic_saves_resume_mid_epoch_exactly(tmp_path, arch, embedding):
    """save_minutes: the state is written during the epoch; a job killed at step 2 of epoch 2
    resumes there (sample plan, generator and RNG state restored) and ends bit-identical."""
    torch.set_num_threads(1)
    images, labels = _data()
    recipe = ft.FinetuneRecipe(epochs=3, batch_size=8, warmup_epochs=1)
    data = ArraySource(images, labels, MEAN, STD)

    def fresh():
        torch.manual_seed(123)
        return build_backbone(arch, embedding, drop_path=recipe.drop_path)

    often = ft.Speed(save_minutes=1e-9)  # a save after every step
    kwargs = dict(num_classes=10, arm="bn", recipe=recipe, seed=5, speed=often)
    full, model_full = ft.finetune(fresh(), data, data, **kwargs)

    def kill(epoch, step):
        if (epoch, step) == (1, 2):
            raise Killed

    with pytest.raises(Killed):
        ft.finetune(fresh(), data, data, state_path=tmp_path / "s.pt", on_step_end=kill, **kwargs)
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 2) and len(state["plan"]["order"]) == 48
    torch.manual_seed(999)
    resumed, model_resumed = ft.finetune(
        fresh(), data, data, state_path=tmp_path / "s.pt", **kwargs
    )
    _assert_same_weights(model_full, model_resumed)
    assert resumed["top1"] == full["top1"]
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_saves_the_state_mid_epoch_and_stops(tmp_path, signum):
    """SIGUSR1 / SIGTERM delivered to the running job (the SLURM warning before the time
    limit, a preemption): the step in flight finishes, the state is saved, Preempted is
    raised; the rerun resumes at that step and ends with the uninterrupted run's weights."""
    torch.set_num_threads(1)
    images, labels = _data()
    recipe = ft.FinetuneRecipe(epochs=2, batch_size=8, warmup_epochs=0)
    data = ArraySource(images, labels, MEAN, STD)

    def fresh():
        torch.manual_seed(7)
        return build_backbone("resnet10_tiny", "avgpool")

    kwargs = dict(num_classes=10, arm="raw", recipe=recipe, seed=3)
    full, model_full = ft.finetune(fresh(), data, data, **kwargs)
    previous = signal.getsignal(signum)

    def send(epoch, step):
        if (epoch, step) == (0, 2):
            os.kill(os.getpid(), signum)

    with pytest.raises(ft.Preempted, match="state saved at epoch 1, step 3"):
        ft.finetune(fresh(), data, data, state_path=tmp_path / "p.pt", on_step_end=send, **kwargs)
    assert signal.getsignal(signum) is previous  # the job's handlers are gone again
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 3)
    resumed, model_resumed = ft.finetune(
        fresh(), data, data, state_path=tmp_path / "p.pt", **kwargs
    )
    _assert_same_weights(model_full, model_resumed)


def test_precision_on_cpu_fp32_and_tf32_are_identical_bf16_is_not():
    """TF32 is a CUDA feature: on a CPU 'tf32' (the default) trains bit-identically to strict
    'fp32' and records fp32; 'bf16' autocasts (different numbers, recorded)."""
    torch.set_num_threads(1)
    images, labels = _data()
    recipe = ft.FinetuneRecipe(epochs=1, batch_size=16, warmup_epochs=0)
    data = ArraySource(images, labels, MEAN, STD)
    models, rows = {}, {}
    for precision in ("fp32", "tf32", "bf16"):
        torch.manual_seed(1)
        backbone = build_backbone("resnet10_tiny", "avgpool")
        rows[precision], models[precision] = ft.finetune(
            backbone,
            data,
            data,
            num_classes=10,
            arm="bn",
            recipe=recipe,
            seed=0,
            speed=ft.Speed(precision=precision),
        )
    _assert_same_weights(models["fp32"], models["tf32"])
    assert rows["tf32"]["precision"] == "fp32" and rows["bf16"]["precision"] == "bf16"
    differs = [
        not torch.equal(v, models["bf16"].state_dict()[k])
        for k, v in models["fp32"].state_dict().items()
        if v.is_floating_point()
    ]
    assert any(differs)
    assert {rows[p]["device"] for p in rows} == {"cpu"} and rows["fp32"]["processes"] == 1


def test_recipe_validation():
    with pytest.raises(ValueError, match="warmup_epochs"):
        ft.FinetuneRecipe(epochs=3, batch_size=8, warmup_epochs=3)
    with pytest.raises(ValueError, match="epochs"):
        ft.FinetuneRecipe(epochs=0, batch_size=8)


def test_state_of_other_settings_is_not_resumed(tmp_path):
    images, labels = _data()
    recipe = ft.FinetuneRecipe(epochs=2, batch_size=16, warmup_epochs=0)
    data = ArraySource(images, labels, MEAN, STD)
    kwargs = dict(num_classes=10, arm="raw", recipe=recipe, seed=1, state_path=tmp_path / "s.pt")

    def run(fingerprint, kill=False):
        torch.manual_seed(0)
        backbone = build_backbone("resnet10_tiny", "avgpool")

        def stop(epoch):
            if kill:
                raise Killed

        return ft.finetune(
            backbone, data, data, fingerprint=fingerprint, on_epoch_end=stop, **kwargs
        )

    clean, model_clean = run("a")
    assert not (tmp_path / "s.pt").exists()  # removed once the run completed
    with pytest.raises(Killed):
        run("b", kill=True)  # leaves a state of epoch 0 with fingerprint "b"
    _, model_other = run("a")  # other settings: must start from scratch, not resume "b"
    for key, value in model_clean.state_dict().items():
        assert torch.equal(value, model_other.state_dict()[key]), key


def test_authors_quirks_restore_the_authors_recipe_per_method():
    recipe = ft.FinetuneRecipe(epochs=2, batch_size=8, lr=0.1, warmup_epochs=0)
    # the default recipe is the paper's, for every method
    for method in ("mae", "maskfeat", "dino"):
        assert ft.with_authors_quirks(recipe, method) == recipe
    quirky = ft.FinetuneRecipe(epochs=2, batch_size=8, lr=0.1, warmup_epochs=0, authors_quirks=True)
    assert ft.with_authors_quirks(quirky, "mae").drop_path == 0.0
    assert ft.with_authors_quirks(quirky, "mae").layer_decay == 0.65
    assert ft.with_authors_quirks(quirky, "maskfeat").drop_path == 0.0
    assert ft.with_authors_quirks(quirky, "maskfeat").layer_decay == 1.0
    assert ft.with_authors_quirks(quirky, "dino") == quirky  # drop-path and decay as the paper

    def lrs(recipe):
        model = ft.Classifier(build_backbone("vit_tiny_p8", "cls"), 10, "raw")
        return {name: g["lr"] for g in ft.param_groups(model, recipe) for name in g["names"]}

    depth = 4
    dino = lrs(ft.with_authors_quirks(quirky, "dino"))
    # the final norm trains at the last block's rate (0.65 x lr), not at the full lr
    assert dino["backbone.norm.weight"] == pytest.approx(0.1 * 0.65)
    assert dino["backbone.norm.weight"] == dino[f"backbone.blocks.{depth - 1}.mlp.fc2.weight"]
    assert dino["backbone.blocks.0.attn.qkv.weight"] == pytest.approx(0.1 * 0.65**depth)
    assert dino["head.weight"] == pytest.approx(0.1)
    # MaskFeat: no layer decay at all
    maskfeat = lrs(ft.with_authors_quirks(quirky, "maskfeat"))
    assert all(lr == pytest.approx(0.1) for lr in maskfeat.values())


def _spec(tmp_path, images, labels, **changes):
    """A RunSpec over a demo-style array data set written to tmp_path."""
    from workflow_scripts.backbones import save_weights

    weights = tmp_path / "w.safetensors"
    if not weights.exists():
        torch.manual_seed(0)
        save_weights(build_backbone("resnet10_tiny", "avgpool"), weights)
        np.save(tmp_path / "images.npy", images)
        np.save(tmp_path / "labels.npy", labels)
    split = {
        "source": {"key": "d", "kind": "synthetic"},
        "images_path": str(tmp_path / "images.npy"),
        "labels_path": str(tmp_path / "labels.npy"),
        "spec": {"mean": MEAN, "std": STD},
        "data_root": str(tmp_path),
    }
    spec = ft.RunSpec(
        weights=str(weights),
        weights_sha256="x",
        model={
            "key": "m",
            "method": "simclr",
            "source": "demo",
            "arch": "resnet10_tiny",
            "embedding": "avgpool",
        },
        protocol="finetune",
        subset_seed=None,
        arm="bn",
        recipe=ft.FinetuneRecipe(epochs=2, batch_size=12, warmup_epochs=0, seed=3),
        index=None,
        train=split,
        test=split,
        num_classes=3,
        state_path=str(tmp_path / "state" / "run.pt"),
        speed=ft.Speed(device="cpu"),
        threads=1,
    )
    import dataclasses

    return dataclasses.replace(spec, **changes)


def test_a_run_on_a_few_shot_subset_equals_fine_tuning_on_that_subset(tmp_path):
    from workflow_scripts.backbones import load_backbone
    from workflow_scripts.fewshot import fewshot_indices

    torch.set_num_threads(1)
    images, _ = _data(n=60)
    labels = np.arange(60) % 3
    index = fewshot_indices(labels, 3, 20, dataset="d", seed=7)
    spec = _spec(
        tmp_path, images, labels, protocol="fewshot20", subset_seed=7, index=index, arm="raw"
    )
    row = ft.run(spec)
    assert (row["protocol"], row["subset_seed"], row["arm"], row["n_train"]) == (
        "fewshot20",
        7,
        "raw",
        12,
    )
    data = ArraySource(images, labels, MEAN, STD)
    direct, _ = ft.finetune(
        load_backbone(spec.weights, "resnet10_tiny", "avgpool"),
        ArraySource(images[index], labels[index], MEAN, STD),
        data,
        num_classes=3,
        arm="raw",
        recipe=spec.recipe,
        seed=spec.recipe.seed,
    )
    assert row["top1"] == direct["top1"]
    assert not list((tmp_path / "state").glob("*.pt"))  # finished runs leave no state


def test_two_data_parallel_processes_match_one(tmp_path):
    """finetune.gpus 2 on the CPU (gloo, torchrun's launcher): each rank trains on half of
    every global batch with synchronised BatchNorm and averaged gradients. Same global batch,
    lr and sample order as one process, so the run equals one process's up to float rounding:
    the global sums are formed in another order (per-shard partial sums, then the all-reduce)
    and the BN variance as E[x^2] - E[x]^2 instead of torch's own formula. Not bitwise; the
    tolerance (1e-4 relative) is far above that rounding (~1e-6) and far below any real
    difference (a wrong loss scale, unsynchronised BN or a different sample order moves the
    weights by 1e-2 or more); the accuracy may move by one sample at a decision boundary."""
    torch.set_num_threads(1)
    images, _ = _data(n=48)
    labels = np.arange(48) % 3
    spec = _spec(tmp_path, images, labels)
    one, weights_one = ft.run(spec, with_weights=True)
    two, weights_two = ft.run(spec, processes=2, with_weights=True)
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    assert abs(one["top1"] - two["top1"]) <= 100 / 48 + 1e-9
    assert weights_one.keys() == weights_two.keys()
    moved = 0
    for key, value in weights_one.items():
        if value.is_floating_point():
            torch.testing.assert_close(weights_two[key], value, rtol=1e-4, atol=1e-5, msg=key)
            moved += not torch.equal(value, spec_initial(spec)[key])
    assert moved > 10  # training changed the weights that were compared


def spec_initial(spec):
    """The model a run starts from (backbone weights, head init from the seed)."""
    from workflow_scripts.backbones import load_backbone

    torch.manual_seed(spec.recipe.seed)
    return ft.Classifier(
        load_backbone(spec.weights, "resnet10_tiny", "avgpool"), spec.num_classes, spec.arm
    ).state_dict()


def _training(tmp_path, **changes):
    """A fresh ``_Training`` of a tiny ResNet (one process), saving to tmp_path/t.pt."""
    recipe = ft.FinetuneRecipe(epochs=3, batch_size=8, warmup_epochs=1)
    torch.manual_seed(0)
    backbone = build_backbone("resnet10_tiny", "avgpool")
    training = ft._start_training(
        backbone, 10, "bn", recipe, 4, torch.device("cpu"), ft.Speed(save_minutes=60)
    )
    training.state_path, training.fingerprint = tmp_path / "t.pt", "f"
    training.net = training.model
    for name, value in changes.items():
        setattr(training, name, value)
    return training


def test_data_parallel_loss_scaling_averages_to_the_global_batch_mean(tmp_path):
    """``_Training.loss`` with 2 ranks: the mean of the two shards' losses (what DDP's gradient
    averaging sees) is the plain cross-entropy mean over the global batch -- also for the
    epoch's short last batch."""
    torch.manual_seed(0)
    logits, y = torch.randn(19, 10), torch.randint(0, 10, (19,))
    plan = {"order": torch.arange(19)}
    for step, size in ((0, 8), (2, 3)):  # a full batch, the short last one (shards of 2 and 1)
        part = slice(step * 8, step * 8 + size)
        shards = torch.tensor_split(torch.arange(size), 2)
        losses = [
            _training(tmp_path, world=2, rank=rank, plan=plan, step=step).loss(
                logits[part][idx], y[part][idx]
            )
            for rank, idx in enumerate(shards)
        ]
        expected = torch.nn.functional.cross_entropy(logits[part], y[part])
        torch.testing.assert_close((losses[0] + losses[1]) / 2, expected)


class _Signals:
    def __init__(self, received=None):
        self.received = received


def test_save_if_due_saves_on_time_or_signal_and_stops_on_a_signal(tmp_path):
    training = _training(tmp_path, epoch=1, step=3, plan={"order": torch.arange(5)})
    training.last_save = ft.time.monotonic()
    training.save_if_due(_Signals())  # save_minutes (60) not yet passed, no signal
    assert not training.state_path.exists()
    training.speed = ft.Speed(save_minutes=0)
    training.save_if_due(_Signals())
    state = torch.load(training.state_path, weights_only=True)
    assert (state["epoch"], state["step"], state["fingerprint"]) == (1, 3, "f")
    training.state_path.unlink()
    training.speed = ft.Speed(save_minutes=60)
    with pytest.raises(ft.Preempted, match="saved at epoch 2, step 3"):
        training.save_if_due(_Signals(signal.SIGTERM))
    assert training.state_path.exists()


def test_a_saved_state_restores_the_training_state_and_the_global_rng(tmp_path):
    """``save`` then ``restore`` into a freshly started run: weights, optimiser, schedule,
    generator, position in the epoch and the global RNG continue where the save left them."""
    training = _training(tmp_path, epoch=2, step=1, plan={"order": torch.arange(6)})
    with torch.no_grad():
        training.model.head.bias.add_(1.0)
    training.scheduler.step()
    training.gen.manual_seed(77)
    torch.manual_seed(31)
    training.save()
    expected_draw = torch.rand(3)
    torch.manual_seed(999)
    fresh = _training(tmp_path)
    fresh.restore(ft._load_state(fresh.state_path, "f"))
    assert (fresh.epoch, fresh.step) == (2, 1) and torch.equal(fresh.plan["order"], torch.arange(6))
    _assert_same_weights(training.model, fresh.model)
    assert fresh.scheduler.state_dict() == training.scheduler.state_dict()
    assert torch.equal(fresh.gen.get_state(), training.gen.get_state())
    assert torch.equal(torch.rand(3), expected_draw)
