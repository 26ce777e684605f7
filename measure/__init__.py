"""The measurement tools (`python -m measure.X`): how fast each part runs, and the GPU check.

- profile: the DALI pretraining pipeline cut after each stage, against the PyAV + NumPy baseline
  (baseline)
- bench_fame: the FAME op alone; bench_trainer: the MoCo step alone
- gpu_check: the GPU verification, in stages that fit a short loan of a GPU machine
- machine: what machine a figure was measured on
"""
