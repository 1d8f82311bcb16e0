"""The model card for stakeholders, made from a saved run: what the model is for, its data, settings and numbers.

    set_purpose(run_dir, "Sorts ants from bees in the garden survey.", user)   # the owner's own words
    purpose(run_dir)                                                           # "" until someone writes one
    facts(run_dir)                       # every number the card shows, as data (for tests and other code)
    markdown(run_dir)                    # the card as Markdown, referring to confusion_matrix.png
    html(run_dir)                        # one self-contained printable page (the matrix inline)
    confusion_png(run_dir)               # the confusion matrix drawn with Pillow, or None before an evaluation
    write(run_dir, "out/", parity=rows)  # MODEL_CARD.md, model_card.html, confusion_matrix.png

Everything comes from the run's own files (run.json, config.json, metrics.json, dataset.json, split.json,
evaluation.json, calibration.json, model.keras's checksum): the card never restates a number by hand, and it
says which known limits apply to this run. An export bundle passes its parity rows (``format``, ``images``,
``top1_agreement``, ``max_abs_diff``, ``passed``) to show how its files agree with the app's model, and its
deployment report (``core.publish.report``: size, latency, accuracy per class, ECE, warnings) as a section.

The card is built in the web server on every look at the Runs page: the card reads json files and hashes one
file, and never imports TensorFlow or Keras (package versions come from ``importlib.metadata``).

Modules: ``facts`` (what the card says), ``figures`` (the confusion matrix), ``render`` (Markdown, HTML, files).
May import ``core.evaluate`` and everything below it, and ``core.publish.report`` (no TensorFlow either); never
TensorFlow or Keras.
"""
