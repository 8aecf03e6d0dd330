"""Reading a film for a person: load an export or the release and read films through the one
imaging path (predictor), Grad-CAM heatmaps (explain), the Greulich & Pyle call (standards),
the adult height predicted by Bayley-Pinneau from bone age and height (adult_height),
the checks of what a person typed or uploaded (inputs), and a received DICOM film read and
answered as a Structured Report and a Secondary Capture (dicom_reading, dicom_report).

May import: boneage.learning (the exported model's names and signature), boneage.imaging,
boneage.kernel. Never the trainer (training, replicas, datasets, distributed).
"""
