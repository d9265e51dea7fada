"""CVACT: Canberra panoramas and aerial images, splits in ``ACT_data.mat`` (as the official loaders read them).

Layout::

    ROOT/ACT_data.mat     panoIds (N strings), utm (N x 2), trainSet{trainNum, trainInd},
                          valSet{valNum, valInd}, valSetAll{valNumAll, valIndAll}; indices are 1-based
    ROOT/ANU_data_small/streetview/<id>_grdView.jpg            (train, val; 1664x832 panoramas)
    ROOT/ANU_data_small/satview_polish/<id>_satView_polish.jpg  (1200x1200)
    ROOT/ANU_data_test/{streetview,satview_polish}/...          (test = valSetAll)
    ROOT/ANU_data_*/streetview_processed/<id>_grdView.png       (the SAFA-like crop, ``crossview prepare --crop``)

Index arrays are read by field name, falling back to the struct's second field as the official code does
(``mat['trainSet'][0][0][1] - 1``). Ids whose panorama or aerial image is missing are skipped, as the
official code does; the count is in ``Split.meta["skipped"]`` and ``crossview prepare`` lists them.
GPS is not known (only UTM): ``Split.meta["utm"]`` is an (N_references, 2) array in the file's column order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossview.data.readers.common import Scan
from crossview.data.records import Record, Reference, Split
from crossview.errors import ConfigError

MAT_FILE = "ACT_data.mat"
# split -> (struct, index field candidates, image folder)
SPLITS = {
    "train": ("trainSet", ("trainInd",), "ANU_data_small"),
    "val": ("valSet", ("valInd",), "ANU_data_small"),
    "test": ("valSetAll", ("valIndAll", "valInd"), "ANU_data_test"),
}


def _strings(arr: np.ndarray) -> list[str]:
    """MATLAB char matrix, cell array or string array → list of Python strings."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "US":
        return [str(s).strip() for s in arr.reshape(-1)]
    out = []
    for item in arr.reshape(-1):
        item = np.asarray(item).reshape(-1)
        out.append(str(item[0]).strip() if item.size else "")
    return out


def _indices(mat: dict, struct: str, fields: tuple[str, ...]) -> np.ndarray:
    s = np.asarray(mat[struct])
    cell = s.reshape(-1)[0] if s.dtype.names else s
    names = s.dtype.names or ()
    for name in fields:
        if name in names:
            return np.asarray(cell[name]).reshape(-1).astype(np.int64)
    return np.asarray(cell[1]).reshape(-1).astype(np.int64)


def load_mat(root: Path, scan: Scan) -> dict | None:
    path = root / MAT_FILE
    if not path.exists():
        scan.problem(f"missing file {path}: CVACT's split file is not shipped with the images; "
                     "get ACT_data.mat from the CVFT repository and put it in the dataset root")
        return None
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for corrupt files
        scan.problem(f"cannot read {path}: {exc}; re-download it")
        return None


def image_paths(root: Path, folder: str, pano_id: str, crop: bool) -> tuple[Path, Path]:
    base = root / folder
    if crop:
        grd = base / "streetview_processed" / f"{pano_id}_grdView.png"
    else:
        grd = base / "streetview" / f"{pano_id}_grdView.jpg"
    return grd, base / "satview_polish" / f"{pano_id}_satView_polish.jpg"


def read(root: Path, split: str, scan: Scan, *, crop: bool = False, **_: object) -> Split:
    if split not in SPLITS:
        raise ConfigError(f"CVACT has splits {tuple(SPLITS)}, not {split!r}")
    struct, fields, folder = SPLITS[split]
    empty = Split(dataset="cvact", name=split, records=[], references=[], meta={"utm": np.zeros((0, 2))})
    mat = load_mat(root, scan)
    if mat is None:
        return empty
    where = root / MAT_FILE
    missing = [k for k in ("panoIds", "utm", struct) if k not in mat]
    if missing:
        scan.problem(f"{where}: missing variable(s) {', '.join(missing)}")
        return empty
    ids = _strings(mat["panoIds"])
    utm = np.asarray(mat["utm"], dtype=np.float64).reshape(len(ids), -1)
    try:
        inds = _indices(mat, struct, fields)
    except (IndexError, ValueError, TypeError) as exc:
        scan.problem(f"{where}: cannot read the index array of {struct}: {exc}")
        return empty
    bad = inds[(inds < 1) | (inds > len(ids))]
    if len(bad):
        scan.problem(f"{where}: {struct} has {len(bad)} indices outside 1..{len(ids)} (e.g. {int(bad[0])}); "
                     "indices are 1-based")
        inds = inds[(inds >= 1) & (inds <= len(ids))]
    if crop and not (root / folder / "streetview_processed").is_dir():
        scan.problem(f"missing folder {root / folder / 'streetview_processed'}: run "
                     f"`crossview prepare cvact {root} --crop` first")
        return empty
    for sub in ("streetview", "satview_polish"):
        if not (root / folder / sub).is_dir() and not (crop and sub == "streetview"):
            scan.problem(f"missing folder {root / folder / sub} (CVACT {split} images)")
    records, references, utms, skipped = [], [], [], 0
    for k in inds - 1:
        pano_id = ids[k]
        grd, sat = image_paths(root, folder, pano_id, crop)
        entry = f"{where} ({struct} id {pano_id})"
        have_grd = scan.image(grd, entry, required=False)
        have_sat = scan.image(sat, entry, required=False)
        if crop and not have_grd and scan.files.exists(image_paths(root, folder, pano_id, False)[0]):
            scan.problem(f"{grd} is missing but its panorama exists: run `crossview prepare cvact {root} --crop` "
                         "again to finish the crop")
            continue
        if not (have_grd and have_sat):
            skipped += 1
            gone = [str(p) for p, ok in ((grd, have_grd), (sat, have_sat)) if not ok]
            scan.warn(f"CVACT {split}: id {pano_id} skipped, missing {' and '.join(gone)}")
            continue
        index = len(references)
        references.append(Reference(index=index, path=sat, view="aerial"))
        records.append(Record(query_id=pano_id, query_path=grd, query_view="ground", positives=(index,)))
        utms.append(utm[k])
    if inds.size and not records:
        scan.problem(f"CVACT {split}: none of the {len(inds)} ids has both images under {root / folder}")
    return Split(dataset="cvact", name=split, records=records, references=references,
                 meta={"utm": np.asarray(utms, dtype=np.float64).reshape(-1, 2), "skipped": skipped,
                       "crop": crop})
