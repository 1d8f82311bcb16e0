"""The model card written out: Markdown and one self-contained printable HTML page, made from the same blocks.

markdown(run_dir)                    # the card as Markdown, referring to confusion_matrix.png
html(run_dir)                        # one page, the matrix inline
write(run_dir, "out/", parity=rows)  # MODEL_CARD.md, model_card.html, confusion_matrix.png
write(run_dir, "out/", parity=rows, deployment=report)  # with an export's deployment report (core.publish.report)
"""

from __future__ import annotations

import base64
import html as html_lib
import os
from pathlib import Path
from typing import Any

from core.publish.card.facts import MAX_TABLE_CLASSES, NOT_RECORDED, PLACEHOLDER, facts, number, percent
from core.publish.card.figures import confusion_png
from core.publish.report import class_table, none_of_these_words
from core.publish.report import table as deployment_table

MARKDOWN_FILE, HTML_FILE, IMAGE_FILE = "MODEL_CARD.md", "model_card.html", "confusion_matrix.png"


# ---------------------------------------------------------------------------------------------- the card's blocks

# The card is one list of sections made of a few kinds of block; the Markdown and the HTML are two ways of writing
# the same list, so they cannot disagree.
Block = tuple  # ("p", text) | ("ul", [text]) | ("kv", [(label, text)]) | ("table", header, rows, numeric) | ("image",)


def _p(text: str) -> Block:
    return ("p", text)


def _table(header: list[str], rows: list[list[str]], numeric: set[int]) -> Block:
    """A table; ``numeric``: the indexes of the columns aligned right."""
    return ("table", header, rows, numeric)


def _sections(f: dict[str, Any], parity: list[dict] | None, image: bool,
              deployment: dict | None = None) -> list[tuple[str, list[Block]]]:  # fmt: skip
    sections = [
        ("What it is for", [_p(f["purpose"] or PLACEHOLDER)]),
        ("Data", _data_blocks(f)),
        ("Training settings", [("kv", [(r["label"], r["text"]) for r in f["training"]])]),
        ("Results", _result_blocks(f)),
    ]
    if f["evaluation"]:
        sections.append(("Confusion matrix", _matrix_blocks(f["evaluation"], image)))
    if f["calibration"]:
        sections.append(("Trust in the probabilities", _trust_blocks(f["calibration"])))
    if f.get("none_of_these"):
        sections.append(("None of these", _none_of_these_blocks(f["none_of_these"])))
    limits = [x["text"] for x in f["limits"]] or ["None of the known limits applies to this run."]
    sections.append(("Known limits", [("ul", limits)]))
    # The steps are core.imaging.pillow' own description, only laid out here: the card never restates them.
    steps = [
        key.replace("_", " ").capitalize() + ": " + ("; ".join(map(str, v)) if isinstance(v, list) else str(v))
        for key, v in f["preprocessing"].items()
    ]
    sections.append(("Preprocessing", [_p("From an image file to the model's answer, step by step:"), ("ul", steps)]))
    if parity:
        sections.append(("Exports checked against the app", _parity_blocks(parity)))
    if deployment:
        sections.append(("Deployment", _deployment_blocks(deployment)))
    sections.append(("Reproducibility", [("kv", _about(f))]))
    return sections


def _data_blocks(f: dict[str, Any]) -> list[Block]:
    d, m = f["dataset"], f["metrics"]
    parts = [("images", "In the dataset"), ("train", "Training"), ("val", "Validation"), ("test", "Test")]
    parts = [(k, name) for k, name in parts if any(r[k] for r in d["classes"])]
    rows = [[r["class"], *(_count(r[k]) for k, _ in parts)] for r in d["classes"]]
    used = f"The model trained on {_count(d['train_images'])} images and was validated on {_count(d['val_images'])}"
    used += f"; {_count(d['test_images'])} more are set aside for testing." if d["test_images"] else "."
    version = [_p(f"Dataset: {d['name'] or 'a saved dataset'}, version {d['version']}.")] if d.get("version") else []
    blocks = [
        *version,
        _p(f"{d['name'] or 'The dataset'}: {len(d['classes'])} classes, {_count(d['total'])} images. {used}"),
        _table(["Class", *(name for _, name in parts)], rows, set(range(1, len(parts) + 1))),
    ]
    if dropped := m.get("val_duplicates_dropped"):
        blocks.append(_p(f"{dropped} validation images that duplicated training images were left out of validation."))
    if d["skipped"]:
        blocks.append(_p(f"{d['skipped']} files of the upload were skipped (not images, or unreadable)."))
    return blocks


