"""Validation of the configuration and of the model and data set tables.

Runs at Snakefile parse time, before any job: every problem is reported as a
:class:`ConfigError` that names the culprit (config key, table file, row key and column), so a
typo never costs a pre-training run. Imports only light libraries (yaml, jsonschema, pandas).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from workflow_scripts import external, registry
from workflow_scripts.io import resolve_path  # noqa: F401 - part of this module's interface
from workflow_scripts.schema import fill_defaults, resolve, schema_defaults, schema_node  # noqa: F401

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "config" / "schemas"


class ConfigError(ValueError):
    """Bad configuration or table content; the message names the culprit."""


@dataclasses.dataclass(frozen=True)
class Study:
    """The validated configuration: tables restricted to the selected rows."""

    config: dict
    models: pd.DataFrame  # index: key
    datasets: pd.DataFrame  # index: key
    # what the analysis will hold (analysis_measures): this run's and the results tables'
    measures: pd.DataFrame
    # config results_tables: source name (the file name) -> resolved path, in config order
    results_tables: dict[str, Path] = dataclasses.field(default_factory=dict)
    # analysis.static_rankers: ranker -> model -> value (the random ranker has none)
    ranker_values: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    # the static rankers left out of every comparison: no value for any analysed model
    ranker_notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def model_keys(self) -> list[str]:
        return list(self.models.index)

    @property
    def dataset_keys(self) -> list[str]:
        return list(self.datasets.index)

    @property
    def id_dataset(self) -> str:
        return str(self.datasets.index[self.datasets["role"] == "id"][0])

    def model(self, key: str) -> dict:
        return _row_dict(self.models, key)

    def dataset(self, key: str) -> dict:
        return _row_dict(self.datasets, key)


def load_schema(name: str) -> dict:
    return yaml.safe_load((SCHEMA_DIR / f"{name}.schema.yaml").read_text())


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def coerce_cli_values(config: Any, node: dict, root: dict) -> Any:
    """Turn strings that came from ``snakemake --config key=value`` into the schema's type.

    Snakemake keeps e.g. ``batch_datasets=false`` or ``figures={f2: {dpi: 300}}``'s 300 as
    strings; a string where the schema wants a number, boolean or null is parsed as YAML and
    kept when the result has a wanted type (otherwise validation reports it).
    """
    node = resolve(root, node)
    if isinstance(config, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        return {
            k: coerce_cli_values(v, props.get(k, extra if isinstance(extra, dict) else {}), root)
            for k, v in config.items()
        }
    if isinstance(config, list):
        items = node.get("items", {})
        return [coerce_cli_values(v, items, root) for v in config]
    if isinstance(config, str):
        wanted = set(_types(node)) if "type" in node else set()
        if wanted & {"integer", "number", "boolean", "null"}:
            try:
                value = yaml.safe_load(config)
            except yaml.YAMLError:
                return config
            kinds = {bool: "boolean", int: "integer", float: "number", type(None): "null"}
            kind = kinds.get(type(value))
            if kind in wanted or (kind == "integer" and "number" in wanted):
                return value
    return config


def validate_config(config: dict) -> None:
    """Check ``config`` against config/schemas/config.schema.yaml."""
    schema = load_schema("config")
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{_where(e.absolute_path)}': {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _coerce(value: str, types: list[str]) -> Any:
    """Turn one TSV cell (a string) into the JSON type the schema asks for."""
    text = value.strip()
    if text == "" or text.upper() in {"NA", "NAN", "NONE", "NULL"}:
        return None
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            return text  # the schema check reports it
    if "number" in types:
        try:
            number = float(text)
            return number if math.isfinite(number) else text
        except ValueError:
            return text
    if "boolean" in types:
        lowered = text.lower()
        if lowered in {"true", "yes", "1"}:
            return True
        if lowered in {"false", "no", "0"}:
            return False
    return text


def _types(prop: dict) -> list[str]:
    if "type" in prop:
        return prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    return ["string"]


def check_table_shape(path: Path, what: str) -> None:
    """Every line of a TSV table has as many cells as its header (pandas would pad a short
    row with empty cells -- unpinning a checkpoint's sha256 -- and reject a long one with a
    message that names no file)."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        lines = [
            (n, row)
            for n, row in enumerate(csv.reader(handle, delimiter="\t"), start=1)
            if any(cell.strip() for cell in row)
        ]
    if not lines:
        raise ConfigError(f"{what} table '{path}' is empty (no header line)")
    width = len(lines[0][1])
    for number, row in lines[1:]:
        if len(row) != width:
            raise ConfigError(
                f"{what} table '{path}', line {number}: {len(row)} tab-separated cells, the "
                f"header has {width} (a missing or extra tab?)"
            )


