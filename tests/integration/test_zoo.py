"""The real-checkpoint zoo through Snakemake: download (loopback HTTP, file://, local path) and
conversion of a fabricated checkpoint in every source format, checked against the random
weights it was made from; failures (sha256 mismatch, unreachable URL, a pickle that would run
code, extra key) end with a clear error and leave no file. No internet: everything is served on 127.0.0.1.

Most formats use the small demo architectures (the conversion code does not depend on sizes);
the real resnet50, vit_base_patch16_224 and beitv2_base_patch16_224 are each exercised once.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from checkpoint_layouts import (  # noqa: E402
    EMBEDDING,
    LoopbackServer,
    embedding_of,
    free_port,
    other,
    random_reference,
    write,
)

from snakerun import smoke_config  # noqa: E402

from workflow_scripts.backbones import load_backbone  # noqa: E402


def _sha256(path) -> str:
    """The oracle: hashlib over the whole file (independent of the chunked implementation)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


ROOT = Path(__file__).resolve().parents[2]
FAMILY = {
    "resnet10_tiny": "resnet",
    "resnet50": "resnet",
    "vit_tiny_p8": "vit",
    "vit_base_patch16_224": "vit",
    "beitv2_base_patch16_224": "vit",
}

pytestmark = pytest.mark.integration

# key -> (format, arch, how the url is given); every format of config/models_paper.tsv
GOOD = {
    "z_vissl_r50": ("vissl_trunk", "resnet50", "http"),
    "z_npid": ("npid_numpy", "resnet10_tiny", "http"),
    "z_swav": ("deepcluster", "resnet10_tiny", "http"),
    "z_moco_v2": ("moco_v2", "resnet10_tiny", "http"),
    "z_moco_v3_r": ("moco_v3", "resnet10_tiny", "http"),
    "z_mmselfsup_r": ("mmselfsup_resnet", "resnet10_tiny", "http"),
    "z_byol": ("byol_online", "resnet10_tiny", "http"),
    "z_densecl": ("extracted_backbone", "resnet10_tiny", "http"),
    "z_torchvision": ("torchvision", "resnet10_tiny", "file"),
    "z_timm": ("timm_vit", "vit_tiny_p8", "local"),
    "z_ibot": ("ibot", "vit_tiny_p8", "http"),
    "z_mae": ("mae", "vit_tiny_p8", "http"),
    "z_mmselfsup_v": ("mmselfsup_vit", "vit_tiny_p8", "http"),
    "z_moco_v3_vitb": ("moco_v3", "vit_base_patch16_224", "http"),
    "z_beit": ("beit_v2", "beitv2_base_patch16_224", "http"),
    "z_safetensors": ("safetensors", "vit_tiny_p8", "http"),
}
BAD = ["z_bad_sha", "z_unreachable", "z_payload", "z_extra_key"]
# formats whose fabricated files hold more than tensors: read by the restricted unpickler
RESTRICTED = {"npid_numpy", "mmselfsup_resnet", "mmselfsup_vit", "mae", "beit_v2"}
PINNED = {"z_vissl_r50", "z_mae"}  # rows whose table pins the (correct) sha256


