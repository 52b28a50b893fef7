"""results/index.html: one static page (no server, no network, no script) with the table,
the summary plot and, per class and seed, the AUROC curve, ROC, score histograms, the
per-defect table and the misses gallery. Links are relative, so the results folder can be
copied or zipped; every name is escaped; only files that exist are linked."""
import csv
import html
import time
from pathlib import Path
from urllib.parse import quote

from harness.analysis_report import run_figures
from harness.groups import group_rows
from harness.references import REFERENCES
from harness.results import MEAN_KEYS, NOT_RUN, cell
from spreadsheet import csv_cell_text
from files import atomic_write

REPORT_NAME = "index.html"
RUN_FIGURES = [("auroc.png", "image AUROC after each meta epoch"), ("roc.png", "ROC"),
               ("scores.png", "test scores and threshold")]
TABLE_COLUMNS = [("class", "class"), ("auroc_last", "image AUROC (last epoch)"),
                 ("auroc_max", "max AUROC (test-selected)"), ("aupr", "AUPR"),
                 ("f1_max", "F1-max"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"),
                 ("reference_auroc", "reference AUROC"), ("train_minutes", "train+eval minutes"),
                 ("status", "status")]
STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1300px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 7px}
th{background:#eee}td{text-align:right}td:first-child,td:last-child{text-align:left}
td:first-child{max-width:16em;overflow-wrap:anywhere}h2,h3,figcaption{overflow-wrap:anywhere}
tr.mean{font-weight:bold;background:#f6f6f6}.bad{color:#b00}.note{color:#555;font-size:90%}
figure{display:inline-block;margin:4px;vertical-align:top}figcaption{font-size:85%}
.misses img{width:460px}.run img{max-height:300px}"""


def esc(value):
    return html.escape(str(value), quote=True)


def link(path, results_dir):
    """A relative URL from results_dir to path (every character that could end it quoted)."""
    return quote(Path(path).relative_to(results_dir).as_posix())


def read_csv_rows(path):
    """Rows of a CSV we wrote, each cell's text as it was before spreadsheet_safe."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{csv_cell_text(k): csv_cell_text(v or "") for k, v in row.items()}
                for row in csv.DictReader(f)]


def results_table(rows, mean, anchors, groups=()):
    """The class rows, the group rows and the mean row; a class name links to its section."""
    n_seeds = 2 if any(r.get("auroc_last_std") is not None for r in rows) else 1
    lines = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for _, h in TABLE_COLUMNS) + "</tr>"]
    for row in rows + list(groups) + [mean]:
        summary = row is mean or row.get("group")
        cells = []
        for key, _ in TABLE_COLUMNS:
            text = esc(cell(row, key, n_seeds))
            if key == "class" and summary:
                label = "mean" if row is mean else row["class"]
                text = esc(f"{label} ({row['classes_in_mean']} classes)")
            elif key == "class" and row["class"] in anchors:
                text = f'<a href="#{anchors[row["class"]]}">{text}</a>'
            bad = key == "status" and not summary and row.get("status") not in ("ok", NOT_RUN)
            cells.append(f'<td class="bad">{text}</td>' if bad else f"<td>{text}</td>")
        lines.append(f'<tr{" class=mean" if summary else ""}>' + "".join(cells) + "</tr>")
    return lines + ["</table>"]


def table_section(results_dir, rows, mean, reference, anchors, other_lines):
    """Heading, table, notes on the reference and the mean row, files, summary plot."""
    out = ["<h1>DifferNet results</h1>",
           f'<p class="note">Rebuilt {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} from the run '
           f"records in this folder.</p>"]
    groups = group_rows(rows, MEAN_KEYS, reference)
    out += results_table(rows, mean, anchors, groups)
    if reference != "none":
        out.append(f'<p class="note">Reference: {esc(REFERENCES[reference]["source"])}.</p>')
    out.append(f'<p class="note">Mean row: over {esc(mean["classes_in_mean"])} classes; its '
               f'reference is {esc(mean["reference_note"])}.</p>')
    if groups:
        out.append('<p class="note">Group rows (mean: dataset kind): the mean over the classes '
                   "of one kind of object that finished, out of the kind's classes; their reference is "
                   "the mean of the reference's values of the same classes.</p>")
    if other_lines:
        out += ["<p>Runs with other method settings (not in the table):</p><ul>"]
        out += [f"<li>{esc(line)}</li>" for line in other_lines] + ["</ul>"]
    files = [n for n in ("results.md", "results.csv", "results_per_seed.csv",
                         "results_per_size.csv", "results_transforms.csv")
             if Path(results_dir, n).is_file()]
    out.append("<p>" + " · ".join(f'<a href="{quote(n)}">{esc(n)}</a>' for n in files) + "</p>")
    if Path(results_dir, "summary.png").is_file():
        out.append('<img src="summary.png" alt="summary: AUROC per class beside the reference">')
    return out


