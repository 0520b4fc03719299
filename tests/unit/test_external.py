"""External result tables (config results_tables): validation with file/line/column errors,
the checks across tables, the merged analysis table, the analysis on them alone (values vs
scipy) and the plan of a run with models: []."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from workflow_scripts import external
from workflow_scripts.config import ConfigError, load_study
from workflow_scripts.correlations import correlation_table
from workflow_scripts.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "config" / "published_imagenet.csv"
HEADER = "model,dataset,domain,protocol,arm,top1"


def write(tmp_path, text, name="table.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def demo_config(**changes):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(changes)
    return config


def test_a_valid_table_reads_with_its_lines_and_source(tmp_path):
    path = write(
        tmp_path,
        "model,code_version,dataset,domain,shift_group,protocol,arm,top1,top5\n"
        'a,"two\nlines",in,id,,knn,raw,50,70.5\n'  # a quoted cell spans lines 2-3
        "\n"  # blank lines are skipped
        "b,x,out,ood,style,linear_v2,bn_2,61.25,\n",
    )
    table = external.read_results_table(path)
    assert table["line"].tolist() == [3, 5]  # the line each row ends on
    assert table["source"].tolist() == ["table.csv", "table.csv"]
    assert table["top1"].tolist() == [50.0, 61.25]
    assert table.loc[0, "code_version"] == "two\nlines"
    assert pd.isna(table.loc[0, "shift_group"]) and np.isnan(table.loc[1, "top5"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        (HEADER + "\n", "a header but no rows"),
        (HEADER + ",top_1\na,in,id,knn,raw,5,5\n", r"line 1: unknown column\(s\) 'top_1'"),
        ("model,dataset,domain,protocol,arm\na,in,id,knn,raw\n", r"missing column\(s\) 'top1'"),
        (HEADER + ",top1\n", r"line 1: column\(s\) 'top1' more than once"),
        (HEADER + "\na,in,id,knn,raw\n", "line 2: 5 cells, the header has 6"),
        (HEADER + "\na,,id,knn,raw,5\n", "line 2, column 'dataset': empty"),
        (HEADER + "\na,in,test,knn,raw,5\n", "line 2, column 'domain': 'test' is neither"),
        (HEADER + "\na,in,id,k-nn,raw,5\n", "line 2, column 'protocol': 'k-nn' has characters"),
        (HEADER + "\na,in,id,knn,b n,5\n", "line 2, column 'arm': 'b n' has characters"),
        (HEADER + "\na,in,id,logme,raw,5\n", "line 2, column 'protocol': 'logme' is a proxy"),
        (HEADER + "\na,mean_ood,ood,knn,raw,5\n", "line 2, column 'dataset': 'mean_ood' is res"),
        (HEADER + "\na,in,id,knn,raw,100.5\n", "line 2, column 'top1': '100.5' is not a number"),
        (HEADER + "\na,in,id,knn,raw,0.7x\n", "line 2, column 'top1': '0.7x' is not a number"),
        (HEADER + "\na,in,id,knn,raw,nan\n", "line 2, column 'top1': 'nan' is not a number"),
        (HEADER + ",top5\na,in,id,knn,raw,50,40\n", "line 2, column 'top5': 40 is below top1"),
        (HEADER + ",k\na,in,id,knn,raw,50,-1\n", "line 2, column 'k': '-1' is not a number >= 0"),
    ],
)
def test_bad_tables_name_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(external.ResultsTableError, match=message) as error:
        external.read_results_table(path)
    assert str(error.value).startswith(f"results table '{path}'")


def test_every_bad_cell_is_listed_at_once(tmp_path):
    rows = "".join(f"m{i},in,id,knn,raw,{100 + i}\n" for i in range(1, 26))
    with pytest.raises(external.ResultsTableError) as error:
        external.read_results_table(write(tmp_path, HEADER + "\n" + rows))
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == external.MAX_ERRORS + 1 and lines[-1].strip() == "... and 5 more"
    assert lines[0].strip().startswith("line 2, column 'top1': '101'")


def test_a_file_that_is_not_utf8_csv_is_named(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + "\nm\xe9,in,id,knn,raw,5\n").encode("latin-1"))
    with pytest.raises(external.ResultsTableError, match="latin1.csv': not a UTF-8 CSV file"):
        external.read_results_table(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(external.ResultsTableError, match="no such file"):
        external.read_results_table(tmp_path / "absent.csv")


def test_tables_are_checked_against_each_other(tmp_path):
    a = external.read_results_table(
        write(
            tmp_path,
            "model,backbone,dataset,domain,protocol,arm,top1\n"
            "m1,vit,in,id,knn,raw,50\nm1,vit,out,ood,knn,raw,40\n",
            "a.csv",
        )
    )
    b = external.read_results_table(
        write(
            tmp_path,
            "model,backbone,dataset,domain,protocol,arm,top1\n"
            "m2,vit,in,id,knn,raw,55\nm1,resnet,in2,id,knn,raw,1\n"
            "m1,vit,out,id,knn,raw,40\n",
            "b.csv",
        )
    )
    with pytest.raises(external.ResultsTableError) as error:
        external.check_merged([a, b])
    text = str(error.value)
    assert (
        "dataset 'out' has more than one domain: 'ood' in 'a.csv' line 3; 'id' in 'b.csv' line 4"
        in text
    )
    assert (
        "model 'm1' has more than one backbone: 'vit' in 'a.csv' line 2; 'resnet' in 'b.csv' line 3"
        in text
    )
    assert (
        "exactly one in-domain (domain 'id') data set; the tables have 3: 'in', 'in2', 'out'"
        in text
    )
    dup = external.read_results_table(write(tmp_path, HEADER + "\nm1,in,id,knn,raw,50\n", "c.csv"))
    with pytest.raises(
        external.ResultsTableError,
        match=re.escape(
            "('m1', 'in', 'knn', 'raw') is given more than once: 'a.csv' line 2, 'c.csv' line 2"
        ),
    ):
        external.check_merged([a, dup])


def test_merge_adds_the_source_column(tmp_path):
    computed = pd.DataFrame(
        {
            "model": ["m1"],
            "dataset": ["in"],
            "domain": ["id"],
            "shift_group": ["in_domain"],
            "protocol": ["knn"],
            "arm": ["raw"],
            "top1": [50.0],
            "code_version": ["abc"],
        }
    )
    table = external.read_results_table(
        write(tmp_path, HEADER + "\nm2,in,id,knn,raw,55\n", "pub.csv")
    )
    merged = external.merge(computed, {"pub.csv": table})
    assert list(merged.columns) == [*external.COLUMNS, "source"]
    # an accuracy table with timm rows has a transform column: kept
    timm = external.merge(computed.assign(transform="model"), {"pub.csv": table})
    assert list(timm.columns) == [*external.COLUMNS, "transform", "source"]
    assert timm["transform"].tolist()[0] == "model"
    assert merged["source"].tolist() == ["computed", "pub.csv"]
    assert merged["top1"].tolist() == [50.0, 55.0] and "line" not in merged
    alone = external.merge(None, {"pub.csv": table})
    assert alone["model"].tolist() == ["m2"]
    # a published number of a computed model takes the model's and data set's attributes
    more = computed.assign(backbone="vit", paradigm="generative")
    same = external.read_results_table(
        write(tmp_path, HEADER + "\nm1,in,id,knn,published,40\n", "same.csv")
    )
    filled = external.merge(more, {"same.csv": same})
    assert filled["backbone"].tolist() == ["vit", "vit"]
    assert filled["paradigm"].tolist() == ["generative", "generative"]
    assert filled["shift_group"].tolist() == ["in_domain", "in_domain"]


def test_the_published_table_alone_correlates_as_scipy():
    table = external.read_results_table(PUBLISHED)
    merged = external.merge(None, {"published_imagenet.csv": table})
    corr = correlation_table(merged, n_resamples=50, seed=0, subsets=["backbone"])
    assert set(corr["y_kind"]) == {"pair"}  # no OOD data set: pairs only
    wide = merged.pivot(index="model", columns="protocol", values="top1")
    both = wide[["linear", "finetune"]].dropna()
    row = corr.query(
        "method == 'kendall' and subset == 'all' and x_protocol == 'linear' "
        "and y_protocol == 'finetune'"
    ).iloc[0]
    expected = stats.kendalltau(both["linear"], both["finetune"])
    assert row["n"] == len(both) == 6 and row["missing"] == "pairwise"
    assert row["value"] == pytest.approx(expected.statistic, abs=1e-12)
    assert row["p_value"] == pytest.approx(expected.pvalue, abs=1e-12)
    vit = corr.query(
        "method == 'spearman' and subset == 'backbone=vit' and "
        "x_protocol == 'linear' and y_protocol == 'finetune'"
    ).iloc[0]
    assert vit["value"] == pytest.approx(stats.spearmanr(both["linear"], both["finetune"])[0])
    # listwise: a model enters only with every measurement of the subset: ibot alone has all 3
    listwise = correlation_table(merged, n_resamples=50, seed=0, subsets=[], missing="listwise")
    assert set(listwise["n"]) == {1} and listwise["value"].isna().all()


def test_load_study_validates_before_any_job(tmp_path):
    config = demo_config(models=[], results_tables=[str(PUBLISHED)])
    study = load_study(config, ROOT)
    assert study.model_keys == [] and list(study.results_tables) == ["published_imagenet.csv"]
    assert set(study.measures["source"]) == {"published_imagenet.csv"}

    with pytest.raises(ConfigError, match="no model selected and no results_tables"):
        load_study(demo_config(models=[]), ROOT)
    bad = write(tmp_path, HEADER + "\na,in,id,knn,raw,101\n", "bad.csv")
    with pytest.raises(
        ConfigError,
        match=r"config key 'results_tables': results table .*bad.csv"
        r"'.*\n  line 2, column 'top1'",
    ):
        load_study(demo_config(results_tables=[str(bad)]), ROOT)
    other = tmp_path / "sub"
    other.mkdir()
    twin = write(other, HEADER + "\na,in,id,knn,raw,1\n", "published_imagenet.csv")
    with pytest.raises(ConfigError, match="has the file name 'published_imagenet.csv' of"):
        load_study(demo_config(results_tables=[str(PUBLISHED), str(twin)]), ROOT)
    few = write(tmp_path, HEADER + "\nx,shapes,id,knn,raw,1\n", "few.csv")
    with pytest.raises(
        ConfigError,
        match=r"0 model\(s\) selected \(\) and 1 more in "
        "results_tables; .* at least analysis.min_models = 4",
    ):
        load_study(demo_config(models=[], results_tables=[str(few)]), ROOT)


def test_a_table_must_fit_this_runs_measurements(tmp_path):
    # the demo computes knn (raw) of random_resnet on shapes, whose domain is id
    clash = write(tmp_path, HEADER + ",shift_group\nrandom_resnet,shapes,id,knn,raw,1,in_domain\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "('random_resnet', 'shapes', 'knn', 'raw') is given more than once: this run's "
            "results, 'table.csv' line 2"
        ),
    ):
        load_study(demo_config(results_tables=[str(clash)]), ROOT)
    domain = write(tmp_path, HEADER + "\nother,shapes,ood,knn,raw,1\n", "d.csv")
    with pytest.raises(
        ConfigError,
        match="dataset 'shapes' has more than one domain: 'id' in "
        "this run's results; 'ood' in 'd.csv' line 2",
    ):
        load_study(demo_config(results_tables=[str(domain)]), ROOT)
    fine = write(tmp_path, HEADER + "\nrandom_resnet,shapes,id,knn,published,48\n", "ok.csv")
    study = load_study(demo_config(results_tables=[str(fine)]), ROOT)
    assert study.measures["source"].value_counts()["ok.csv"] == 1


def test_plan_with_results_tables(tmp_path):
    config = demo_config(models=[], results_tables=[str(PUBLISHED)])
    plan = Plan(config, load_study(config, ROOT))
    assert plan.datasets == [] and not plan.proxies
    assert plan.analysis_table == "results/tables/accuracy_merged.csv"
    assert plan.table_path("accuracy") == plan.analysis_table
    assert plan.table_path("correlations") == "results/tables/correlations.csv"
    assert plan.default_arm == "published"  # the demo's arms are not in the table
    assert plan.figures == ["f1_id_protocols", "f6_paradigm_backbone", "f9_baselines"]
    assert plan.skipped_figures["f2_id_vs_ood"] == "no out-of-domain data set"
    assert plan.all_targets() == [
        "results/tables/accuracy_merged.csv",
        "results/tables/correlations.csv",
        "results/tables/accuracy.html",
        *[f"results/figures/{f}.{e}" for f in plan.figures for e in ("png", "pdf")],
        "results/summary.md",
        "results/summary.html",
    ]
    # merged with this run's: every stage target as before, plus the merged table
    extra = write(tmp_path, HEADER + "\nrandom_resnet,shapes,id,knn,published,48\n")
    merged_config = demo_config(results_tables=[str(extra)])
    merged = Plan(merged_config, load_study(merged_config, ROOT))
    alone_config = demo_config()
    alone = Plan(alone_config, load_study(alone_config, ROOT))
    assert alone.analysis_table == "results/tables/accuracy.csv"
    assert set(merged.all_targets()) - set(alone.all_targets()) == {
        "results/tables/accuracy_merged.csv"
    }
    assert merged.figures == alone.figures and merged.default_arm == "bn"


def test_ood_sets_without_a_shift_group_have_no_group_rows(tmp_path):
    rows = [
        f"m{i},{d},{dom},knn,raw,{v}"
        for i in range(5)
        for d, dom, v in (("in", "id", 50 + i), ("o1", "ood", 30 + i * i), ("o2", "ood", 9 - i))
    ]
    table = external.read_results_table(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"))
    corr = correlation_table(external.merge(None, {"t": table}), n_resamples=20, seed=0, subsets=[])
    assert set(corr["y_kind"]) == {"dataset", "mean"}
    kendall = corr[corr["method"] == "kendall"].set_index("y_dataset")["value"]
    assert kendall["o1"] == pytest.approx(1.0) and kendall["o2"] == pytest.approx(-1.0)
    assert kendall["mean_ood"] == pytest.approx(0.0)


EFFICIENT_PROBING = ROOT / "config" / "published_efficient_probing.csv"


def test_the_efficient_probing_table_through_the_analysis():
    """efficient-probing's results.csv (37 encoders; ImageNet kNN, linear and attentive top-1)
    as a results table: it validates, and its linear-vs-attentive Kendall tau, interval aside,
    equals scipy's on the table (0.91, the figure the authors' table gives)."""
    table = external.read_results_table(EFFICIENT_PROBING)
    assert len(table) == 3 * 37 and table["model"].nunique() == 37
    assert set(table["protocol"]) == {"knn", "linear", "attentive"}
    study = load_study(demo_config(models=[], results_tables=[str(EFFICIENT_PROBING)]), ROOT)
    assert set(study.measures["model"]) == set(table["model"])
    merged = external.merge(None, {EFFICIENT_PROBING.name: table})
    corr = correlation_table(merged, n_resamples=50, seed=0, subsets=["paradigm"])
    wide = table.pivot(index="model", columns="protocol", values="top1")
    rows = corr.query(
        "method == 'kendall' and subset == 'all' and y_kind == 'pair' and "
        "((x_protocol == 'linear' and y_protocol == 'attentive') or "
        "(x_protocol == 'attentive' and y_protocol == 'linear'))"
    )
    assert len(rows) == 1
    row = rows.iloc[0]
    expected = stats.kendalltau(wide["linear"], wide["attentive"])
    assert row["n"] == 37
    assert row["value"] == pytest.approx(expected.statistic, abs=1e-12)
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert round(row["value"], 2) == 0.91
    # the masked-image (generative) encoders gain most from attentive probing
    gain = (
        (wide["attentive"] - wide["linear"])
        .groupby(table.drop_duplicates("model").set_index("model")["paradigm"])
        .mean()
    )
    assert gain.idxmax() == "generative" and gain["generative"] > 5 > gain["discriminative"]


@pytest.mark.parametrize(
    ("cell", "column", "message"),
    [
        ("=HYPERLINK(1)", "model", "is not a name of letters"),
        ("@SUM(A1)", "dataset", "is not a name of letters"),
        ("-2+3", "shift_group", "is not a name of letters"),
        ("m$x^2$", "model", r"a '\$' is read as math"),
        ("+vit", "backbone", "is not a name of letters"),
        ("=1+1", "report", "starts like a spreadsheet formula"),
    ],
)
def test_names_that_a_spreadsheet_or_a_figure_would_evaluate_are_refused(
    tmp_path, cell, column, message
):
    """Issue 28: a name from a results table goes into accuracy_merged.csv and
    correlations.csv (opened in spreadsheets) and into figure text (matplotlib mathtext)."""
    row = {
        "model": "m",
        "dataset": "d",
        "domain": "id",
        "shift_group": "in_domain",
        "protocol": "knn",
        "arm": "raw",
        "top1": "50",
        "backbone": "vit",
        "report": "last",
    }
    row[column] = cell
    text = ",".join(row) + "\n" + ",".join(f'"{v}"' for v in row.values()) + "\n"
    path = write(tmp_path, text)
    with pytest.raises(external.ResultsTableError, match=rf"line 2, column '{column}'.*{message}"):
        external.read_results_table(path)
    good = dict(row, **{column: "ok_name-1.5" if column != "report" else "best"})
    text = ",".join(good) + "\n" + ",".join(good.values()) + "\n"
    assert external.read_results_table(write(tmp_path, text, "ok.csv"))[column][0] == good[column]


def test_a_file_name_that_would_become_a_formula_is_refused(tmp_path):
    path = write(tmp_path, HEADER + "\na,in,id,knn,raw,50\n", "=cmd.csv")
    with pytest.raises(
        external.ResultsTableError, match="its name '=cmd.csv' becomes the 'source'"
    ):
        external.read_results_table(path)


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("top1", "5_0"),  # float() accepts underscores between digits
        ("top1", "\u0665\u0660"),  # Arabic-Indic 50
        ("top1", "\uff15\uff10"),  # full-width 50
        ("top1", "5\u00b90"),  # a superscript digit
        ("top1", "0x32"),
        ("top5", "6_0"),
        ("k", "1_0"),
        ("n_test", "\u0661\u0660"),
    ],
)
def test_accuracies_and_counts_are_ascii_decimal_numbers(tmp_path, column, cell):
    """Issue 28: Python's float() reads '5_0' and non-ASCII digits as 50."""
    header = HEADER + ("" if column == "top1" else f",{column}")
    row = "a,in,id,knn,raw," + (cell if column == "top1" else f"40,{cell}")
    path = write(tmp_path, f"{header}\n{row}\n")
    with pytest.raises(
        external.ResultsTableError,
        match=rf"line 2, column '{column}': {re.escape(repr(cell))} is not a (plain )?"
        r"(decimal )?number",
    ) as error:
        external.read_results_table(path)
    assert str(error.value).startswith(f"results table '{path}'")
    assert "ASCII" in str(error.value)


