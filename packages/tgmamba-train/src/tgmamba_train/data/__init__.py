"""Data: the embedded EEG Eye State default, the safe on-disk dataset format, EDF reading and converters."""
