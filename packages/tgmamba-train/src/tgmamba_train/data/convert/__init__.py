"""Converters from the corpora's published raw forms to the on-disk format of :mod:`tgmamba_train.data.store`.

* ``eye_state``: handled by :func:`tgmamba_train.data.eye_state.convert_arff` (package data).
* ``sleep_edf``: Sleep-EDF PSG + hypnogram EDF(+) pairs -> 30-s epoch spectrograms, 5 stages.
* ``tusz``: TUH EEG Seizure Corpus EDF + .csv_bi/.tse_bi -> 10-s clips, FFT (19, 10, 100) or raw (19, 2000, 1).
* ``dodh``: Dreem Open Dataset-Healthy .h5 records -> 30-s epoch spectrograms (16, 31, 129), 5 stages.
* ``bci``: Kaggle "BCI Challenge @ NER 2015" Data_S*_Sess*.csv + TrainLabels.csv -> feedback epochs, 56 channels.
* ``mamem``: MAMEM SSVEP trials (.mat arrays or EDF+ with annotations) -> 8 occipital channels.
"""
