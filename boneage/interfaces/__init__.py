"""The interfaces people and machines use: the ``boneage`` command (cli) and the web app and
JSON API (serve, static/).

May import: every other subpackage, but never the trainer (training, replicas, datasets,
distributed): a clinician's command must not load the training stack. Checked by
import-linter.
"""
