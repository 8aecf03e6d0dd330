"""The film sets bench/film_check.py judges, one family a module: samples (what a set yields,
encoders, where the shared films are), positives (RSNA and phantom films), photos, medical
(DICOM test files, drawn chests), drawn (blanks, noise, gradients, text, shapes) and negatives
(crops without a hand, and the list of negative sets)."""
