"""An interactive viewer page for one prediction: :func:`write_viewer_page` (``rrcunet view``, and
the pages linked from ``rrcunet demo`` and ``rrcunet evaluate`` reports).

The page is NiiVue (``@niivue/niivue`` 0.69.0, BSD-2-Clause; vendored unmodified as
``vendor/niivue-0.69.0.umd.js`` with its licence, copied beside the page as ``niivue.umd.js``),
a WebGL2 viewer of NIfTI volumes. We write the HTML around it because what a reviewer needs is
ours: the CT with the lung (green) and tumour (red) overlays in axial, coronal, sagittal and 3D,
window presets (lung −1350…150 HU, mediastinum −160…240 HU), an overlay opacity slider, a list of
the lesions that moves the crosshair to each one's centroid, and the uncertainty map when one exists.

The volumes are embedded in the page as base64 NIfTI (``NVImage.loadFromBase64``), so it opens from
``file://`` with no server and no network. To keep pages small, the CT is cropped to the labelled
region plus ``margin_mm`` and resampled so that no axis has more than ``max_size`` voxels (the page
says so when it did); the label maps follow with nearest-neighbour sampling, the CT with trilinear.

A URL fragment sets the view for scripted checks: ``#view=axial&lesion=1&crosshair=0`` (what the
browser test uses): ``view`` one of ``axial``, ``coronal``, ``sagittal``, ``render``,
``multiplanar``; ``lesion`` the lesion to centre on; ``crosshair=0`` hides the crosshair.

Page layout (what the browser test's position check relies on): a 260-pixel side panel, the
viewer canvas filling the rest of the window; in a single 2D view NiiVue scales the volume's
extent (voxel corners, RAS mm) uniformly to fit the canvas, centred, in the radiological
convention (patient right on screen left, anterior up).
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.errors import InputError
from rrcunet.io import Volume, write_volume
from rrcunet.io.atomic import atomic_write_bytes, atomic_write_text
from rrcunet.preprocessing.crop import cropped_geometry
from rrcunet.preprocessing.resample import resize, resized_geometry

NIIVUE_VERSION = "0.69.0"
NIIVUE_FILE = "niivue.umd.js"
WINDOWS = {"lung": (-1350.0, 150.0), "mediastinum": (-160.0, 240.0)}
SIDE_PX = 260  # width of the page's side panel; the viewer canvas fills the rest


@dataclass(frozen=True)
class ViewerPage:
    """A written page: its path, size in bytes, and how the CT was reduced for it (``None``: as is)."""

    path: Path
    n_bytes: int
    reduced: str | None
    geometry: Any = None  # the grid of the CT on the page (after any crop and resampling)


def niivue_source() -> Path:
    """The vendored NiiVue build inside the installed package."""
    return Path(str(resources.files("rrcunet").joinpath("visualization", "vendor", f"niivue-{NIIVUE_VERSION}.umd.js")))


def _crop_box(labels: np.ndarray, spacing: tuple[float, ...], margin_mm: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    idx = np.argwhere(labels > 0)
    if len(idx) == 0:
        return (0, 0, 0), tuple(labels.shape)
    pad = [int(math.ceil(margin_mm / s)) for s in spacing]
    lo = tuple(max(0, int(a) - p) for a, p in zip(idx.min(0), pad))
    hi = tuple(min(n, int(b) + 1 + p) for b, p, n in zip(idx.max(0), pad, labels.shape))
    return lo, hi


def _reduce(ct: Volume, volumes: list[Volume], margin_mm: float, max_size: int) -> tuple[Volume, list[Volume], str | None]:
    """Crop every volume to the labelled box (of ``volumes[0]``) and resample to at most ``max_size`` per axis."""
    lo, hi = _crop_box(np.asarray(volumes[0].array), ct.spacing, margin_mm)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    geo = cropped_geometry(ct.geometry, lo, hi)
    crop_shape = geo.shape
    scale = max(1.0, max(crop_shape) / float(max_size))
    shape = tuple(max(1, int(round(n / scale))) for n in crop_shape)
    notes = []
    if crop_shape != ct.shape:
        notes.append(f"cropped from {'×'.join(map(str, ct.shape))} to the labelled region plus {margin_mm:g} mm "
                     f"({'×'.join(map(str, crop_shape))})")
    out_geo = resized_geometry(geo, shape) if shape != crop_shape else geo
    if shape != crop_shape:
        notes.append(f"resampled to {'×'.join(map(str, shape))} for this page")

    def cut(vol: Volume, mode: str) -> Volume:
        arr = np.asarray(vol.array)[sl]
        if shape != crop_shape:
            arr = resize(arr[None].astype(np.float32 if mode == "linear" else arr.dtype), shape, mode=mode)[0].numpy()
        return Volume(np.ascontiguousarray(arr), out_geo, vol.kind)

    ct_small = cut(ct, "linear")
    ct_small = ct_small.with_array(np.clip(np.rint(np.asarray(ct_small.array)), -32768, 32767).astype(np.int16))
    others = [cut(v, "nearest" if v.kind == "label" else "linear") for v in volumes]
    return ct_small, others, ("; ".join(notes) or None)


def _nifti_base64(volume: Volume, folder: Path, name: str) -> str:
    path = folder / f"{name}.nii.gz"
    write_volume(volume, path)
    return base64.b64encode(path.read_bytes()).decode("ascii")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ margin: 0; font: 14px system-ui, sans-serif; background: #111; color: #eee; display: flex; height: 100vh; }}
#side {{ width: {side_px}px; flex: none; padding: 10px; box-sizing: border-box; overflow-y: auto; }}
#main {{ flex: 1; position: relative; }}
canvas {{ width: 100%; height: 100%; display: block; }}
button {{ margin: 2px; }}
.note {{ color: #aaa; font-size: 12px; }}
li {{ margin: 3px 0; }}
</style></head><body>
<div id="side">
<h3>{title}</h3>
<div>View:
<button data-view="multiplanar">all</button><button data-view="axial">axial</button>
<button data-view="coronal">coronal</button><button data-view="sagittal">sagittal</button>
<button data-view="render">3D</button></div>
<div>Window: <button data-window="lung">lung</button><button data-window="mediastinum">mediastinum</button></div>
<div>Overlay opacity <input id="opacity" type="range" min="0" max="100" value="60"></div>
{uncertainty_control}
{flag_items}<h4>Lesions</h4><ol id="lesions">{lesion_items}</ol>
<p class="note">Lung green, tumour red. {note}</p>
<p class="note">Viewer: NiiVue {niivue_version} (BSD-2-Clause). Works offline from this folder.</p>
</div>
<div id="main"><canvas id="gl"></canvas></div>
<script src="{niivue_file}"></script>
<script>
const DATA = {data};
const WINDOWS = {windows};
(async () => {{
  try {{
    const nv = new niivue.Niivue({{backColor: [0, 0, 0, 1], crosshairColor: [0.2, 0.6, 1, 1], show3Dcrosshair: true,
                                   isRadiologicalConvention: true}});
    await nv.attachTo("gl");
    const load = (b64, name) => niivue.NVImage.loadFromBase64({{base64: b64, name: name}});
    const ct = await load(DATA.ct, "ct.nii.gz");
    ct.colormap = "gray"; ct.cal_min = WINDOWS.lung[0]; ct.cal_max = WINDOWS.lung[1];
    nv.addVolume(ct);
    const overlays = [];
    for (const [key, cmap] of [["lung", "green"], ["tumour", "red"], ["uncertainty", "warm"]]) {{
      if (!DATA[key]) continue;
      const v = await load(DATA[key], key + ".nii.gz");
      v.colormap = cmap; v.cal_min = key === "uncertainty" ? 0.05 : 0.5; v.cal_max = 1.0;
      v.opacity = key === "uncertainty" ? 0.0 : 0.6;
      nv.addVolume(v); overlays.push([key, v]);
    }}
    const views = {{multiplanar: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial, coronal: nv.sliceTypeCoronal,
                    sagittal: nv.sliceTypeSagittal, render: nv.sliceTypeRender}};
    const setView = (name) => nv.setSliceType(views[name] ?? nv.sliceTypeMultiplanar);
    const setWindow = (name) => {{ ct.cal_min = WINDOWS[name][0]; ct.cal_max = WINDOWS[name][1]; nv.updateGLVolume(); }};
    const goTo = (i) => {{
      const c = DATA.lesions[i - 1]; if (!c) return;
      nv.scene.crosshairPos = nv.mm2frac([-c[0], -c[1], c[2]]);  // LPS (the JSON) to RAS (NiiVue)
      nv.updateGLVolume();
    }};
    document.querySelectorAll("[data-view]").forEach(b => b.onclick = () => setView(b.dataset.view));
    document.querySelectorAll("[data-window]").forEach(b => b.onclick = () => setWindow(b.dataset.window));
    document.querySelectorAll("[data-lesion]").forEach(b => b.onclick = () => goTo(Number(b.dataset.lesion)));
    document.getElementById("opacity").oninput = (e) => {{
      for (const [key, v] of overlays) if (key !== "uncertainty") v.opacity = e.target.value / 100;
      nv.updateGLVolume();
    }};
    const unc = document.getElementById("uncertainty");
    if (unc) unc.onchange = (e) => {{
      for (const [key, v] of overlays) if (key === "uncertainty") v.opacity = e.target.checked ? 0.6 : 0.0;
      nv.updateGLVolume();
    }};
    const hash = new URLSearchParams(location.hash.slice(1));
    setView(hash.get("view") || "multiplanar");
    if (hash.get("crosshair") === "0") nv.setCrosshairWidth(0);
    if (hash.get("lesion")) goTo(Number(hash.get("lesion")));
    else if (DATA.lesions.length) goTo(1);
    document.title = "ready: " + document.title;
    console.log("rrcunet-view-ready");
  }} catch (e) {{
    console.error("rrcunet-view-error " + e);
  }}
}})();
</script></body></html>
"""


