"""Datasets on disk: scanning a source folder, preparing it, hashing and duplicate groups,
splits and split files, the audit, and the public dataset's download.
"""
