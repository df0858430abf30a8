"""The run folder on disk: typed metadata and its schema (meta.py), saving and loading the files
(folder.py), and one writer per folder (lock.py)."""
