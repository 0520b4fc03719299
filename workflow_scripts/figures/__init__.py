"""Figures of the correlation study (seaborn/matplotlib, Agg backend): one module per figure.

Each figure of the registry (``registry.FIGURES``) is drawn by the module named like its key,
``workflow_scripts/figures/<name>.py`` (``f1_id_protocols.py`` ... ``f9_baselines.py``), through
its function ``plot(*tables, opts, png, pdf)``: the result tables the registry entry lists as
``inputs`` (DataFrames, in that order: the tidy accuracy table, the table of
:func:`workflow_scripts.correlations.correlation_table`, the model table T1), a dict of options
and the two output paths (PNG and PDF). Both files are written atomically
(:func:`workflow_scripts.io.atomic_path`) and the figure is closed afterwards. A figure's own
helpers (its cells or data, e.g. ``f5_cells``, ``f6_data``, ``f8_data``) live in its module;
what several figures share (labels, options, style, heatmap, saving) in
:mod:`workflow_scripts.figures.common`.

Options (all optional) and their defaults are those of config key ``figures.<figure>`` in
config/schemas/config.schema.yaml (read with :func:`workflow_scripts.schema.schema_defaults`;
common ones: ``method``, ``subset``, ``dpi``, ``cmap``, ``annotate``, ``font_scale``,
``title``).

The rule script (workflow_scripts/scripts/plot_figure.py) imports the figure's module by name,
and a job's code hash covers the modules that script and that module import
(:func:`workflow_scripts.provenance.code_hash`): so this file imports no figure module, and
editing one figure reruns that figure alone (editing common.py reruns every figure).

matplotlib and seaborn are imported lazily, and the Agg backend is selected inside the plotting
functions, never at import time.
"""
