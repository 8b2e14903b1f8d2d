"""The notebooks' widget callbacks, fired from Python: nbval runs every cell but touches no widget.

Each test module starts one kernel (nbclient), runs a notebook's cells in smoke mode up to the
cell that builds its widgets, then sets a widget's value from a further cell, which fires its
observers as a click in the browser would. nbclient stands in for the browser: it records what the
callbacks print and display into each Output widget, so the tests read what a student would see.
"""

from __future__ import annotations

import base64
import copy
import io
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
PIL_Image = pytest.importorskip("PIL.Image")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


class LiveNotebook:
    """A kernel that has run a notebook's cells up to (and with) the first containing ``marker``."""

    def __init__(self, name: str, marker: str, cwd: Path) -> None:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        last = next(i for i, cell in enumerate(nb.cells) if marker in cell.source)
        nb.cells = nb.cells[: last + 1]
        self.nb = nb
        self.client = nbclient.NotebookClient(
            nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        )

    def run_notebook(self) -> None:
        for index, cell in enumerate(list(self.nb.cells)):
            self.client.execute_cell(cell, index)

    def run(self, code: str) -> str:
        """Run ``code`` in the kernel as a new cell (errors raise); return what it printed."""
        cell = nbformat.v4.new_code_cell(code)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    def shown_in(self, widget: str) -> tuple[str, list[str]]:
        """What the Output widget named ``widget`` shows now: its text and its PNG pictures."""
        model_id = self.run(f"print({widget}.model_id)").strip()
        outputs = copy.deepcopy(self.client.widget_state[model_id]["outputs"])
        text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
        pngs = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
        return text, pngs