def test_plain_decimal_numbers_still_read(tmp_path):
    cells = ["50", "50.5", "5e1", "+50", ".5", "50.", "1E-1", " 7 "]
    rows = "".join(f"m{i},in,id,knn,raw,{c}\n" for i, c in enumerate(cells))
    table = external.read_results_table(write(tmp_path, HEADER + "\n" + rows))
    assert table["top1"].tolist() == [50.0, 50.5, 50.0, 50.0, 0.5, 50.0, 0.1, 7.0]


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        # the quote opens on line 3 and never closes: the reader swallows lines 3-5
        (
            'a,in,id,knn,raw,50\n"resnet50,imagenet,id,knn,raw,50\nb,in,id,knn,raw,3\n'
            "c,in,id,knn,raw,4\n",
            3,
            "model",
        ),
        ('a,in,id,knn,raw,"50\nb,in,id,knn,raw,3\nc,in,id,knn,raw,4\n', 2, "top1"),
        # on the last line, with and without a final newline: 50 would be read
        ('a,in,id,knn,raw,50\nb,in,id,knn,raw,"50\n', 3, "top1"),
        ('a,in,id,knn,raw,50\nb,in,id,knn,raw,"50', 3, "top1"),
        # after a closed two-line cell of the same row: the line of the open quote
        ('a,in,id,knn,"r\naw",50\nb,in,id,knn,"x\ny","50\n\nc,in,id,knn,raw,4\n', 5, "top1"),
    ],
)
def test_an_unclosed_quote_is_reported_where_it_opens(tmp_path, body, line, column):
    path = write(tmp_path, HEADER + "\n" + body)
    with pytest.raises(
        external.ResultsTableError,
        match=rf"':\n  line {line}, column '{column}': the quote .* is never closed",
    ) as error:
        external.read_results_table(path)
    assert str(error.value).startswith(f"results table '{path}'")