def _result_blocks(f: dict[str, Any]) -> list[Block]:
    m, ev = f["metrics"], f["evaluation"]
    training = [
        ("Validation accuracy", percent(m["val_accuracy"])),
        ("Validation loss", number(m["val_loss"])),
        ("Training accuracy", percent(m["train_accuracy"])),
        ("Epochs completed", f"{_count(m['epochs_completed'])} of {m['epochs_planned']}"),
    ]
    blocks: list[Block] = [("kv", training)]
    if not ev:
        return blocks
    where = f"{_count(ev['images'])} {ev['split']} images" + (f" of {ev['data']}" if ev["data"] else "")
    scores = [("Evaluated on", where), ("Accuracy", percent(ev["accuracy"])), ("Loss", number(ev["loss"]))]
    if ev["top_k"]:
        scores.append((f"Top-{ev['top_k']} accuracy", percent(ev["top_k_accuracy"])))
    per_class = [
        [r["class"], percent(r["precision"]), percent(r["recall"]), percent(r["f1"]), _count(r["support"])]
        for r in ev["per_class"]
    ]
    return [
        *blocks,
        _p("Evaluation on images the model never trained on:"),
        ("kv", scores),
        _table(["Class", "Precision", "Recall", "F1", "Images"], per_class, {1, 2, 3, 4}),
        _p(
            "Precision: of the images the model gave this class, the share that are of it. Recall: of the images "
            "of this class, the share the model found."
        ),
    ]


def _matrix_blocks(ev: dict[str, Any], image: bool) -> list[Block]:
    blocks = [
        _p(
            "Rows: the true class; columns: the class the model said. Each cell counts images; the darker, the "
            "larger its share of the row."
        )
    ]
    if image:
        blocks.append(("image",))
    elif len(ev["classes"]) <= MAX_TABLE_CLASSES:
        rows = [[c, *map(str, row)] for c, row in zip(ev["classes"], ev["confusion"], strict=True)]
        blocks.append(_table(["True ↓ predicted →", *ev["classes"]], rows, set(range(1, len(ev["classes"]) + 1))))
    else:
        blocks.append(_p(f"With {len(ev['classes'])} classes the matrix is an image: see {IMAGE_FILE}."))
    return blocks


def _trust_blocks(c: dict[str, Any]) -> list[Block]:
    if c["calibrated"]:
        fitted = (
            f"Calibrated on {_count(c['images'])} {c['split']} images: expected calibration error "
            f"{percent(c['ece_before'])} → {percent(c['ece_after'])}, temperature {c['temperature']:.2f}. "
            "A calibrated model's 80% is right about 8 times in 10."
        )
    else:
        fitted = f"Not calibrated: {c['reason'] or 'the run was not calibrated.'}"
    if c["coverage"] is None:
        threshold = "No “not sure” threshold: every answer is given."
    elif c["threshold"] is None:
        threshold = f"No “not sure” threshold: every answer is given ({percent(c['accuracy'])} right)."
    else:
        who = (
            "set by hand on the Evaluate page"
            if c["threshold_source"] == "user"
            else f"chosen so that {percent(c['target'])} of the answers are right"
        )
        threshold = (
            f"“Not sure” below {percent(c['threshold'])} confidence ({who}): the model answers "
            f"{percent(c['coverage'])} of the {c['split']} images, and {percent(c['accuracy'])} of those answers "
            "are right."
        )
    return [_p(fitted), _p(threshold)]


def _none_of_these_blocks(n: dict[str, Any]) -> list[Block]:
    if not n["available"]:
        return [_p(f"This run cannot answer “none of these”: {n['reason']}")]
    return [
        _p("An image unlike every class is answered “none of these”, whatever the probabilities say. The score: "
           f"{n['words']}; above the threshold, “none of these”."),
        ("kv", [("Target false-alarm rate", percent(n["rate"])), ("Threshold (score)", f"{n['threshold']:,.6g}"),
                ("Validation images flagged",
                 f"{percent(n['validation_flagged'])} of {_count(n['validation_images'])}")]),
    ]  # fmt: skip


