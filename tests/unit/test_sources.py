"""Image sources of the trained protocols: real files through the paper transforms, in the data
set's order, uint8 batches normalised on the device exactly like the per-image float path,
per-sample augmentation seeds (independent of workers and of the samples skipped on resume),
and fine-tuning on them resumes exactly (the data-loader workers included)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as classic

from tests import dataset_layouts as layouts
from workflow_scripts import finetune as ft
from workflow_scripts.backbones import build_backbone
from workflow_scripts.sources import ArraySource, FileSource

SPEC = {
    "resize": 36,
    "crop": 32,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    truth = layouts.imagenet(tmp_path_factory.mktemp("data"))
    items, labels = truth["splits"]["train"]
    return FileSource("imagenet", truth["root"], items, np.array(labels), SPEC, "none"), truth


def test_eval_batches_equal_the_classic_torchvision_pipeline_in_order(imagenet):
    source, truth = imagenet
    reference = classic.Compose(
        [
            classic.Resize(36, interpolation=classic.InterpolationMode.BILINEAR),
            classic.CenterCrop(32),
            classic.ToTensor(),
            classic.Normalize(SPEC["mean"], SPEC["std"]),
        ]
    )
    xs, ys = zip(*source.eval_batches(4))
    assert {x.dtype for x in xs} == {torch.uint8}  # workers ship uint8 crops
    x = torch.cat([source.prepare(x, torch.device("cpu")) for x in xs])
    y = torch.cat(ys)
    items, labels = truth["splits"]["train"]
    assert y.tolist() == labels
    for i, item in enumerate(items):
        with Image.open(truth["root"] / item) as img:
            expected = reference(img.convert("RGB"))
        torch.testing.assert_close(x[i], expected, atol=2e-2, rtol=0)  # v2 vs classic resize


def test_train_batches_follow_the_generator(imagenet):
    source, _ = imagenet
    source = FileSource(
        source.kind, source.root, source.items, source.labels, SPEC, "none", workers=2
    )

    def batches(seed, src=source):
        torch.manual_seed(99)  # the global RNG plays no part
        gen = torch.Generator().manual_seed(seed)
        return list(src.train_batches(4, gen, src.plan_epoch(gen)))

    first, again, other = batches(3), batches(3), batches(4)
    assert sum(len(y) for _, y in first) == len(source)  # 10 images: 4 + 4 + 2
    # per-sample seeds: the same augmented images whatever the number of workers
    in_process = FileSource(source.kind, source.root, source.items, source.labels, SPEC, "none")
    for (a, ya), (b, yb) in zip(first, batches(3, in_process), strict=True):
        assert torch.equal(ya, yb) and torch.equal(a, b)
    for (a, ya), (b, yb) in zip(first, again, strict=True):
        assert torch.equal(ya, yb) and torch.equal(a, b)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, other))
    assert source.subset(np.array([3, 0])).items == [source.items[3], source.items[0]]


def test_a_resumed_epoch_decodes_only_the_remaining_samples(imagenet, monkeypatch):
    """Batches from step 1 equal the tail of a whole epoch, bit for bit, and the images of
    step 0 are never opened."""
    from workflow_scripts.datasets import loader

    source, _ = imagenet
    plan = source.plan_epoch(torch.Generator().manual_seed(5))
    whole = list(source.train_batches(4, None, plan))
    opened = []
    real = loader.ImageList.__getitem__

    def spy(self, key):
        opened.append(key[0])
        return real(self, key)

    monkeypatch.setattr(loader.ImageList, "__getitem__", spy)
    tail = list(source.train_batches(4, None, plan, start=1))
    assert len(tail) == len(whole) - 1
    for (a, ya), (b, yb) in zip(whole[1:], tail, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert sorted(opened) == sorted(plan["order"][4:].tolist())


def test_shards_of_a_global_batch_are_disjoint_and_cover_it(imagenet):
    source, _ = imagenet
    plan = source.plan_epoch(torch.Generator().manual_seed(2))
    whole = list(source.train_batches(4, None, plan))
    shards = [list(source.train_batches(4, None, plan, shard=(rank, 2))) for rank in (0, 1)]
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([shards[0][step][0], shards[1][step][0]]), x)
        assert torch.equal(torch.cat([shards[0][step][1], shards[1][step][1]]), y)


class Killed(RuntimeError):
    pass


def test_finetuning_on_files_with_workers_resumes_exactly(imagenet, tmp_path):
    source, _ = imagenet
    source = FileSource(
        source.kind, source.root, source.items, source.labels, SPEC, "none", workers=2
    )
    recipe = ft.FinetuneRecipe(epochs=3, batch_size=4, warmup_epochs=1)

    def run(path, kill_after=None):
        torch.manual_seed(0)
        backbone = build_backbone("resnet10_tiny", "avgpool")

        def stop(epoch):
            if epoch == kill_after:
                raise Killed

        return ft.finetune(
            backbone,
            source,
            source,
            num_classes=3,
            arm="bn",
            recipe=recipe,
            seed=1,
            state_path=path,
            on_epoch_end=stop,
        )

    full, model_full = run(tmp_path / "a.pt")
    with pytest.raises(Killed):
        run(tmp_path / "b.pt", kill_after=0)
    resumed, model_resumed = run(tmp_path / "b.pt")
    for key, value in model_full.state_dict().items():
        assert torch.equal(value, model_resumed.state_dict()[key]), key
    assert resumed["top1"] == full["top1"] and full["n_train"] == 10


def test_array_source_checks_lengths():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ArraySource(np.zeros((3, 8, 8, 3), np.uint8), np.zeros(2), [0.5] * 3, [0.25] * 3)
