"""Records, readers, the forget/retain builder, the collator and the datamodule."""

from mirage.data.collate import IGNORE_INDEX, VLMCollator
from mirage.data.datamodule import VLMDataModule
from mirage.data.readers import read_conversations, read_vlguard
from mirage.data.records import DataError, Sample

__all__ = [
    "IGNORE_INDEX",
    "DataError",
    "Sample",
    "VLMCollator",
    "VLMDataModule",
    "read_conversations",
    "read_vlguard",
]