def _parity_blocks(parity: list[dict]) -> list[Block]:
    # An export checked on decoded pixels and on encoded bytes has two rows: "input" then tells them apart.
    inputs = any("input" in r for r in parity)
    scored = any(r.get("none_of_these_agreement") is not None for r in parity)
    rows = [
        [
            str(r.get("format", NOT_RECORDED)),
            *([str(r.get("input", NOT_RECORDED))] if inputs else []),
            _count(r.get("images")),
            _share(r.get("top1_agreement")),
            _small(r.get("max_abs_diff")),
            *([_share(r.get("none_of_these_agreement")), _small(r.get("max_score_diff"))] if scored else []),
            {True: "yes", False: "no"}.get(r.get("passed"), NOT_RECORDED),
        ]
        for r in parity
    ]
    unlike = ["None-of-these agreement", "Largest score difference (relative)"] if scored else []
    header = ["Format", *(["Input"] if inputs else []), "Images", "Top-1 agreement",
              "Largest probability difference", *unlike, "Passed"]  # fmt: skip
    first = 2 if inputs else 1
    words = ("Each exported model classified the same images as the app's model: how often their top class agrees, "
             "and the largest difference in any probability")  # fmt: skip
    if scored:
        words += ("; how often it answers “none of these” exactly when the app does, and the largest difference in "
                  "the score, relative to the larger of the threshold and the app's score")  # fmt: skip
    return [_p(words + "."), _table(header, rows, set(range(first, first + 3 + 2 * scored)))]


def _deployment_blocks(report: dict) -> list[Block]:
    header, rows = deployment_table(report)
    per_header, per_rows = class_table(report)
    blocks = [
        _p(f"Each export's size, its median time for one image on one thread and on every core, and how it does on "
           f"{report['images']}: top-1 agreement with the app, accuracy, expected calibration error."),
        _table(header, rows, set(range(1, len(header)))),
        _p("Accuracy per class:"),
        _table(per_header, per_rows, set(range(1, len(per_header)))),
    ]  # fmt: skip
    if report.get("representative"):
        blocks.append(_p(f"litert-int8 (full-integer) was calibrated on {report['representative']}."))
    if report.get("none_of_these"):
        blocks.append(_p(none_of_these_words(report["none_of_these"])))
    if report.get("warnings"):
        blocks += [_p("Warnings:"), ("ul", list(report["warnings"]))]
    return blocks


def _about(f: dict[str, Any]) -> list[tuple[str, str]]:
    model, run = f["model"], f["run"]
    names = {"tensorflow": "TensorFlow", "keras": "Keras", "numpy": "NumPy", "pillow": "Pillow"}
    about = [("Model file", f"{model['file']} ({model['bytes'] / 1e6:.1f} MB)"), ("SHA-256", model["sha256"])]
    if model["keras_version"]:
        about.append(("Saved with Keras", model["keras_version"]))
    # What is installed now, not necessarily what trained the model: the run's files do not record that.
    about += [(f"{names.get(k, k)} on this server", v or "not installed") for k, v in f["versions"].items()]
    trained = f"{run['started'] or NOT_RECORDED} to {run['finished'] or NOT_RECORDED}"
    return [*about, ("Run", run["id"]), ("Trained", trained)]


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else NOT_RECORDED if n is None else str(n)


def _share(x: Any) -> str:
    return percent(x) if isinstance(x, int | float) and not isinstance(x, bool) else _count(x)


def _small(x: Any) -> str:
    return f"{x:.2g}" if isinstance(x, float) else _count(x)


def _subtitle(f: dict[str, Any]) -> str:
    run = f["run"]
    by = f" by {run['owner']}" if run["owner"] else ""
    when = f" on {run['finished'][:10]}" if run["finished"] else ""
    status = " (stopped early)" if run["status"] == "stopped" else ""
    title = next((r["text"] for r in f.get("training", []) if r.get("setting") == "backbone"), "VGG16")
    return f"Run {run['id']}: a {title} image classifier trained{by}{when}{status}."


# ---------------------------------------------------------------------------------------------- Markdown


def image_markdown(image_name: str) -> str:
    """The line of the card that shows the confusion matrix image (a page can split the card there)."""
    return f"![Confusion matrix]({image_name})"


