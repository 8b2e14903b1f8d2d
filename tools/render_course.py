"""The instructor's reference run: execute the course notebooks with papermill, render them to HTML.

    python tools/render_course.py DATA_DIR OUT_DIR [--cpu] [--notebooks 01 04] [--smoke]
    bash tools/render_course.sh DATA_DIR OUT_DIR [...]        (the same, through the .sh)

DATA_DIR holds one folder per dataset, as data/README.md downloads them (the first found is used):

- the 8-class notebooks 01, 02, 03 and 05: ``isic2019/`` (layout isic2019), else ``ham10000*/``
  (layout ham10000);
- notebook 04 (benign vs malignant): ``isic2016/`` (isic2016), else ``melanoma-binary*/``
  (imagefolder), else ``isic2016*/`` (isic2016 with ``skip_missing``);
- notebook 06 explains the model notebook 03 saved, 07 reports on everything.

OUT_DIR receives ``executed/NN_*.ipynb`` (the notebooks with their outputs), ``NN_*.html`` (what
an instructor reads), ``results/`` (the notebooks' JSON, models and split) and ``timings.json``
(wall seconds per notebook). Every notebook gets ``results_dir=OUT_DIR/results``.

``--cpu`` is the reduced budget of docs/results.md for a machine without GPU and without ImageNet
weights (from scratch, 48–64 px, a few epochs, subsets); without it the notebooks run with their
own defaults (the Colab GPU recipes). ``--smoke`` sets LESIONLIB_SMOKE=1: seconds per notebook on
the synthetic sample, whatever DATA_DIR holds. ``--solutions`` renders ``solutions/`` instead.
Needs the ``jupyter`` extra (papermill) and nbconvert: ``pip install -e '.[jupyter]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EIGHT_CLASS = (("isic2019", "isic2019", False), ("ham10000*", "ham10000", False))
BINARY = (
    ("isic2016", "isic2016", False),
    ("melanoma-binary*", "imagefolder", False),
    ("isic2016*", "isic2016", True),
)
# docs/results.md's CPU runs: from scratch at 48-64 px, few epochs, subsets where it is slow.
CPU = {
    "02": {"image_size": 64, "epochs": 3},
    "03": {"pretrained": False, "image_size": 64, "epochs": 3, "max_train_images": 600},
    "04": {"pretrained": False, "image_size": 64, "epochs": 3, "models": ["resnet18"]},
    "05": {"model": "resnet18", "pretrained": False, "image_size": 48, "epochs": 2}
    | {"max_train_images": 600},
}


def find_data(data_dir: Path, candidates: tuple) -> dict:
    """``data_dir``/``layout`` (and ``skip_missing``) parameters of the first folder present."""
    for pattern, layout, skip in candidates:
        for folder in sorted(data_dir.glob(pattern)):
            if folder.is_dir():
                return {"data_dir": str(folder), "layout": layout} | (
                    {"skip_missing": True} if skip else {}
                )
    names = ", ".join(pattern for pattern, _, _ in candidates)
    raise SystemExit(f"render_course: no dataset folder in {data_dir} (looked for {names})")


def parameters(number: str, data_dir: Path, results: Path, cpu: bool, smoke: bool) -> dict:
    """The papermill parameters of notebook ``number`` (``"01"`` ... ``"07"``)."""
    params: dict = {"results_dir": str(results)}
    if number in ("01", "02", "03", "05"):
        params |= {} if smoke else find_data(data_dir, EIGHT_CLASS)
    elif number == "04":
        params |= {} if smoke else find_data(data_dir, BINARY)
    elif number == "06":
        params["checkpoint"] = str(results / "03_resnet50.pt")
    if number != "07":
        params["keep_on_drive"] = False
    return params | (CPU.get(number, {}) if cpu else {})


def render(notebook: Path, out_dir: Path, params: dict) -> float:
    """Execute ``notebook`` with ``params`` into OUT/executed/, write OUT/<name>.html; seconds."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    executed = out_dir / "executed" / notebook.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=params,
            cwd=str(notebook.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    finally:  # a failed notebook is rendered too: the HTML shows where it stopped
        seconds = time.perf_counter() - start
        if executed.is_file():
            html, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
            (out_dir / f"{notebook.stem}.html").write_text(html, encoding="utf-8")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render_course", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="folder holding the dataset folders")
    parser.add_argument("out_dir", type=Path, help="where the HTML, executed notebooks go")
    parser.add_argument("--notebooks", nargs="+", default=None, help="e.g. 01 04 (default: all)")
    parser.add_argument("--cpu", action="store_true", help="docs/results.md's reduced CPU budget")
    parser.add_argument("--smoke", action="store_true", help="LESIONLIB_SMOKE=1: seconds each")
    parser.add_argument("--solutions", action="store_true", help="render solutions/ instead")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir() and not args.smoke:
        parser.error(f"DATA_DIR {args.data_dir} is not a folder")
    folder = ROOT / ("solutions" if args.solutions else "notebooks")
    chosen = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        chosen = [nb for nb in chosen if nb.name[:2] in {n.zfill(2)[:2] for n in args.notebooks}]
    if not chosen:
        parser.error(f"no notebook in {folder} matches {args.notebooks}")
    if args.smoke:
        os.environ["LESIONLIB_SMOKE"] = "1"
    os.environ.pop(
        "MPLBACKEND", None
    )  # Agg (set for tests) would keep every figure out of the HTML
    # the kernels import this checkout's lesionlib and lesioncheck, whatever is installed
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    out_dir = args.out_dir.resolve()
    results = out_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    timings_file = out_dir / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    failed = []
    for notebook in chosen:
        params = parameters(
            notebook.name[:2], args.data_dir.resolve(), results, args.cpu, args.smoke
        )
        print(f"{notebook.name}: {json.dumps(params)}", flush=True)
        try:
            seconds = render(notebook, out_dir, params)
            print(f"  done in {seconds:.0f} s -> {out_dir / notebook.stem}.html", flush=True)
            timings[notebook.stem] = round(seconds, 1)
        except Exception as error:  # papermill's PapermillExecutionError names the cell
            print(f"  FAILED: {type(error).__name__}: {str(error)[-800:]}", flush=True)
            failed.append(notebook.name)
        timings_file.write_text(json.dumps(timings, indent=1) + "\n")
    if failed:
        print(f"failed: {', '.join(failed)} (their HTML shows the error)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
