"""How good a run is: held-out metrics (``evaluation``), suspected label errors (``label_issues``), validation and
test images that copy training ones (``leaks``), runs side by side (``compare``), Grad-CAM (``explain``), and how
well "none of these" catches images unlike every class (``none_of_these``).

May import ``core.train`` and everything below it.
"""