class _Payload:
    """Unpickled in full, runs ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def snakemake(workdir, configfile, *args):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "1",
        *args,
        "--configfile",
        str(configfile),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1500)


def _row(key, fmt, arch, url, sha256="", trusted="false"):
    embedding = EMBEDDING[arch]
    return "\t".join(
        [
            key,
            "fabricated",
            arch,
            FAMILY[arch],
            "discriminative",
            embedding,
            "checkpoint",
            "",
            "",
            "",
            fmt,
            url,
            sha256,
            trusted,
            "test row",
        ]
    )


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    base = tmp_path_factory.mktemp("zoo")
    www, work, elsewhere = base / "www", base / "work", base / "elsewhere"
    for d in (www, work / "mine", elsewhere):
        d.mkdir(parents=True)
    refs, momenta = {}, {}
    for index, (key, (fmt, arch, how)) in enumerate(GOOD.items()):
        refs[key] = random_reference(arch, seed=100 + index)
        momenta[key] = other(refs[key], seed=200 + index) if fmt == "moco_v3" else None
        folder = {"http": www, "file": elsewhere, "local": work / "mine"}[how]
        write(
            folder / f"{key}.pth", fmt, refs[key], momentum=momenta[key], vit=FAMILY[arch] == "vit"
        )
    # failures
    bad_ref = random_reference("resnet10_tiny", seed=300)
    write(www / "z_bad_sha.pth", "deepcluster", bad_ref)
    # a checkpoint that runs a shell command when unpickled in full
    marker = base / "payload_ran"
    torch.save(
        {
            "classy_state_dict": {
                "base_model": {
                    "model": {"trunk": {f"_feature_blocks.{k}": v for k, v in bad_ref.items()}}
                }
            },
            "hook": _Payload(f"touch {marker}"),
        },
        www / "z_payload.pth",
    )
    extra = dict(bad_ref, **{"layer5.0.conv1.weight": torch.zeros(4, 4)})
    write(www / "z_extra_key.pth", "deepcluster", extra)

    with LoopbackServer(www) as server:
        rows = []
        for key, (fmt, arch, how) in GOOD.items():
            url = {
                "http": f"{server.url}/{key}.pth",
                "file": (elsewhere / f"{key}.pth").as_uri(),
                "local": f"mine/{key}.pth",
            }[how]  # relative to the working directory
            pinned = _sha256(www / f"{key}.pth") if key in PINNED else ""
            rows.append(_row(key, fmt, arch, url, pinned))
        rows += [
            _row(
                "z_bad_sha", "deepcluster", "resnet10_tiny", f"{server.url}/z_bad_sha.pth", "0" * 64
            ),
            _row(
                "z_unreachable",
                "deepcluster",
                "resnet10_tiny",
                f"http://127.0.0.1:{free_port()}/gone.pth",
            ),
            _row("z_payload", "vissl_trunk", "resnet10_tiny", f"{server.url}/z_payload.pth"),
            _row("z_extra_key", "deepcluster", "resnet10_tiny", f"{server.url}/z_extra_key.pth"),
        ]
        header = (
            "key method arch family paradigm embedding source seed steps epochs format url "
            "sha256 trusted note"
        ).replace(" ", "\t")
        table = base / "models.tsv"
        table.write_text("\n".join([header, *rows]) + "\n")
        config = smoke_config()
        config["models_table"] = str(table)
        config["checkpoints"] = {"retries": 1, "backoff": 0.05, "timeout": 20}
        configfile = base / "config.yaml"
        configfile.write_text(yaml.safe_dump(config))
        targets = [f"results/checkpoints/{k}.safetensors" for k in [*GOOD, *BAD]]
        first = snakemake(work, configfile, "--keep-going", *targets)
        # the authors' MoCo-v3 quirk: only the two moco_v3 rows are converted again
        config["checkpoints"]["moco_v3_encoder"] = "momentum"
        momentum_file = base / "momentum.yaml"
        momentum_file.write_text(yaml.safe_dump(config))
        plan = snakemake(work, momentum_file, "-n", *targets[: len(GOOD)])
        base_weights = {
            k: (work / f"results/checkpoints/{k}.safetensors").read_bytes()
            for k in ("z_moco_v3_r", "z_moco_v3_vitb")
            if (work / f"results/checkpoints/{k}.safetensors").exists()
        }
        second = snakemake(work, momentum_file, *targets[: len(GOOD)])
        hits = list(server.hits)
    return dict(
        work=work,
        refs=refs,
        momenta=momenta,
        first=first,
        plan=plan,
        second=second,
        base_weights=base_weights,
        hits=hits,
        www=www,
        marker=marker,
        configfile=momentum_file,
        good_targets=targets[: len(GOOD)],
        elsewhere=elsewhere,
    )


def _job_counts(text):
    """rule -> jobs of a dry run's 'Job stats' table."""
    lines = text[text.index("Job stats") :].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _output(proc):
    return proc.stdout + proc.stderr


def _assert_exact(path, arch, ref):
    from safetensors.torch import load_file

    state = load_file(str(path))
    assert set(state) == set(ref)
    for key, value in ref.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    model = load_backbone(path, arch, EMBEDDING[arch])  # strict=True
    converted = embedding_of(model, arch)
    assert torch.equal(converted, embedding_of(model, arch, ref))
    return model


