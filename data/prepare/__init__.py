"""File lists of datasets: the real benchmarks from their official annotation files
(data.prepare.benchmarks), a folder of your own videos (data.prepare.folder), both written
the same way (data.prepare.lists)."""