def write_viewer_page(out_html: str | Path, ct: Volume, labels: Volume, *, title: str,
                      lesions: list[dict[str, Any]] | None = None, uncertainty: Volume | None = None,
                      flags: list[dict[str, Any]] | None = None, tumour_label: int = 2, margin_mm: float = 20.0, max_size: int = 256) -> ViewerPage:
    """Write an interactive viewer page (and ``niivue.umd.js`` beside it) for one CT and its label map.

    Args:
        out_html: the page to write (atomically).
        ct: the CT in HU.
        labels: the label map (0 background, 1 lung, ``tumour_label`` tumour) on the CT's grid.
        title: shown on the page.
        lesions: the prediction JSON's lesions (``centroid_mm_lps``, ``volume_ml``,
            ``longest_axial_diameter_mm``), listed and jumped to.
        uncertainty: a voxel uncertainty map in [0, 1] on the CT's grid, as an optional overlay.
        flags: the prediction's quality flags (``quality.flags``: ``code``, ``reason``), listed
            above the lesions.
        margin_mm, max_size: how the CT is cropped and reduced for the page (module docstring).
    """
    out = Path(out_html)
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError(f"{out}: the label map's grid ({labels.geometry.describe()}) is not the CT's "
                         f"({ct.geometry.describe()}); a viewer page needs both on one grid")
    arr = np.asarray(labels.array)
    lung = labels.with_array((arr > 0).astype(np.uint8) * (arr != tumour_label), kind="label")
    tumour = labels.with_array((arr == tumour_label).astype(np.uint8), kind="label")
    extra = [uncertainty] if uncertainty is not None else []
    ct_small, reduced_vols, note = _reduce(ct, [labels.with_array((arr > 0).astype(np.uint8), kind="label"),
                                                lung, tumour, *extra], margin_mm, max_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rrcunet_view_") as tmp:
        t = Path(tmp)
        data: dict[str, Any] = {"ct": _nifti_base64(ct_small, t, "ct"), "lung": _nifti_base64(reduced_vols[1], t, "lung"),
                                "tumour": _nifti_base64(reduced_vols[2], t, "tumour")}
        if uncertainty is not None:
            unc = reduced_vols[3]
            data["uncertainty"] = _nifti_base64(unc.with_array(np.asarray(unc.array, np.float32)), t, "uncertainty")
    lesions = lesions or []
    data["lesions"] = [[float(v) for v in lesion["centroid_mm_lps"]] for lesion in lesions]
    items = "".join(
        f'<li><button data-lesion="{i}">lesion {i}</button> {float(le.get("volume_ml", 0.0)):.1f} mL'
        + (f', {float(le["longest_axial_diameter_mm"]):.0f} mm' if le.get("longest_axial_diameter_mm") else "")
        + (f', confidence {float(le["confidence"]):.2f}' if le.get("confidence") is not None else "")
        + "</li>" for i, le in enumerate(lesions, start=1)) or "<li>none</li>"
    flag_items = ("<h4>Check first</h4><ul class=\"flags\">" + "".join(
        f"<li><b>{html.escape(str(f.get('code')))}</b>: {html.escape(str(f.get('reason')))}</li>" for f in flags)
        + "</ul>") if flags else ""
    page = PAGE.format(
        title=html.escape(title), note=html.escape(note or "The CT is shown at its full resolution."),
        lesion_items=items, flag_items=flag_items, niivue_version=NIIVUE_VERSION, niivue_file=NIIVUE_FILE,
        uncertainty_control=('<div><label><input id="uncertainty" type="checkbox"> uncertainty map</label></div>'
                             if uncertainty is not None else ""),
        data=json.dumps(data), windows=json.dumps(WINDOWS), side_px=SIDE_PX)
    atomic_write_text(out, page)
    script = out.parent / NIIVUE_FILE
    if not script.is_file() or script.stat().st_size != niivue_source().stat().st_size:
        atomic_write_bytes(script, niivue_source().read_bytes())
    return ViewerPage(out, out.stat().st_size, note, ct_small.geometry)


def write_prediction_pages(pred_dir: str | Path, *, cases: list[str] | None = None) -> list[ViewerPage]:
    """Write ``<case>_view.html`` for each prediction (``<case>.json``, schema ``rrcunet-prediction``) in
    ``pred_dir``; the CT is read from the input path its JSON records.

    Raises:
        InputError: no prediction in the folder, an unknown ``cases`` id, or a CT or mask that cannot be read.
    """
    from rrcunet.inference.batch import read_prediction_json  # the batch module loads the predictor; only this needs it
    from rrcunet.io import read_image  # the readers load SimpleITK and pydicom; only pages from files need them

    folder = Path(pred_dir)
    docs = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        doc = read_prediction_json(path)
        if doc is not None and doc.get("outputs"):
            docs[str(doc.get("case") or path.stem)] = doc
    if not docs:
        raise InputError(f"{folder}: holds no prediction (<case>.json written by `rrcunet predict`); pass the -o "
                         "folder of a predict run")
    unknown = sorted(set(cases or []) - set(docs))
    if unknown:
        raise InputError(f"{folder}: no prediction for case(s) {unknown}; cases there: {sorted(docs)[:10]}")
    pages = []
    for case, doc in docs.items():
        if cases and case not in cases:
            continue
        ct_path = Path(doc["input"]["path"])
        if not ct_path.exists():
            raise InputError(f"{folder / (case + '.json')}: its CT {ct_path} is gone; the viewer needs the CT "
                             "where `rrcunet predict` read it (move it back, or predict again)")
        ct = read_image(ct_path, check_intensity=False)
        labels = read_image(folder / doc["outputs"]["segmentation"], kind="label")
        unc_name = doc["outputs"].get("uncertainty")
        uncertainty = read_image(folder / unc_name, check_intensity=False) if unc_name else None
        lesions = (doc.get("tumour") or {}).get("lesions") or []
        pages.append(write_viewer_page(folder / f"{case}_view.html", ct, labels, title=f"rrcunet: {case}",
                                       lesions=lesions, uncertainty=uncertainty,
                                       flags=(doc.get("quality") or {}).get("flags")))
    return pages
