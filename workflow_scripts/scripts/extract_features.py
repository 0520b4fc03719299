"""Rule extract_features: embed the train and test splits of one or more data sets.

Synthetic sets are read from their uint8 arrays, real ones through their adapter and the paper
transform (file list from the integrity rule); device, batch size, loader workers, precision
and channels-last come from the configuration's ``features`` section. Each split is written
into a memory-mapped temporary .npy and renamed when complete.
"""

import _bootstrap  # noqa: F401 - puts the repository root on sys.path

from workflow_scripts import runtime
from workflow_scripts.backbones import load_backbone
from workflow_scripts.datasets import resolve_root
from workflow_scripts.features import check_split_sizes, extract_split_to, resolve_device, write_sidecar
from workflow_scripts.io import sha256_file
from workflow_scripts.precision import effective

sm = snakemake  # noqa: F821 - injected by Snakemake
options = sm.config["features"] | sm.params.options  # run-time keys + result keys
log = runtime.setup(sm, torch_threads=options["threads"])  # the job's other CPUs: loader workers
model = sm.params.model
backbone = load_backbone(sm.input.weights, model["arch"], model["embedding"])
weights_sha = sha256_file(sm.input.weights)
device = resolve_device(options["device"])
jobs = list(zip(sm.params.datasets, sm.params.splits, sm.input.images, sm.input.labels,
                sm.output.features, sm.output.sidecars, strict=True))
check_split_sizes([(d, s, sm.params.sources[d]["kind"], images, labels)
                   for d, s, images, labels, _, _ in jobs])
for dataset, split, images_path, labels_path, out, sidecar in jobs:
    source = sm.params.sources[dataset]
    if source["kind"] != "synthetic":  # the root is not a param: moving the data reruns nothing
        source = source | {"root": str(resolve_root(source, sm.config["data_root"]))}
    transform = sm.params.transform | ({} if source["kind"] == "synthetic" else
                                       {"preprocessing": source["preprocessing"]})
    n, d = extract_split_to(out, backbone, images_path, source, sm.params.transform, options,
                            where=(model["key"], dataset, split),
                            label=f"{model['key']} / {dataset} / {split}: ")
    write_sidecar(sidecar, n=n, d=d, model=model["key"], dataset=dataset, split=split,
                  dtype=options["dtype"], weights_sha256=weights_sha, transform=transform,
                  labels_path=labels_path, precision=effective(options["precision"], device),
                  device=device.type)
    log.info("%s / %s / %s: %d x %d", model["key"], dataset, split, n, d)
