"""The study tools (`python -m studies.X`): what the research around the method needs beyond the
core commands.

- sweep, trial, report: ablation grids over config keys (W&B sweeps), one trial per point
  (pretrain, linear probe, retrieval), their tables and plots
- results: every run's results.json in one table
- benchmark: the background-bias benchmark, MoCo against MoCo + FAME over seeds
- bias_probe: how much a trained classifier leans on the scenery; bias and probe are its library
- visualize: the paper's figures (masks, mask quality, CAAM, temporal kernels); metrics holds the
  study's measures of masks and maps
"""
