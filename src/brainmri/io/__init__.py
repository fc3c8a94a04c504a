"""Reading images: any file or bytes to 8-bit grayscale, DICOM checks, the one preprocessing
path, and which files a command reads.
"""
