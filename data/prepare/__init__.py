"""File lists of datasets: the real benchmarks from their official annotation files
(data.prepare.benchmarks), a folder of your own videos (data.prepare.folder), both written
the same way (data.prepare.lists)."""

from data.prepare.benchmarks import (
    PREPARERS,
    SPLIT_DATASETS,
    prepare_diving48,
    prepare_hmdb51,
    prepare_kinetics400,
    prepare_ucf101,
)
from data.prepare.folder import (
    DEFAULT_VAL_FRACTION,
    FolderReport,
    FolderScan,
    prepare_folder,
    scan_video_folder,
    split_by_class,
)
from data.prepare.lists import PrepareReport, write_prepared

__all__ = ["DEFAULT_VAL_FRACTION", "PREPARERS", "SPLIT_DATASETS", "FolderReport", "FolderScan", "PrepareReport",
           "prepare_diving48", "prepare_folder", "prepare_hmdb51", "prepare_kinetics400", "prepare_ucf101",
           "scan_video_folder", "split_by_class", "write_prepared"]
