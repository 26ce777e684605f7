"""DALI input pipelines: pretraining (two clips + FAME), training clips and test clips.

- videos: usable videos of a probed index (bad files named or skipped up front)
- feeds: the declared feeds of each role (name, DALI type, per view or per batch)
- params: AugParams, ClipGeometry, Runtime and Sharding, the plain settings the engine maps a config onto
- sampler: stateless keyed draws (epoch order, shards, clip starts, crops, colour, FAME seed)
- graphs: the DALI graphs per role, CPU or GPU; the pretraining graph a chain of steps a profile can stop early
- fame_stage: the python_function adapter around fame.augment (NumPy or CuPy)
- loader: VideoLoader and the per-role builders yielding torch batches, resumable
- forensics: which videos (or else the pipeline itself) a failed batch is to blame on
- baseline: the PyAV + NumPy loader the DALI pipeline is measured against
- blas: single-threaded NumPy BLAS inside the python stage
"""
