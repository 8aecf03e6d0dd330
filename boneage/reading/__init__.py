"""Reading a film for a person: load an export or the release and read films through the one
imaging path (predictor), Grad-CAM heatmaps (explain), the Greulich & Pyle call (standards),
and the checks of what a person typed or uploaded (inputs).

May import: boneage.learning (the exported model's names and signature), boneage.imaging,
boneage.kernel. Never the trainer (training, replicas, datasets, distributed).
"""