def test_an_unclosed_quote_in_the_header_is_reported_on_line_1(tmp_path):
    path = write(tmp_path, 'model,dataset,domain,protocol,arm,"top1\na,in,id,knn,raw,5\n')
    with pytest.raises(external.ResultsTableError, match=r"line 1, column 6: .* never closed"):
        external.read_results_table(path)


def test_a_closed_quote_on_the_last_line_is_fine(tmp_path):
    path = write(tmp_path, HEADER + '\na,in,id,knn,raw,"50"\nb,in,id,"knn",raw,"4\n0"')
    with pytest.raises(external.ResultsTableError, match="line 4, column 'top1': '4\\\\n0'"):
        external.read_results_table(path)
    path = write(tmp_path, HEADER + ',report\na,in,id,knn,raw,50,\nb,in,id,knn,raw,40,"say ""hi"""')
    assert external.read_results_table(path)["report"].tolist()[1] == 'say "hi"'
    path = write(tmp_path, HEADER + '\na,in,id,knn,raw,"50"\nb,in,id,"knn",raw,"40"')
    assert external.read_results_table(path)["top1"].tolist() == [50.0, 40.0]


def test_an_all_empty_top1_column_is_refused(tmp_path):
    """Issue 28: a table without a single accuracy passed."""
    path = write(tmp_path, HEADER + ",top5\na,in,id,knn,raw,,50\nb,in,id,knn,raw, ,\n")
    with pytest.raises(
        external.ResultsTableError,
        match=r"column 'top1': empty on every row \(lines 2-3\)",
    ) as error:
        external.read_results_table(path)
    assert str(error.value).startswith(f"results table '{path}'")
    # some empty cells are missing values
    path = write(tmp_path, HEADER + "\na,in,id,knn,raw,\nb,in,id,knn,raw,5\n")
    assert external.read_results_table(path)["top1"].isna().tolist() == [True, False]