def test_first_run_fails_only_on_the_bad_rows(zoo):
    out = _output(zoo["first"])
    assert zoo["first"].returncode != 0, out[-3000:]
    work = zoo["work"]
    done = {k for k in [*GOOD, *BAD] if (work / f"results/checkpoints/{k}.safetensors").exists()}
    assert done == set(GOOD), out[-6000:]


@pytest.mark.parametrize("key", [k for k in GOOD if k != "z_beit"])
def test_converted_weights_and_embeddings_equal_the_originals(zoo, key):
    fmt, arch, how = GOOD[key]
    work = zoo["work"]
    ref = zoo["refs"][key]
    if fmt == "moco_v3":  # the second run switched to the momentum encoder
        ref = zoo["momenta"][key]
    _assert_exact(work / f"results/checkpoints/{key}.safetensors", arch, ref)
    side = json.loads((work / f"results/checkpoints/{key}.json").read_text())
    raw = work / f"results/downloads/{key}.ckpt"
    assert side["format"] == fmt and side["arch"] == arch and side["model"] == key
    assert (
        side["source_sha256"]
        == _sha256(raw)
        == (work / f"results/downloads/{key}.ckpt.sha256").read_text().split()[0]
    )
    assert side["sha256"] == _sha256(work / f"results/checkpoints/{key}.safetensors")
    assert side["source_sha256_pinned"] == (key in PINNED)
    assert (
        side["embed_dim"]
        == {"resnet10_tiny": 128, "resnet50": 2048, "vit_tiny_p8": 64, "vit_base_patch16_224": 768}[
            arch
        ]
    )
    assert side["unpickling"] == (
        "restricted"
        if fmt in RESTRICTED
        else "safetensors"
        if fmt == "safetensors"
        else "weights_only"
    )


def test_beit_v2_real_architecture(zoo):
    work = zoo["work"]
    path = work / "results/checkpoints/z_beit.safetensors"
    model = _assert_exact(path, "beitv2_base_patch16_224", zoo["refs"]["z_beit"])
    info = json.loads((work / "results/checkpoints/z_beit.json").read_text())
    added = [f"blocks.{i}.attn.relative_position_bias_table" for i in range(12)]
    assert sorted(info["added_keys"]) == sorted(added + ["fc_norm.weight", "fc_norm.bias"])
    assert {
        "norm.weight",
        "norm.bias",
        "mask_token",
        "lm_head.weight",
        "lm_head.bias",
        "cls_pt_layers.0.norm1.weight",
        "cls_pt_layers.0.attn.qkv.weight",
        "rel_pos_bias.relative_position_index",
        "rel_pos_bias.relative_position_bias_table",
    } == set(info["dropped_keys"])
    assert info["embed_dim"] == 768
    # the paper's embedding, re-computed from timm's tokens: mean over the patch tokens (CLS
    # excluded) through a LayerNorm with weight 1, bias 0 (timm's BEiT eps 1e-6)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = torch.nn.functional.layer_norm(tokens[:, 1:].mean(1), (768,), eps=1e-6)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_moco_v3_switch_reconverts_only_the_moco_rows(zoo):
    plan = _output(zoo["plan"])
    assert zoo["plan"].returncode == 0, plan[-3000:]
    assert _job_counts(plan) == {"convert_checkpoint": 2, "total": 2}
    assert zoo["second"].returncode == 0, _output(zoo["second"])[-3000:]
    # before the switch the files held the official base encoder
    from safetensors.torch import load

    for key, blob in zoo["base_weights"].items():
        state = load(blob)
        assert all(torch.equal(state[k], v) for k, v in zoo["refs"][key].items())
    assert set(zoo["base_weights"]) == {"z_moco_v3_r", "z_moco_v3_vitb"}
    info = json.loads((zoo["work"] / "results/checkpoints/z_moco_v3_vitb.json").read_text())
    assert info["options"] == {"moco_v3_encoder": "momentum"}


