"""Built-in data sets: a registry (name, public source, checksums, licence), where they live on
disk (``data_dir=`` → ``$WENSU_DATA`` → a per-user cache) and fetching them by name, as
``torchvision.datasets`` / ``scanpy.datasets`` users expect. The console script is ``wensu-data``.
"""

from wensu.datasets.location import DataNotFound, cache_dir, data_root, locate
from wensu.datasets.registry import DataFile, DataSet, load_registry

__all__ = [
    "DataFile",
    "DataNotFound",
    "DataSet",
    "cache_dir",
    "data_root",
    "load_registry",
    "locate",
]
