"""python -m workflow_scripts.describe: what a configuration selects, against the tables read
here with pandas; --config narrows it as snakemake's would; a bad value is an error naming the
key."""

from pathlib import Path

import pandas as pd

from workflow_scripts import describe

ROOT = Path(__file__).resolve().parents[2]
PAPER = str(ROOT / "config" / "paper.yaml")


def _section(text, name):
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name))
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        out.append(line.split()[0])
    return out


def test_the_paper_configuration(capsys):
    assert describe.main(["--configfile", PAPER]) == 0
    text = capsys.readouterr().out
    models = pd.read_csv(ROOT / "config/models_paper.tsv", sep="\t")["key"].tolist()
    datasets = pd.read_csv(ROOT / "config/datasets_paper.tsv", sep="\t")["key"].tolist()
    assert text.startswith(f"models ({len(models)}):") and _section(text, "models") == models
    assert _section(text, "data sets") == datasets
    assert (
        "protocols: kNN, linear, attentive, fine-tune, few-shot 10%, few-shot 1%, proxies" in text
    )
    assert "arms: raw, bn" in text and "figures: f1_id_protocols," in text


def test_config_values_narrow_the_selection_and_errors_name_the_key(capsys):
    code = describe.main(
        ["--configfile", PAPER, "--config", "datasets=[imagenet,cub]", "protocols=[knn]"]
    )
    text = capsys.readouterr().out
    assert code == 0 and _section(text, "data sets") == ["imagenet", "cub"]
    assert "protocols: kNN\n" in text
    assert describe.main(["--config", "knn={k: 0}"]) == 1
    assert "config key 'knn.k': 0 is less than the minimum" in capsys.readouterr().err
