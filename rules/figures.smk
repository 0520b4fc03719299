# Figures: one named rule per figure, so `snakemake f2_id_vs_ood` or a change to
# config figures.f2 re-renders that figure alone.


rule f1_id_protocols:
    input:
        correlations="results/tables/correlations.csv",
    output:
        png=report(
            "results/figures/f1_id_protocols.png",
            caption="../report/f1_id_protocols.rst",
            category="Figures",
        ),
        pdf="results/figures/f1_id_protocols.pdf",
    log:
        "logs/figures/f1_id_protocols.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        figure="f1",
        options=config["figures"]["f1"],
        code=code("plot_figure"),
    script:
        script_path("plot_figure")


rule f2_id_vs_ood:
    input:
        correlations="results/tables/correlations.csv",
    output:
        png=report(
            "results/figures/f2_id_vs_ood.png",
            caption="../report/f2_id_vs_ood.rst",
            category="Figures",
        ),
        pdf="results/figures/f2_id_vs_ood.pdf",
    log:
        "logs/figures/f2_id_vs_ood.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        figure="f2",
        options=config["figures"]["f2"],
        code=code("plot_figure"),
    script:
        script_path("plot_figure")


rule f3_scatter:
    input:
        accuracy="results/tables/accuracy.csv",
    output:
        png=report(
            "results/figures/f3_scatter.png",
            caption="../report/f3_scatter.rst",
            category="Figures",
        ),
        pdf="results/figures/f3_scatter.pdf",
    log:
        "logs/figures/f3_scatter.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        figure="f3",
        # default to the BN arm when it runs, else the raw arm
        options={
            "x_arm": config["arms"][-1],
            "y_arm": config["arms"][-1],
            **config["figures"]["f3"],
        },
        code=code("plot_figure"),
    script:
        script_path("plot_figure")


rule f4_bn_effect:
    input:
        accuracy="results/tables/accuracy.csv",
        correlations="results/tables/correlations.csv",
    output:
        png=report(
            "results/figures/f4_bn_effect.png",
            caption="../report/f4_bn_effect.rst",
            category="Figures",
        ),
        pdf="results/figures/f4_bn_effect.pdf",
    log:
        "logs/figures/f4_bn_effect.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        figure="f4",
        options=config["figures"]["f4"],
        code=code("plot_figure"),
    script:
        script_path("plot_figure")


rule f5_shift_groups:
    input:
        correlations="results/tables/correlations.csv",
    output:
        png=report(
            "results/figures/f5_shift_groups.png",
            caption="../report/f5_shift_groups.rst",
            category="Figures",
        ),
        pdf="results/figures/f5_shift_groups.pdf",
    log:
        "logs/figures/f5_shift_groups.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        figure="f5",
        options=config["figures"]["f5"],
        code=code("plot_figure"),
    script:
        script_path("plot_figure")


rule f6_paradigm_backbone:
    input:
        accuracy="results/tables/accuracy.csv",
    output:
        png=report(
            "results/figures/f6_paradigm_backbone.png",
            caption="../report/f6_paradigm_backbone.rst",
            category="Figures",
        ),
        pdf="results/figures/f6_paradigm_backbone.pdf",
    log:
        "logs/figures/f6_paradigm_backbone.log",
    conda:
        "../envs/sslbench.yaml"
    params:
        figure="f6",
        # default to the BN arm when it runs, else the raw arm
        options={"arm": config["arms"][-1], **config["figures"]["f6"]},
        code=code("plot_figure"),
    script:
        script_path("plot_figure")
