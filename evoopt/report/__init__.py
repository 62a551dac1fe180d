"""Reports on a campaign store: ``html`` (the self-contained HTML report, built by ``view_model``:
plain data from the store, ``figures``: plotly figures from it, and ``render``: the jinja2
template into the file), ``lineage`` (genome diffs and the ancestry tree) and ``history``
(pandas tables). Import the submodules directly; this package imports nothing so that the CLI
stays fast."""
