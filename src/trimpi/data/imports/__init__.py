"""Import your own policy and examples into a trimpi dataset directory (`trimpi data import`)."""

from trimpi.data.imports.build import ImportOptions, import_dataset

__all__ = ["ImportOptions", "import_dataset"]
