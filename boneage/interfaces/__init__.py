"""The interfaces people and machines use: the ``boneage`` command (cli) and the web app and
JSON API (serve, static/), and the hospital ones: the DICOM node (dicom_node), the DICOMweb
worker (dicomweb_worker) and their commands (hospital_cli).

May import: every other subpackage, but never the trainer (training, replicas, datasets,
distributed): a clinician's command must not load the training stack. Checked by
import-linter.
"""