def live(name: str, marker: str, tmp_path_factory: pytest.TempPathFactory):
    """Start the kernel (smoke mode, a private cache), run the notebook; stop it afterwards."""
    notebook = LiveNotebook(name, marker, tmp_path_factory.mktemp("kernel-cwd"))
    env = {
        **os.environ,
        "LESIONLIB_SMOKE": "1",
        "LESIONLIB_CACHE": str(tmp_path_factory.getbasetemp() / "lesionlib-cache"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    with notebook.client.setup_kernel(env=env):
        notebook.run_notebook()
        yield notebook


def single_picture(pngs: list[str]) -> str:
    """The one figure an Output widget shows: the callback cleared the previous one."""
    assert len(pngs) == 1, f"the output widget shows {len(pngs)} figures, expected 1"
    return pngs[0]


# ---- notebook 05: the augmentation viewer (preset dropdown, image slider, re-sample button)


@pytest.fixture(scope="module")
def viewer_nb(tmp_path_factory):
    yield from live(
        "05_augmentation_and_class_imbalance.ipynb", "preset_box.observe", tmp_path_factory
    )


def test_viewer_redraws_for_preset_image_and_resample(viewer_nb: LiveNotebook) -> None:
    text, pngs = viewer_nb.shown_in("viewer")
    first_id = viewer_nb.run("print(train_table['image_id'].iloc[image_slider.value])").strip()
    assert f"{first_id} (" in text and "strong preset" in text
    before = single_picture(pngs)

    viewer_nb.run('preset_box.value = "none"')
    text, pngs = viewer_nb.shown_in("viewer")
    assert "none preset" in text and first_id in text, text
    after_preset = single_picture(pngs)
    assert after_preset != before

    other = viewer_nb.run(
        "other = (image_slider.value + 1) % len(train_table)\n"
        "image_slider.value = other\n"
        "print(train_table['image_id'].iloc[other])"
    ).strip()
    assert other != first_id
    text, pngs = viewer_nb.shown_in("viewer")
    assert f"{other} (" in text and "none preset" in text, text
    after_image = single_picture(pngs)
    assert after_image != after_preset

    # "none" is deterministic (resize + centre crop): re-sampling draws the same pictures ...
    viewer_nb.run("resample_button.click()")
    assert single_picture(viewer_nb.shown_in("viewer")[1]) == after_image
    # ... "strong" draws new ones at every click.
    viewer_nb.run('preset_box.value = "strong"')
    strong = single_picture(viewer_nb.shown_in("viewer")[1])
    viewer_nb.run("resample_button.click()")
    text, pngs = viewer_nb.shown_in("viewer")
    assert "strong preset" in text
    assert single_picture(pngs) != strong


# ---- notebook 06: the demo (test-image picker, file upload -> top-3 and Grad-CAM)


@pytest.fixture(scope="module")
def demo_nb(tmp_path_factory):
    yield from live("06_evaluation_and_explainability.ipynb", "picker.observe", tmp_path_factory)


def check_prediction(text: str, title: str, n_classes: int) -> None:
    """The demo's text: the note, then ``title: class p%, class p%, ...`` (the top classes)."""
    assert "not a medical device" in text, text
    line = next((ln for ln in text.splitlines() if ln.startswith(f"{title}: ")), None)
    assert line is not None, f"no prediction line for {title!r} in {text!r}"
    assert line.count("%") == min(3, n_classes), line


def test_demo_shows_a_prediction_and_redraws_when_another_image_is_picked(demo_nb) -> None:
    names = demo_nb.run(
        "print(len(classes)); print(test_table['image_id'].iloc[0]); "
        "print(test_table['label'].iloc[0]); print(test_table['image_id'].iloc[1]); "
        "print(test_table['label'].iloc[1])"
    ).split()
    n_classes, first, first_label, second, second_label = int(names[0]), *names[1:]
    text, pngs = demo_nb.shown_in("demo")
    check_prediction(text, f"{first} (true class {first_label})", n_classes)
    before = single_picture(pngs)

    demo_nb.run("picker.value = 1")
    text, pngs = demo_nb.shown_in("demo")
    check_prediction(text, f"{second} (true class {second_label})", n_classes)
    assert first not in text
    assert single_picture(pngs) != before


def upload_fixture(demo_nb: LiveNotebook, index: int, fmt: str) -> int:
    """Put the bytes of a ``fmt`` file of test image ``index`` (what a browser uploads) into the
    kernel's ``raw``; return the number of classes."""
    path = demo_nb.run(f"print(test_table['path'].iloc[{index}])").strip()
    buffer = io.BytesIO()
    PIL_Image.open(path).convert("RGB").save(buffer, fmt)
    data = base64.b64encode(buffer.getvalue()).decode()
    return int(demo_nb.run(f"import base64\nraw = base64.b64decode('{data}')\nprint(len(classes))"))


# What a browser upload does to the widget, per ipywidgets version. Where the kernel has the other
# version, the test hands that version's value to the observer, as that version's widget would.
NATIVE_UPLOAD = """
import ipywidgets
if int(ipywidgets.__version__.split(".")[0]) == {major}:
    {native}
else:
    on_upload({{"name": "value", "old": upload.value, "new": value, "owner": upload}})
"""


def test_demo_predicts_an_upload_in_the_ipywidgets_8_format(demo_nb) -> None:
    before = single_picture(demo_nb.shown_in("demo")[1])
    n_classes = upload_fixture(demo_nb, 2, "JPEG")
    # ipywidgets 8: a tuple of dicts, the bytes as a memoryview; the browser sets value
    demo_nb.run(
        "import datetime\n"
        "value = ({'name': 'my lesion.jpg', 'type': 'image/jpeg', 'size': len(raw), "
        "'content': memoryview(raw), 'last_modified': datetime.datetime(2025, 1, 1)},)"
        + NATIVE_UPLOAD.format(major=8, native="upload.value = value")
    )
    text, pngs = demo_nb.shown_in("demo")
    check_prediction(text, "uploaded: my lesion.jpg", n_classes)
    assert single_picture(pngs) != before


def test_demo_predicts_an_upload_in_the_ipywidgets_7_format(demo_nb) -> None:
    before = single_picture(demo_nb.shown_in("demo")[1])
    n_classes = upload_fixture(demo_nb, 3, "PNG")
    # ipywidgets 7: a dict name -> {"metadata": {...}, "content": bytes}; value is read-only, the
    # browser sets metadata and data and counts up _counter, which rebuilds value
    demo_nb.run(
        "meta = {'name': 'mole.png', 'type': 'image/png', 'size': len(raw), 'lastModified': 0}\n"
        "value = {'mole.png': {'metadata': meta, 'content': raw}}"
        + NATIVE_UPLOAD.format(
            major=7,
            native="upload.metadata, upload.data = [meta], [raw]\n    upload._counter += 1",
        )
    )
    text, pngs = demo_nb.shown_in("demo")
    check_prediction(text, "uploaded: mole.png", n_classes)
    assert single_picture(pngs) != before
    # the picker still redraws after an upload
    demo_nb.run("picker.value = (picker.value + 1) % len(picker.options)")
    assert "(true class" in demo_nb.shown_in("demo")[0]
