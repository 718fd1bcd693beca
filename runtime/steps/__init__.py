"""Pipeline steps: what each Kubeflow component does, as plain functions over artifact directories.

``kubetune.components`` are thin shims that hand these functions their artifact paths: ``data``
(the dataset), ``model`` (the base model), ``train`` (a recipe run, reuse cache), ``evaluate``
(execution accuracy and its report), ``track`` (MLflow runs and a sweep's fan-in), ``propose``
(a sweep's next round), ``artifacts`` (what a model artifact holds).
"""
