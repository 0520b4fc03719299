# Figures: one named rule per registered figure (registry.FIGURES), so `snakemake f2_id_vs_ood`
# or a change to config figures.f2 re-renders that figure alone.


for _name in PLAN.figures:

    rule:
        name:
            _name
        input:
            **{t: PLAN.table_path(t) for t in registry.FIGURES[_name]["inputs"]},
        output:
            png=in_report(
                f"results/figures/{_name}.png",
                caption=f"../report/{_name}.rst",
                category="Figures",
            ),
            pdf=f"results/figures/{_name}.pdf",
        log:
            f"logs/figures/{_name}.log",
        localrule: True
        conda:
            "../envs/sslbench.yaml"
        params:
            figure=_name,
            options=PLAN.figure_options(_name),
            code=PLAN.code(_name),
        script:
            script_path("plot_figure")