def read_table(path: str | Path, schema_name: str, what: str) -> pd.DataFrame:
    """Read a TSV table, coerce cells to the schema's types and validate every row.

    Returns a DataFrame indexed by ``key`` whose cells hold Python values (None for empty).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} table '{path}' does not exist")
    check_table_shape(path, what)
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    schema = load_schema(schema_name)
    properties = schema["properties"]
    missing = [col for col in schema["required"] if col not in raw.columns]
    if missing:
        raise ConfigError(f"{what} table '{path}' is missing column(s): {', '.join(missing)}")
    if raw.empty:
        raise ConfigError(f"{what} table '{path}' has no rows")
    validator = jsonschema.Draft202012Validator(schema)
    rows = []
    for number, record in enumerate(raw.to_dict(orient="records"), start=2):
        row = {col: _coerce(val, _types(properties.get(col, {}))) for col, val in record.items()}
        errors = list(validator.iter_errors(row))
        if errors:
            details = "; ".join(f"column '{_where(e.absolute_path)}': {e.message}" for e in errors)
            raise ConfigError(
                f"{what} table '{path}', line {number} (key '{row.get('key')}'): {details}"
            )
        rows.append(row)
    keys = [row["key"] for row in rows]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(f"{what} table '{path}' repeats key(s): {', '.join(duplicates)}")
    # dtype object: a column mixing integers and empty cells must not turn into floats
    frame = pd.DataFrame(rows, dtype=object).set_index("key", drop=False)
    frame.index.name = None
    return frame.astype(object).where(frame.notna(), None)


def _row_dict(frame: pd.DataFrame, key: str) -> dict:
    row = frame.loc[key].to_dict()
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _select(frame: pd.DataFrame, wanted, config_key: str, what: str) -> pd.DataFrame:
    if wanted == "all":
        return frame
    unknown = [key for key in wanted if key not in frame.index]
    if unknown:
        raise ConfigError(
            f"config key '{config_key}': unknown {what} key(s) {', '.join(map(repr, unknown))}; "
            f"the {what} table has: {', '.join(frame.index)}"
        )
    return frame.loc[list(wanted)]


def check_models(models: pd.DataFrame, path: str, config: dict) -> pd.DataFrame:
    """Cross-column rules of the model table that a JSON schema cannot express: each row by
    the module of its source (``workflow_scripts.model_sources``; timm is imported only when
    the table has a timm row). Returns ``models`` with the cells the sources fill in (a timm
    row's empty family)."""
    from workflow_scripts import model_sources

    filled = {}
    for key in models.index:
        row = _row_dict(models, key)  # None for empty cells (iterrows may give NaN)
        try:
            filled[key] = model_sources.load(row["source"]).check_row(row, config)
        except model_sources.SourceError as error:
            raise ConfigError(f"models table '{path}', key '{key}': {error}") from None
    if any(filled.values()):
        models = models.copy()
        for key, cells in filled.items():
            for column, value in cells.items():
                models.at[key, column] = value
    return models


def check_datasets(datasets: pd.DataFrame, path: str) -> None:
    """Cross-column rules of the data set table."""
    from workflow_scripts import synthetic  # numpy only
    from workflow_scripts.datasets import domainnet, downloads  # numpy and PIL only

    created: dict[str, str] = {}
    for key, row in datasets.iterrows():
        where = f"datasets table '{path}', key '{key}'"
        try:
            files = downloads.archives(_row_dict(datasets, key))
        except downloads.DownloadSpecError as error:
            raise ConfigError(f"{where}: {error}") from None
        if files and row["kind"] == "synthetic":
            raise ConfigError(
                f"{where}: kind 'synthetic' is rendered, not downloaded: leave "
                "the download columns empty"
            )
        for file in files:
            if file.creates in created:
                raise ConfigError(
                    f"{where}: column 'download_creates': '{file.creates}' is also created by "
                    f"data set '{created[file.creates]}'"
                )
            created[file.creates] = key
        if row["kind"] != "synthetic":
            # Real layouts: the root folder itself is checked by the integrity job (a dry run
            # plans the whole study before any data set is on disk).
            if row.get("root") is None:
                raise ConfigError(f"{where}: column 'root' is required for kind '{row['kind']}'")
            for column in ("n_train", "n_test"):
                if row[column] is None:
                    raise ConfigError(
                        f"{where}: column '{column}' is required for kind '{row['kind']}' "
                        "(the integrity check compares the image count with it)"
                    )
            if row["kind"] == "domainnet" and row.get("variant") not in domainnet.DOMAINS:
                raise ConfigError(
                    f"{where}: column 'variant' must name the DomainNet domain "
                    f"({', '.join(domainnet.DOMAINS)}), got {row.get('variant')!r}"
                )
        if row["kind"] == "synthetic":
            for column in ("generator", "variant", "n_train", "n_test", "seed"):
                if row[column] is None:
                    raise ConfigError(
                        f"{where}: column '{column}' is required for kind 'synthetic'"
                    )
            if row["generator"] not in synthetic.GENERATORS:
                raise ConfigError(
                    f"{where}: unknown generator '{row['generator']}' "
                    f"(known: {', '.join(synthetic.GENERATORS)})"
                )
            if row["variant"] not in synthetic.VARIANTS[row["generator"]]:
                raise ConfigError(
                    f"{where}: unknown variant '{row['variant']}' for generator "
                    f"'{row['generator']}' (known: {', '.join(synthetic.VARIANTS[row['generator']])})"
                )
            classes = synthetic.GENERATORS[row["generator"]]
            if row["num_classes"] != classes:
                raise ConfigError(
                    f"{where}: num_classes is {row['num_classes']} but generator "
                    f"'{row['generator']}' makes {classes} classes"
                )
            for column in ("n_train", "n_test"):
                if row[column] < row["num_classes"]:
                    raise ConfigError(
                        f"{where}: column '{column}' ({row[column]}) is smaller than the "
                        f"number of classes ({row['num_classes']})"
                    )


def load_study(config: dict, basedir: str | Path) -> Study:
    """Validate ``config`` and its tables; return the selected rows as a :class:`Study`.

    ``config`` is updated in place with values coerced from command-line strings."""
    schema = load_schema("config")
    config.update(coerce_cli_values(config, schema, schema))
    validate_config(config)
    fill_defaults(config, schema, schema)  # every key left out: its schema 'default'
    models_path = resolve_path(config["models_table"], basedir)
    datasets_path = resolve_path(config["datasets_table"], basedir)
    models = read_table(models_path, "models", "models")
    datasets = read_table(datasets_path, "datasets", "datasets")
    for column in load_schema("datasets")["properties"]:
        if column not in datasets.columns:  # optional columns a table leaves out
            datasets[column] = None
    models = _select(models, config["models"], "models", "model")
    datasets = _select(datasets, config["datasets"], "datasets", "data set")
    models = check_models(models, str(models_path), config)
    models = _shift_seeds(models, config)
    check_datasets(datasets, str(datasets_path))
    unknown = [key for key in config["allow_subsets"] if key not in datasets.index]
    if unknown:
        raise ConfigError(
            f"config key 'allow_subsets': unknown data set key(s) {', '.join(map(repr, unknown))}"
        )
    ids = list(datasets.index[datasets["role"] == "id"])
    if len(ids) != 1:
        raise ConfigError(
            f"config key 'datasets': exactly one selected data set must have role 'id', "
            f"found {len(ids)} ({', '.join(ids) or 'none'})"
        )
    # a protocol's own settings are checked only when it is selected
    protocols = config["protocols"]
    lin = config["linear"]
    if "linear" in protocols and lin["report_lr"] not in lin["base_lrs"]:
        raise ConfigError(
            f"config key 'linear.report_lr': {lin['report_lr']} is not one of "
            f"linear.base_lrs {lin['base_lrs']}"
        )
    if "linear" in protocols and lin["warmup_epochs"] >= lin["epochs"]:
        raise ConfigError(
            f"config key 'linear.warmup_epochs': {lin['warmup_epochs']} must be smaller than "
            f"linear.epochs ({lin['epochs']})"
        )
    real = [key for key in datasets.index if datasets.loc[key, "kind"] != "synthetic"]
    on_id = [
        key
        for key in models.index
        if registry.SOURCES[models.loc[key, "source"]].get("trains_on_id")
    ]
    if on_id and ids[0] in real:
        source = models.loc[on_id[0], "source"]
        raise ConfigError(
            f"config key 'models': model(s) {', '.join(on_id)} have source '{source}' and are "
            f"pre-trained on the in-domain set, which must then be synthetic; '{ids[0]}' is a "
            f"real data set (kind '{datasets.loc[ids[0], 'kind']}'): use checkpoint rows instead"
        )
    if "linear_online" in config["protocols"] and real:
        raise ConfigError(
            "config key 'protocols': the faithful online probe 'linear_online' runs on the "
            f"array (synthetic) data sets only so far; remove it or deselect {', '.join(real)}"
        )
    att = config["attentive"]
    if "attentive" in protocols:
        from workflow_scripts.attentive import TOKEN_SHAPES

        if att["warmup_epochs"] >= att["epochs"]:
            raise ConfigError(
                f"config key 'attentive.warmup_epochs': {att['warmup_epochs']} must be smaller "
                f"than attentive.epochs ({att['epochs']})"
            )
        for key in models.index:
            width = TOKEN_SHAPES.get(models.loc[key, "arch"], (None, None))[1]
            if width is not None and width % att["queries"]:
                raise ConfigError(
                    f"config key 'attentive.queries': {att['queries']} queries do not divide "
                    f"the {width} channels of model '{key}' ({models.loc[key, 'arch']}) tokens; "
                    "each query pools width / queries channels"
                )
    fewshot = config["fewshot"]
    if "fewshot" in protocols and fewshot["seed"] in fewshot["extra_seeds"]:
        raise ConfigError(
            f"config key 'fewshot.extra_seeds': {fewshot['extra_seeds']} repeats fewshot.seed "
            f"({fewshot['seed']}); list only additional subset seeds"
        )
    id_row = datasets.loc[ids[0]]
    if "fewshot" in protocols and id_row["n_train"] is not None:
        from workflow_scripts.fewshot import per_class

        for percent in config["fewshot"]["percents"]:
            if per_class(id_row["n_train"], id_row["num_classes"], percent) == 0:
                raise ConfigError(
                    f"config key 'fewshot.percents': a {percent:g}% subset of data set "
                    f"'{ids[0]}' ({id_row['n_train']} train images, {id_row['num_classes']} "
                    "classes) has 0 images per class"
                )
    seeds = config["demo"]["seeds"]
    fixed = [
        key
        for key in models.index
        if not registry.SOURCES[models.loc[key, "source"]].get("trains_on_id")
    ]
    if seeds > 1 and fixed:
        raise ConfigError(
            f"config key 'demo.seeds': {seeds} runs re-train every model under other seeds, but "
            f"model(s) {', '.join(fixed)} come with their weights (source "
            f"'{models.loc[fixed[0], 'source']}'), which no seed changes: select only models "
            "pre-trained by the workflow (source 'demo') or set demo.seeds: 1"
        )
    paths = {name: resolve_path(value, basedir) for name, value in _table_names(config).items()}
    tables = read_results_tables(paths)
    measures = analysis_measures(config, models, datasets, tables)
    check_figure_arms(config, measures)
    check_figure_protocols(config, measures)
    others = set(measures["model"]) - set(models.index)
    check_plan(config, models, datasets, external_models=len(others))
    rankers, notes = ranker_values(config, models, datasets, tables, set(measures["model"]))
    return Study(
        config=config,
        models=models,
        datasets=datasets,
        results_tables=paths,
        measures=measures,
        ranker_values=rankers,
        ranker_notes=notes,
    )


def _shift_seeds(models: pd.DataFrame, config: dict) -> pd.DataFrame:
    """The model rows with ``pretrain.seed_offset`` added to the seed of every model the
    workflow pre-trains (the runs of ``demo.seeds``, workflow_scripts.seed_spread)."""
    offset = config["pretrain"]["seed_offset"]
    if not offset:
        return models
    models = models.copy()
    for key in models.index:
        if registry.SOURCES[models.loc[key, "source"]].get("trains_on_id"):
            models.loc[key, "seed"] = int(models.loc[key, "seed"]) + offset
    return models


def ranker_values(
    config, models, datasets, tables, analysed
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The values of the static rankers of ``analysis.static_rankers`` (ranker -> model ->
    value, :func:`workflow_scripts.static_rankers.values`). A ``table:<protocol>:<arm>`` ranker
    with no value for any analysed model names a measurement no results table has: a config
    error. A registry ranker without values (``published_linear`` with a model table that has
    no published numbers) is left out of every comparison and reported
    (:attr:`Study.ranker_notes`), so one configuration serves model tables with and without
    them."""
    from workflow_scripts import static_rankers

    names = config["analysis"]["static_rankers"]
    id_dataset = str(datasets.index[datasets["role"] == "id"][0])
    n_train = datasets.loc[id_dataset, "n_train"]
    found = static_rankers.values(
        names,
        models,
        config,
        int(n_train) if n_train is not None and n_train == n_train else None,
        tables,
    )
    missing = static_rankers.unavailable(names, found, analysed)
    for i, (name, where) in missing.items():
        if static_rankers.table_ranker(name):
            raise ConfigError(
                f"config key 'analysis.static_rankers.{i}': '{name}' has no value for any "
                f"analysed model ({where})"
            )
    notes = [
        f"{name} has no value for any analysed model ({where})" for name, where in missing.values()
    ]
    return found, notes


def _table_names(config: dict) -> dict[str, str]:
    """config results_tables as source name (file name) -> the configured path."""
    names: dict[str, str] = {}
    for value in config["results_tables"]:
        name = external.source_name(value)
        if name in names or name == external.COMPUTED:
            raise ConfigError(
                f"config key 'results_tables': '{value}' has the file name '{name}' of "
                f"{'this run' if name == external.COMPUTED else repr(names[name])}; a table's "
                "file name is its rows' source: rename one"
            )
        names[name] = value
    return names


def read_results_tables(paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """Each results table (source name -> resolved path of config results_tables),
    validated: source name -> rows."""
    tables = {}
    for name, path in paths.items():
        try:
            tables[name] = external.read_results_table(path, name)
        except external.ResultsTableError as error:
            raise ConfigError(f"config key 'results_tables': {error}") from None
    return tables


def analysis_measures(config, models, datasets, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The measurements the analysis will hold (this run's and the results tables'), checked
    to fit together (workflow_scripts.external.check_merged): model, method, backbone,
    paradigm, dataset, domain, shift_group, protocol, arm, source; no accuracies."""
    if not len(models) and not tables:
        raise ConfigError(
            "config key 'models': no model selected and no results_tables: nothing to run; "
            "select models or give result tables to analyse"
        )
    percents = config["fewshot"]["percents"]
    names = registry.protocol_names(config["protocols"], percents)
    kinds = {n: registry.PROTOCOLS[registry.protocol_entry(n)[0]]["kind"] for n in names}
    computed = external.computed_skeleton(
        models,
        datasets,
        frozen=[n for n in names if kinds[n] == "frozen"],
        trained=[n for n in names if kinds[n] == "trained"],
        arms=config["arms"],
    )
    if tables:
        try:
            external.check_merged([computed, *tables.values()])
        except external.ResultsTableError as error:
            raise ConfigError(f"config key 'results_tables': {error}") from None
    frames = [frame for frame in (computed, *tables.values()) if len(frame)]
    if not frames:  # no accuracy protocol: check_plan says so
        return computed
    return pd.concat(frames, ignore_index=True).reindex(columns=computed.columns)


def check_figure_arms(config: dict, measures: pd.DataFrame) -> None:
    """Arms a figure's options name (figures.<key>.x_arm, y_arm, arm, y_arms) must be arms of
    the analysis: this run's or a results table's."""
    arms = list(dict.fromkeys(measures["arm"]))
    for entry in registry.FIGURES.values():
        options = config["figures"][entry["key"]]
        for option in (*entry.get("arm_options", ()), "y_arms"):
            value = options.get(option)
            for arm in value if isinstance(value, list) else [value]:
                if arm is not None and arm not in arms:
                    raise ConfigError(
                        f"config key 'figures.{entry['key']}.{option}': {arm!r} is not an arm "
                        f"of the analysis ({', '.join(arms) or 'none'})"
                    )


def check_figure_protocols(config: dict, measures: pd.DataFrame) -> None:
    """Protocols a figure's ``y_protocols`` names (figures.f2, figures.f5) must be y of its
    panels: a protocol measured on an out-of-domain data set, this run's (a frozen protocol;
    the trained ones run on the in-domain set only, the proxies are never y there) or a results
    table's. Without an out-of-domain data set these figures are not drawn: nothing to check."""
    ood = measures.loc[measures["domain"] == "ood", "protocol"]
    if not len(ood):
        return
    protocols = sorted(dict.fromkeys(ood), key=registry.protocol_sort_key)
    for entry in registry.FIGURES.values():
        key = entry["key"]
        for i, protocol in enumerate(config["figures"][key].get("y_protocols") or ()):
            if protocol not in protocols:
                raise ConfigError(
                    f"config key 'figures.{key}.y_protocols.{i}': {protocol!r} is not a "
                    f"protocol measured on an out-of-domain data set ({', '.join(protocols)})"
                )


def check_plan(
    config: dict, models: pd.DataFrame, datasets: pd.DataFrame, external_models: int = 0
) -> None:
    """What would otherwise fail late (after pre-training and extraction) or silently.
    ``external_models``: models of the results tables that this run does not compute."""
    minimum = config["analysis"]["min_models"]
    if len(models) + external_models < minimum:
        tables = f" and {external_models} more in results_tables" if external_models else ""
        raise ConfigError(
            f"config key 'models': {len(models)} model(s) selected ({', '.join(models.index)})"
            f"{tables}; the correlations across models need at least analysis.min_models = "
            f"{minimum}. Reach it by selecting more models (config key 'models'), or, to "
            "compare with models you do not rerun, by adding their accuracies as result tables "
            "(config key 'results_tables': another study's results/tables/accuracy.csv, or "
            "config/published_imagenet.csv with the sources' published ImageNet numbers of the "
            "paper's 26 checkpoints; README 'Analyse published or external result tables')"
        )
    protocols = config["protocols"]
    if all(registry.PROTOCOLS[p]["kind"] == "proxy" for p in protocols):
        raise ConfigError(
            f"config key 'protocols': {protocols} holds no accuracy protocol; the proxies are "
            "correlated with accuracies: add one (e.g. knn)"
        )
    if "knn" in protocols:
        k = config["knn"]["k"]
        for key, row in datasets.iterrows():
            if row["n_train"] is not None and k > row["n_train"]:
                raise ConfigError(
                    f"config key 'knn.k': k = {k} is larger than the train split of data set "
                    f"'{key}' ({row['n_train']} images)"
                )
    if "fewshot" in protocols:
        percents = config["fewshot"]["percents"]
        if not percents:
            raise ConfigError(
                "config key 'fewshot.percents': empty while protocol 'fewshot' is selected; "
                "list the subset sizes (e.g. [10, 1]) or remove 'fewshot' from protocols"
            )
        names: dict[str, float] = {}
        for percent in percents:  # the protocol and file names use f"{pct:g}"
            name = f"{percent:g}"
            if name in names:
                raise ConfigError(
                    f"config key 'fewshot.percents': {names[name]} and {percent} both give the "
                    f"protocol name 'fewshot{name}'; use distinct values"
                )
            names[name] = percent


# --------------------------------------------------------------------------------------------
# config/README.md's key table, generated from the schema: `python -m workflow_scripts.config`

README = Path(__file__).resolve().parent.parent / "config" / "README.md"
TABLE_BEGIN = (
    "<!-- key table: generated from config/schemas/config.schema.yaml by "
    "`python -m workflow_scripts.config`; edit the schema, not this table -->"
)
TABLE_END = "<!-- end of the generated key table -->"
_PLURAL = {"int": "ints", "number": "numbers", "bool": "bools", "string": "strings"}


def schema_keys(node: dict | None = None, root: dict | None = None, path: tuple = ()):
    """(dotted path as a tuple, resolved schema, required) of every configuration key, sections
    before their keys, in schema order."""
    root = root or load_schema("config")
    node = resolve(root, node or root)
    for key, prop in node.get("properties", {}).items():
        prop = resolve(root, prop)
        yield (*path, key), prop, key in node.get("required", [])
        yield from schema_keys(prop, root, (*path, key))


def _type_text(node: dict) -> str:
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return ", ".join("`null`" if v is None else f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(_type_text(alt) for alt in node["oneOf"])
    names = {
        "integer": "int",
        "number": "number",
        "boolean": "bool",
        "string": "string",
        "object": "mapping",
        "null": "null",
    }
    parts = []
    for kind in _types(node) if "type" in node else ["string"]:
        if kind == "array":
            item = _type_text(node.get("items", {}))
            parts.append(f"list of {_PLURAL.get(item, item)}")
        else:
            parts.append(names[kind])
    return " or ".join(parts)


def _default_text(node: dict, required: bool) -> str:
    if "default" not in node:
        return "required" if required else "--"
    text = yaml.safe_dump(node["default"], default_flow_style=True, width=10**6)
    return f"`{text.removesuffix(chr(10)).removesuffix('...').strip()}`"


def _key_text(paths: list[tuple], position: int, root: dict) -> str:
    """The key cell of a row of equal keys that differ at ``position``: ``*`` there when they
    are all the entries of that section, else every key."""
    keys = [".".join(p) for p in paths]
    if len(paths) > 1:
        parent = paths[0][:position]
        siblings = list(schema_node(".".join(parent)).get("properties", {}))
        if sorted(p[position] for p in paths) == sorted(siblings) and len(siblings) > 2:
            star = [*paths[0][:position], "*", *paths[0][position + 1 :]]
            return f"`{'.'.join(star)}`"
    return ", ".join(f"`{k}`" for k in keys)


def key_rows() -> list[tuple[str, str, str, str]]:
    """(keys, type, default, meaning) per row of the key table: one row per key, keys with an
    identical schema that differ in one path component (e.g. the same option of every figure)
    sharing a row."""
    import json

    root = load_schema("config")
    keys = list(schema_keys(root=root))
    signature = [json.dumps(node, sort_keys=True) for _, node, _ in keys]
    done: set[int] = set()
    rows = []
    for i, (path, node, required) in enumerate(keys):
        if i in done:
            continue
        best, position = [i], 0
        for pos in range(len(path)):
            group = [
                j
                for j, (other, _, req) in enumerate(keys)
                if j not in done
                and len(other) == len(path)
                and signature[j] == signature[i]
                and req == required
                and all(a == b for k, (a, b) in enumerate(zip(other, path)) if k != pos)
            ]
            if len(group) > len(best):
                best, position = group, pos
        done.update(best)
        rows.append(
            (
                _key_text([keys[j][0] for j in best], position, root),
                _type_text(node),
                _default_text(node, required),
                " ".join(node.get("description", "").split()).replace("|", "\\|"),
            )
        )
    return rows


def key_table() -> str:
    """config/README.md's key table (markdown) between its markers."""
    lines = [TABLE_BEGIN, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in key_rows()]
    return "\n".join([*lines, "", TABLE_END])


def readme_with_table(text: str) -> str:
    """``text`` (config/README.md) with its key table replaced by the generated one."""
    start, end = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
    return text[:start] + key_table() + text[end:]


if __name__ == "__main__":  # rewrite config/README.md's key table from the schema
    README.write_text(readme_with_table(README.read_text()))
