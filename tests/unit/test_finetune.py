"""Fine-tuning: layer decay per parameter, ViT extras active, BN arm, exact resume."""

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
        assert lr_of[f"backbone.blocks.{i}.attn.qkv.weight"] == pytest.approx(0.1 * 0.65 ** (depth - i))
        assert lr_of[f"backbone.blocks.{i}.norm2.bias"] == pytest.approx(0.1 * 0.65 ** (depth - i))
    assert lr_of["backbone.norm.weight"] == pytest.approx(0.1)
    assert lr_of["head.weight"] == lr_of["bn.weight"] == pytest.approx(0.3)
    # every parameter is in exactly one group
    names = [n for g in ft.param_groups(model, recipe) for n in g["names"]]
    assert len(names) == len(set(names)) == len(list(model.named_parameters()))


def test_resnet_has_no_layer_decay():
    model = ft.Classifier(build_backbone("resnet10_tiny", "avgpool"), 10, "raw")
    groups = ft.param_groups(model, ft.FinetuneRecipe(epochs=2, batch_size=8, lr=0.1, warmup_epochs=0))
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


@pytest.mark.parametrize(("arch", "embedding"), [("vit_tiny_p8", "cls"), ("resnet10_tiny", "avgpool")])
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
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 1
    torch.manual_seed(999)  # the global RNG state is restored from the file, not inherited
    resumed, model_resumed = ft.finetune(fresh(), data, data, state_path=tmp_path / "b.pt", **kwargs)
    for key, value in model_full.state_dict().items():
        assert torch.equal(value, model_resumed.state_dict()[key]), key
    assert resumed["top1"] == full["top1"]


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

        return ft.finetune(backbone, data, data, fingerprint=fingerprint, on_epoch_end=stop,
                           **kwargs)

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
    assert dino["backbone.blocks.0.attn.qkv.weight"] == pytest.approx(0.1 * 0.65 ** depth)
    assert dino["head.weight"] == pytest.approx(0.1)
    # MaskFeat: no layer decay at all
    maskfeat = lrs(ft.with_authors_quirks(quirky, "maskfeat"))
    assert all(lr == pytest.approx(0.1) for lr in maskfeat.values())


def test_run_protocols_runs_every_few_shot_subset_seed(tmp_path):
    """Extra few-shot subset seeds: one run per (subset seed, arm) on exactly that subset."""
    from workflow_scripts.backbones import save_weights
    from workflow_scripts.fewshot import fewshot_indices

    torch.set_num_threads(1)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(build_backbone("resnet10_tiny", "avgpool"), weights)
    images, labels = _data(n=60)
    labels = np.arange(60) % 3
    data = ArraySource(images, labels, MEAN, STD)
    subsets = {"fewshot20": {s: fewshot_indices(labels, 3, 20, dataset="d", seed=s) for s in (42, 7)}}
    recipe = ft.FinetuneRecipe(epochs=1, batch_size=4, warmup_epochs=0)
    rows = ft.run_protocols(
        weights=str(weights), model={"key": "m", "method": "simclr", "arch": "resnet10_tiny",
                                     "embedding": "avgpool"},
        protocols=["fewshot20"], arms=["raw", "bn"], train=data, test=data, subsets=subsets,
        recipes={"fewshot20": recipe}, num_classes=3, state_dir=tmp_path / "state",
        weights_sha256="x")["fewshot20"]
    assert [(r["subset_seed"], r["arm"]) for r in rows] == [(42, "raw"), (42, "bn"), (7, "raw"), (7, "bn")]
    assert all(r["n_train"] == 12 for r in rows)  # floor(0.2 x 60 / 3) = 4 per class
    assert not subsets["fewshot20"][42].tolist() == subsets["fewshot20"][7].tolist()
    # the first seed's runs equal a direct fine-tuning run on that subset
    index = subsets["fewshot20"][42]
    from workflow_scripts.backbones import load_backbone

    direct, _ = ft.finetune(load_backbone(weights, "resnet10_tiny", "avgpool"),
                            ArraySource(images[index], labels[index], MEAN, STD), data,
                            num_classes=3, arm="raw", recipe=recipe, seed=recipe.seed)
    assert rows[0]["top1"] == direct["top1"]
    assert not list((tmp_path / "state").glob("*.pt"))  # finished runs leave no state
