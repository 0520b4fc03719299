"""``python -m workflow_scripts.describe [--configfile FILE ...] [--config KEY=VALUE ...]``:
what a configuration selects -- its models, data sets, protocols and arms, and the figures it
draws or leaves out (with the reason) -- without planning or running anything. The options
mean what they mean to snakemake: config/config.yaml first, each --configfile merged over it,
then the --config values (YAML)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(configfiles: list[str], overrides: list[str]) -> dict:
    """The configuration as snakemake builds it from the same options."""
    import yaml
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for path in configfiles:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--config {item!r}: expected KEY=VALUE")
        config[key] = yaml.safe_load(value)
    return config


def describe(config: dict) -> str:
    from workflow_scripts import registry
    from workflow_scripts.config import load_study
    from workflow_scripts.plan import Plan

    study = load_study(config, ROOT)
    plan = Plan(config, study)
    lines = [f"models ({len(study.model_keys)}):"]
    for key in study.model_keys:
        row = study.model(key)
        lines.append(f"  {key:24} {row['method']:16} {row['arch']:28} {row['source']}")
    lines.append(f"data sets ({len(study.dataset_keys)}):")
    for key in study.dataset_keys:
        row = study.dataset(key)
        lines.append(
            f"  {key:24} {row['role']:4} {row['shift_group']:14} {row['kind']:12} "
            f"{row['n_train']} train / {row['n_test']} test"
        )
    names = registry.protocol_names(config["protocols"], config["fewshot"]["percents"])
    lines.append(f"protocols: {', '.join(registry.protocol_label(n) for n in names)}")
    lines.append(f"arms: {', '.join(config['arms'])}")
    lines.append(f"figures: {', '.join(plan.figures) or 'none'}")
    for name, why in plan.skipped_figures.items():
        lines.append(f"  not drawn: {name} ({why})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="+", default=[], help="merged over the demo's")
    parser.add_argument("--config", nargs="+", default=[], help="KEY=VALUE (YAML values)")
    args = parser.parse_args(argv)
    from workflow_scripts.config import ConfigError

    try:
        print(describe(load(args.configfile, args.config)))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