def test_a_replaced_local_checkpoint_reruns_its_row_only(zoo):
    """A local checkpoint (a path, a file:// URL) replaced at the same path by other bytes with
    an older time, as `mv` of an earlier download leaves it, is copied and converted again; a
    touch, or the first bytes put back, plans nothing (issue 28)."""
    work, configfile, targets = zoo["work"], zoo["configfile"], zoo["good_targets"]
    local, remote = work / "mine" / "z_timm.pth", zoo["elsewhere"] / "z_torchvision.pth"
    originals = {path: (path.read_bytes(), path.stat().st_mtime) for path in (local, remote)}
    old = 946684800  # 2000-01-01

    def dry_run():
        proc = snakemake(work, configfile, "-n", *targets)
        assert proc.returncode == 0, _output(proc)[-3000:]
        return _output(proc)

    try:
        for path in (local, remote):
            os.utime(path)  # a touch
        assert "Nothing to be done" in dry_run()
        for path in (local, remote):
            tmp = path.with_suffix(".new")
            tmp.write_bytes(originals[path][0] + b"other bytes")
            os.utime(tmp, (old, old))
            os.replace(tmp, path)
        plan = dry_run()
        assert _job_counts(plan) == {
            "convert_checkpoint": 2,
            "download_checkpoint": 2,
            "total": 4,
        }, plan[-3000:]
        assert "Params have changed" in plan
        jobs = set(re.findall(r"wildcards: model=(\w+)", plan))
        assert jobs == {"z_timm", "z_torchvision"}
    finally:
        for path, (data, mtime) in originals.items():
            path.write_bytes(data)
            os.utime(path, (mtime, mtime))
    assert "Nothing to be done" in dry_run()


def test_unpinned_download_prints_the_row_to_pin(zoo):
    out = _output(zoo["first"])
    digest = _sha256(zoo["www"] / "z_swav.pth")
    assert (
        "model 'z_swav' has no pinned sha256; pin it by setting column 'sha256' of row 'z_swav'"
        in out
    )
    row = next(line for line in out.splitlines() if line.startswith("z_swav\tfabricated"))
    assert row.split("\t")[12] == digest
    assert "model 'z_vissl_r50' has no pinned sha256" not in out


def test_sha256_mismatch_fails_and_leaves_no_file(zoo):
    out = _output(zoo["first"])
    assert "model 'z_bad_sha': cannot download" in out and "sha256 mismatch" in out
    assert "the table pins " + "0" * 64 in out
    downloads = zoo["work"] / "results/downloads"
    assert not [p.name for p in downloads.iterdir() if "z_bad_sha" in p.name]
    # a complete download with the wrong sha256 is permanent: fetched once, neither retried
    # within the job (checkpoints.retries = 1) nor as a job (rule retries: 0) (issue 28)
    assert zoo["hits"].count("/z_bad_sha.pth") == 1


def test_unreachable_url_names_the_model(zoo):
    out = _output(zoo["first"])
    assert "model 'z_unreachable': cannot download http://127.0.0.1:" in out
    assert "after 2 attempt(s): ConnectionError" in out
    assert not (zoo["work"] / "results/downloads/z_unreachable.ckpt").exists()


def test_code_in_a_pickle_is_refused_and_never_runs(zoo):
    out = _output(zoo["first"])
    assert "model 'z_payload'" in out and "the pickle references 'posix.system'" in out
    assert "nothing from it ran" in out and "column 'trusted' is true in the models table" in out
    assert not zoo["marker"].exists()
    assert not (zoo["work"] / "results/checkpoints/z_payload.safetensors").exists()


def test_unexpected_backbone_key_is_listed(zoo):
    out = _output(zoo["first"])
    assert "model 'z_extra_key' (format 'deepcluster', arch 'resnet10_tiny'" in out
    assert "unexpected keys: layer5.0.conv1.weight" in out
    assert not (zoo["work"] / "results/checkpoints/z_extra_key.safetensors").exists()


def test_paper_zoo_plans_download_and_conversion_for_all_26(tmp_path):
    config = smoke_config()
    config["models_table"] = str(ROOT / "config" / "models_paper.tsv")
    configfile = tmp_path / "paper_models.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, configfile, "-n")
    out = _output(proc)
    assert proc.returncode == 0, out[-3000:]
    counts = _job_counts(out)
    assert counts["download_checkpoint"] == 26 and counts["convert_checkpoint"] == 26
    assert counts["extract_features"] == 26 and "pretrain" not in counts
    assert "rule download_checkpoint:\n    output: results/downloads/beit_v2.ckpt" in out