def _md(text: str) -> str:
    # '<' starts raw HTML in Markdown: written as an entity, nothing a user typed becomes a tag anywhere it renders.
    return str(text).replace("<", "&lt;")


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def markdown(run_dir: str | os.PathLike, parity: list[dict] | None = None, image_name: str | None = IMAGE_FILE,
             deployment: dict | None = None) -> str:  # fmt: skip
    """The card as Markdown. With ``image_name`` it shows the confusion matrix as that image file (``write`` puts it
    beside the card); with None, as a table of counts, so the text stands alone."""
    f = facts(run_dir)
    out = [f"# Model card: {_md(f['title'])}", "", _md(_subtitle(f)), ""]
    for title, blocks in _sections(f, parity, image=image_name is not None, deployment=deployment):
        out += [f"## {title}", ""]
        for block in blocks:
            kind = block[0]
            if kind == "p":
                out += [_md(block[1]), ""]
            elif kind == "ul":
                out += [f"- {_md_cell(item)}" for item in block[1]] + [""]
            elif kind == "kv":  # a list reads better than a table without a header row
                out += [f"- **{_md_cell(label)}:** {_md_cell(value)}" for label, value in block[1]] + [""]
            elif kind == "table":
                _, header, rows, numeric = block
                out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                out.append("|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows] + [""]
            elif kind == "image":
                out += [image_markdown(image_name), ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- HTML

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; margin: 0; }
main { max-width: 820px; margin: 2rem auto; padding: 0 1.25rem; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; padding-bottom: .2rem; border-bottom: 1px solid #dee2e6; }
.subtitle { color: #495057; margin-top: 0; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #dee2e6; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f1f3f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 14rem; font-weight: 600; }
td { overflow-wrap: anywhere; }
.purpose { white-space: pre-wrap; }
img { max-width: 100%; height: auto; }
@page { size: A4; margin: 16mm; }
@media print {
  body { font-size: 10pt; }
  main { max-width: none; margin: 0; padding: 0; }
  h2 { break-after: avoid; }
  table, img, li { break-inside: avoid; }
  th { background: #f1f3f5 !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _e(text: Any) -> str:
    return html_lib.escape(str(text), quote=True)


def html(run_dir: str | os.PathLike, parity: list[dict] | None = None, deployment: dict | None = None) -> str:
    """The card as one self-contained, printable HTML page: inline CSS, the confusion matrix as a data: URI,
    every text escaped (the purpose is what a user typed)."""
    f = facts(run_dir)
    png = confusion_png(run_dir)
    body = [f"<header><h1>Model card: {_e(f['title'])}</h1>", f'<p class="subtitle">{_e(_subtitle(f))}</p></header>']
    for number_, (title, blocks) in enumerate(_sections(f, parity, image=png is not None, deployment=deployment)):
        body.append(f"<section><h2>{_e(title)}</h2>")
        for block in blocks:
            kind = block[0]
            if kind == "p":
                css = ' class="purpose"' if number_ == 0 else ""
                body.append(f"<p{css}>{_e(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_e(item)}</li>" for item in block[1]) + "</ul>")
            elif kind == "kv":
                rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in block[1])
                body.append(f'<table class="kv">{rows}</table>')
            elif kind == "table":
                _, header, rows, numeric = block
                align = [' class="num"' if i in numeric else "" for i in range(len(header))]
                head = "".join(f"<th{a}>{_e(h)}</th>" for a, h in zip(align, header, strict=True))
                cells = "".join(
                    "<tr>" + "".join(f"<td{a}>{_e(c)}</td>" for a, c in zip(align, row, strict=True)) + "</tr>"
                    for row in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            elif kind == "image" and png:
                data = base64.b64encode(png).decode("ascii")
                body.append(f'<img src="data:image/png;base64,{data}" alt="Confusion matrix">')
        body.append("</section>")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Model card: {_e(f['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------- files


def write(run_dir: str | os.PathLike, out_dir: str | os.PathLike, parity: list[dict] | None = None,
          deployment: dict | None = None) -> list[Path]:  # fmt: skip
    """Write MODEL_CARD.md, model_card.html and (after an evaluation) confusion_matrix.png into ``out_dir``;
    return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = confusion_png(run_dir)
    written = [out / MARKDOWN_FILE, out / HTML_FILE]
    written[0].write_text(markdown(run_dir, parity, IMAGE_FILE, deployment), encoding="utf-8")
    written[1].write_text(html(run_dir, parity, deployment), encoding="utf-8")
    if png:
        (out / IMAGE_FILE).write_bytes(png)
        written.append(out / IMAGE_FILE)
    return written
