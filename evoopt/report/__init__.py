"""Reports on a campaign store: ``html`` (the self-contained HTML report), ``lineage`` (genome
diffs and the ancestry tree) and ``history`` (pandas tables). Import the submodules directly;
this package imports nothing so that the CLI stays fast."""