def short_number(text):
    """A CSV's full-precision float with 4 decimals; other text as it is."""
    try:
        return text if float(text).is_integer() else f"{float(text):.4f}"
    except ValueError:
        return text


def per_defect_table(path, title="per defect type"):
    rows = read_csv_rows(path)
    if not rows:
        return []
    head = "".join(f"<th>{esc(k)}</th>" for k in rows[0])
    body = ["<tr>" + "".join(f"<td>{esc(short_number(v))}</td>" for v in r.values()) + "</tr>"
            for r in rows]
    return [f"<h4>{esc(title)}</h4><table>", f"<tr>{head}</tr>"] + body + ["</table>"]


def misses_gallery(folder, results_dir):
    """Thumbnails of misses/ captioned with kind, rank, defect, score, threshold and side."""
    rows = [r for r in read_csv_rows(folder / "misses.csv")
            if r.get("figure") and (folder / r["figure"]).is_file()]
    if not rows:
        return []
    out = ['<h4>lowest-scored anomalous and highest-scored normal images</h4><div class="misses">']
    for r in rows:
        caption = (f"{r['kind'].replace('_', ' ')} #{r['rank']}: {Path(r['image']).name}, "
                   f"defect {r['defect']}, score {float(r['score']):.4f}")
        if r["threshold"]:
            caption += f", threshold {float(r['threshold']):.4f} ({r['vs_threshold']})"
        src = link(folder / r["figure"], results_dir)
        out.append(f'<figure><a href="{src}"><img src="{src}" alt="{esc(caption)}"></a>'
                   f"<figcaption>{esc(caption)}</figcaption></figure>")
    return out + ["</div>"]


def run_section(record, results_dir):
    """One run's figures, history, per-defect table and misses."""
    folder = Path(record["folder"])
    row = record["row"]
    out = [f'<div class="run"><h3>seed {esc(record["seed"])}: {esc(row.get("status"))}</h3>']
    for name, caption in RUN_FIGURES + run_figures(folder):
        if (folder / name).is_file():
            src = link(folder / name, results_dir)
            out.append(f'<figure><img src="{src}" alt="{esc(caption)}">'
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
    links = [n for n in ("history.csv", "per_defect.csv", "per_size.csv", "defect_areas.csv",
                         "transforms_curve.csv", "run.json") if (folder / n).is_file()]
    out.append("<p>" + " · ".join(f'<a href="{link(folder / n, results_dir)}">{esc(n)}</a>'
                                  for n in links) + "</p>")
    if (folder / "per_defect.csv").is_file():
        out += per_defect_table(folder / "per_defect.csv")
    for name, title in (("per_size.csv", "per defect area (all normal test images vs each bin)"),
                        ("transforms_curve.csv", "test-time rotations")):
        if (folder / name).is_file():
            out += per_defect_table(folder / name, title)
    if (folder / "misses" / "misses.csv").is_file():
        out += misses_gallery(folder / "misses", results_dir)
    return out + ["</div>"]


def write_html_report(results_dir, rows, mean, records, reference, other_lines=(), analysis=()):
    """results_dir/index.html from the table rows and the records of the runs in it; analysis:
    HTML lines shown under the summary plot (harness/analysis_report.html_summary)."""
    results_dir = Path(results_dir).resolve()
    by_class = {}
    for record in sorted(records, key=lambda r: r["seed"]):
        by_class.setdefault(record["class"], []).append(dict(record, folder=Path(
            record["folder"]).resolve()))
    anchors = {row["class"]: f"class-{i}" for i, row in enumerate(rows) if row["class"] in by_class}
    body = table_section(results_dir, rows, mean, reference, anchors, other_lines)
    body += list(analysis)
    for row in rows:
        if row["class"] in by_class:
            body.append(f'<h2 id="{anchors[row["class"]]}">{esc(row["class"])}</h2>')
            for record in by_class[row["class"]]:
                body += run_section(record, results_dir)
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            "<title>DifferNet results</title>", f"<style>{STYLE}</style></head><body>"]
    page += body + ["</body></html>"]
    atomic_write(results_dir / REPORT_NAME,
                 lambda tmp: Path(tmp).write_text("\n".join(page) + "\n", encoding="utf-8"),
                 setting="results_dir")
