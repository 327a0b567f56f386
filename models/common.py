"""Helpers shared by the AigroNova model training scripts.

The training scripts (``models/train_breast_cancer.py``,
``models/train_diabetes.py`` and ``models/train_credit_risk.py``) keep what
is specific to their model: data, features, XGBoost parameters, risk bands,
tolerances and the model card text of ``manifest.json``.  This module holds
what they have in common:

* the fixed ONNX export settings (target opset, input and output tensor
  names, producer metadata) and the conversion of a trained XGBoost model to
  a deterministic ``model.onnx``;
* the rounding, binning and JSON conventions of ``manifest.json`` and
  ``reference.json``, and the writing of both files;
* the train/held-out split, onnxruntime sessions and the check of a binary
  classifier's ONNX outputs against xgboost's own predictions.

It is imported by the scripts (``import common``), which works because
Python puts the directory of the script it runs (``models/``) on
``sys.path``.  It is not meant to be run by itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxmltools
import onnxruntime
import sklearn
import xgboost
from onnx import helper
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.model_selection import train_test_split

# Paths are resolved relative to this file so the scripts work from any cwd.
MODELS_DIR = Path(__file__).resolve().parent

# onnxmltools' XGBoost converter supports target opsets up to 15.
TARGET_OPSET = 15

# ONNX tensor names.  Every model has one float32 input; classifiers have the
# outputs label and probabilities (no ZipMap), regressors a single output
# whose name the script chooses.
INPUT_NAME = "input"
LABEL_OUTPUT = "label"
PROBA_OUTPUT = "probabilities"

# Number of quantile bins per feature (=> NUM_BINS + 1 edges).
NUM_BINS = 10

# Significant digits for every float written to manifest.json.
SIG_DIGITS = 10

# Fixed ONNX metadata so that the serialized bytes do not change between runs
# (onnxmltools would otherwise put a random UUID in the graph name).  The
# graph name and doc string are set per model.
ONNX_PRODUCER_NAME = "aigronova-models"
ONNX_PRODUCER_VERSION = "1"
ONNX_DOMAIN = "aigronova"


def log(msg: str) -> None:
    """Print a progress line tagged with the running script's name.

    Flushed, so it interleaves well with pip/bash output.
    """
    print(f"[{Path(sys.argv[0]).stem}] {msg}", flush=True)


def log_versions() -> None:
    """Log the versions of Python and of every package the export depends on."""
    log(
        f"versions: python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}, xgboost {xgboost.__version__}, "
        f"onnx {onnx.__version__}, onnxmltools {onnxmltools.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def repo_path(path: Path) -> Path:
    """``path`` relative to the repository root, for log messages."""
    return path.relative_to(MODELS_DIR.parent)


def rnd(x: float) -> float:
    """Round a float to SIG_DIGITS significant digits, deterministically.

    Formatting with ``%.10g`` and parsing back is platform independent
    (correctly rounded), unlike e.g. ``round()`` on values of varying
    magnitude.
    """
    return float(f"{float(x):.{SIG_DIGITS}g}")


def strictly_increasing_edges(values: np.ndarray) -> list[float]:
    """Quantile bin edges of ``values`` (NUM_BINS bins => NUM_BINS+1 edges).

    Edges are rounded to SIG_DIGITS significant digits and deduplicated, so
    the result is strictly increasing (features with many repeated values,
    such as 0/1 flags, small ordinal codes or columns with many zeros, yield
    fewer than NUM_BINS+1 edges).
    """
    qs = np.quantile(values, np.linspace(0.0, 1.0, NUM_BINS + 1))
    edges: list[float] = []
    for q in qs:
        e = rnd(q)
        if not edges or e > edges[-1]:
            edges.append(e)
    return edges


def drift_bins(values: np.ndarray) -> tuple[list[float], list[float]]:
    """The drift baseline of a training column: its bin edges and each bin's share.

    The edges are :func:`strictly_increasing_edges`; a column with exactly two
    distinct edges (a 0/1 flag, scikit-learn's scaled ``sex``) gets their
    midpoint as a third edge, so that its two values fall in two bins.  The
    bins follow the services' rule (``platform::monitoring::bin_of``): the
    first and last edges bound the range, a value counts in the bin of the
    interior edges at or below it, values outside the range in the outer bins.
    The shares are the fractions of the column's values, as float32 like the
    services' inputs, in each bin: collapsed quantiles make them unequal, and
    the population stability index compares live inputs with these shares.
    """
    edges = strictly_increasing_edges(values)
    if len(edges) == 2:
        edges = [edges[0], rnd((edges[0] + edges[1]) / 2.0), edges[1]]
    if len(edges) < 3:
        return edges, [1.0]
    as_served = values.astype(np.float32).astype(np.float64)
    bins = np.searchsorted(np.asarray(edges[1:-1]), as_served, side="right")
    counts = np.bincount(bins, minlength=len(edges) - 1)
    return edges, [rnd(count / len(values)) for count in counts]


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj: object) -> None:
    """Pretty JSON: sorted keys, 2-space indent, trailing newline, UTF-8."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def band_of(value: float, bands: list[dict]) -> str:
    """Name of the risk band of a model output (same rule as the Rust side).

    ``value`` falls into the first band whose ``upper`` is greater than it;
    anything at or above the last upper bound is in the last band.
    """
    for band in bands:
        if value < band["upper"]:
            return band["name"]
    return bands[-1]["name"]


def split_rows(
    X: np.ndarray, y: np.ndarray, test_size: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split the rows into a training and a held-out set, and log the sizes.

    Returns ``X_train, X_test, y_train, y_test, idx_test``, where
    ``idx_test`` are the held-out rows' indices in the full data set, so
    reference rows can be traced.  With ``stratify`` the split keeps the
    class proportions of ``y``.
    """
    idx = np.arange(X.shape[0])
    X_train, X_test, y_train, y_test, _idx_train, idx_test = train_test_split(
        X, y, idx, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    kind = "stratified" if stratify else "not stratified"
    log(f"split: training_rows={len(y_train)} heldout_rows={len(y_test)} ({kind}, random_state={seed})")
    return X_train, X_test, y_train, y_test, idx_test


def split_text(test_size: float, seed: int, stratify: bool) -> str:
    """The manifest's ``training_data.split`` text, e.g. ``stratified 75/25, random_state=42``."""
    kind = "stratified" if stratify else "random (not stratified)"
    return f"{kind} {int(round((1 - test_size) * 100))}/{int(round(test_size * 100))}, random_state={seed}"


def make_onnx_deterministic(
    model: onnx.ModelProto,
    model_version: str,
    graph_name: str,
    doc_string: str,
    outputs: dict[str, int],
) -> onnx.ModelProto:
    """Fix all metadata fields of the converted model and check the graph.

    ``outputs`` maps the expected output names, in graph order, to their
    ONNX element types (e.g. ``onnx.TensorProto.FLOAT``).
    """
    model.producer_name = ONNX_PRODUCER_NAME
    model.producer_version = ONNX_PRODUCER_VERSION
    model.domain = ONNX_DOMAIN
    model.model_version = int(model_version)
    model.doc_string = doc_string
    model.graph.name = graph_name
    model.graph.doc_string = ""
    del model.metadata_props[:]

    # onnxmltools only imports the domains actually used by nodes (here just
    # ai.onnx.ml).  Declare the default ONNX domain at the target opset too,
    # so the file states the opset the manifest advertises.
    domains = {imp.domain for imp in model.opset_import}
    if "" not in domains and "ai.onnx" not in domains:
        model.opset_import.append(helper.make_opsetid("", TARGET_OPSET))

    # Ensure there is no ZipMap (it would turn a classifier's probabilities
    # into a sequence of maps, which the Rust loader cannot read).
    ops = [n.op_type for n in model.graph.node]
    if "ZipMap" in ops:
        raise SystemExit(f"ERROR: converted graph contains a ZipMap node: {ops}")

    # Make sure the I/O names are exactly what the manifest promises.
    # onnxmltools already uses 'label' and 'probabilities' for classifiers
    # and 'variable' for regressors, but rename defensively.
    if len(model.graph.output) != len(outputs):
        raise SystemExit(f"ERROR: expected {len(outputs)} output(s), got {len(model.graph.output)}")
    rename = {}
    for out, wanted in zip(model.graph.output, outputs):
        if out.name != wanted:
            rename[out.name] = wanted
            out.name = wanted
    if rename:
        log(f"renaming ONNX outputs {rename}")
        for node in model.graph.node:
            for i, name in enumerate(node.output):
                if name in rename:
                    node.output[i] = rename[name]
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
    if [i.name for i in model.graph.input] != [INPUT_NAME]:
        raise SystemExit(f"ERROR: unexpected ONNX inputs {[i.name for i in model.graph.input]}")

    # Expected element types: input float32, outputs as given.
    in_elem = model.graph.input[0].type.tensor_type.elem_type
    if in_elem != onnx.TensorProto.FLOAT:
        raise SystemExit(f"ERROR: unexpected ONNX input element type {in_elem}")
    elem = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    if elem != outputs:
        raise SystemExit(f"ERROR: unexpected ONNX output element types {elem}")

    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    model: xgboost.XGBModel,
    n_features: int,
    model_path: Path,
    model_version: str,
    graph_name: str,
    doc_string: str,
    outputs: dict[str, int],
) -> None:
    """Convert a trained XGBoost model to ONNX and write it to ``model_path``.

    The input is ``INPUT_NAME``, float32 ``[N, n_features]``; ``outputs``,
    ``graph_name`` and ``doc_string`` are as in make_onnx_deterministic.
    The bytes are serialized deterministically.
    """
    log(f"converting to ONNX with onnxmltools {onnxmltools.__version__} (target opset {TARGET_OPSET}) ...")
    onnx_model = onnxmltools.convert_xgboost(
        model,
        name=graph_name,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
    )
    onnx_model = make_onnx_deterministic(onnx_model, model_version, graph_name, doc_string, outputs)
    model_bytes = onnx_model.SerializeToString(deterministic=True)
    model_path.write_bytes(model_bytes)
    log(f"wrote {repo_path(model_path)} ({len(model_bytes)} bytes)")


def export_classifier(
    clf: xgboost.XGBClassifier,
    n_features: int,
    model_path: Path,
    model_version: str,
    graph_name: str,
    doc_string: str,
) -> None:
    """export_onnx for a binary classifier: outputs ``LABEL_OUTPUT`` (int64)
    and ``PROBA_OUTPUT`` (float32 ``[N, 2]``), no ZipMap."""
    outputs = {LABEL_OUTPUT: onnx.TensorProto.INT64, PROBA_OUTPUT: onnx.TensorProto.FLOAT}
    export_onnx(clf, n_features, model_path, model_version, graph_name, doc_string, outputs)


def ort_session(model_path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session on ``model_path``.

    ``threads`` sets ``intra_op_num_threads``; None keeps onnxruntime's
    default, which depends on the machine's core count.
    """
    opts = onnxruntime.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def check_classifier(
    sess: onnxruntime.InferenceSession,
    clf: xgboost.XGBClassifier,
    X_test32: np.ndarray,
    proba_test: np.ndarray,
    tolerance: float,
) -> np.ndarray:
    """Check a binary classifier's ONNX outputs against xgboost on the held-out rows.

    Scores ``X_test32`` in one batch with ``sess`` and checks the output
    names, dtypes and shapes, and that the probabilities differ from
    xgboost's ``predict_proba`` (``proba_test``) by at most ``tolerance``.
    Returns onnxruntime's probabilities, float32 ``[n, 2]``.
    """
    n = X_test32.shape[0]
    out_names = [o.name for o in sess.get_outputs()]
    if out_names != [LABEL_OUTPUT, PROBA_OUTPUT]:
        raise SystemExit(f"ERROR: onnxruntime sees outputs {out_names}")
    onnx_label, onnx_proba = sess.run([LABEL_OUTPUT, PROBA_OUTPUT], {INPUT_NAME: X_test32})
    onnx_label = np.asarray(onnx_label)
    onnx_proba = np.asarray(onnx_proba)
    if onnx_label.dtype != np.int64 or onnx_label.shape != (n,):
        raise SystemExit(f"ERROR: label output is {onnx_label.dtype} {onnx_label.shape}")
    if onnx_proba.dtype != np.float32 or onnx_proba.shape != (n, 2):
        raise SystemExit(f"ERROR: probabilities output is {onnx_proba.dtype} {onnx_proba.shape}")
    max_diff = float(np.max(np.abs(onnx_proba.astype(np.float64) - proba_test.astype(np.float64))))
    if not max_diff <= tolerance:
        raise SystemExit(
            f"ERROR: ONNX probabilities differ from xgboost predict_proba by {max_diff:.3g} "
            f"(> {tolerance}) on the held-out set"
        )
    label_mismatch = int(np.sum(onnx_label != clf.predict(X_test32)))
    log(f"OK: max |onnx - xgboost| = {max_diff:.3g} over {n} held-out rows; label mismatches = {label_mismatch}")
    return onnx_proba


def feature_entries(
    feature_names: list[str], X_train: np.ndarray, valid_min: np.ndarray, valid_max: np.ndarray
) -> list[dict]:
    """The manifest's ``features`` list.

    For feature j: its name, dtype float32, the valid range
    ``[valid_min[j], valid_max[j]]``, and the population mean, standard
    deviation, and drift bins (:func:`drift_bins`: ``bin_edges`` and
    ``bin_shares``) of the training column ``X_train[:, j]``.
    """
    features = []
    for j, name in enumerate(feature_names):
        col_train = X_train[:, j]
        bin_edges, bin_shares = drift_bins(col_train)
        features.append(
            {
                "name": name,
                "dtype": "float32",
                "min": rnd(valid_min[j]),
                "max": rnd(valid_max[j]),
                "training_mean": rnd(col_train.mean()),
                "training_std": rnd(col_train.std(ddof=0)),
                "bin_edges": bin_edges,
                "bin_shares": bin_shares,
            }
        )
    return features


def write_manifest(model_path: Path, n_features: int, card: dict) -> dict:
    """Write ``manifest.json`` next to ``model_path`` and return its content.

    ``card`` holds the model-specific entries: ``name``, ``version``,
    ``task``, ``description``, ``outputs``, ``positive_class``, ``features``,
    ``valid_range_rule``, ``risk_bands``, ``metrics``, ``training_data``,
    ``intended_use``, ``limitations`` and ``training_script``.  This adds
    the entries describing the exported file: ``framework``, ``file``,
    ``sha256`` and ``input``.
    """
    manifest = dict(card)
    manifest["framework"] = {
        "library": "xgboost",
        "library_version": xgboost.__version__,
        "onnx_opset": TARGET_OPSET,
        "converter": f"onnxmltools {onnxmltools.__version__}",
    }
    manifest["file"] = model_path.name
    manifest["sha256"] = sha256_of(model_path)
    manifest["input"] = {"name": INPUT_NAME, "dtype": "float32", "shape": [None, n_features]}
    manifest_path = model_path.parent / "manifest.json"
    write_json(manifest_path, manifest)
    log(f"wrote {repo_path(manifest_path)} (sha256 of model {manifest['sha256']})")
    return manifest


def first_row_in_each_band(values: np.ndarray, bands: list[dict]) -> list[int]:
    """For each band in order, the index of the first value that falls into it.

    Bands that no value falls into are skipped.
    """
    chosen: list[int] = []
    for band in bands:
        for i in range(len(values)):
            if band_of(float(values[i]), bands) == band["name"]:
                chosen.append(i)
                break
    return chosen


def fill_rows(chosen: list[int], n_rows: int, count: int = 3) -> list[int]:
    """``chosen`` followed by the first unused row indices, up to ``count`` rows."""
    filled = list(chosen)
    for i in range(n_rows):
        if len(filled) >= count:
            break
        if i not in filled:
            filled.append(i)
    return filled


def feature_values(feature_names: list[str], row: np.ndarray) -> dict[str, float]:
    """A data row as ``{feature name: value}`` for reference.json.

    The values are the exact float64 values from the data set (json writes
    the shortest repr that round-trips, so nothing is lost).
    """
    return {name: float(row[j]) for j, name in enumerate(feature_names)}


def classifier_reference_row(
    feature_names: list[str], row: np.ndarray, probability: float, onnx_probability: float, label: int
) -> dict:
    """One reference.json row of a binary classifier.

    ``probability`` is xgboost's ``predict_proba`` and ``onnx_probability``
    onnxruntime's float32 output for the positive class; ``label`` is the
    observed class.
    """
    return {
        "features": feature_values(feature_names, row),
        "probability": float(probability),
        "onnx_probability": float(onnx_probability),
        "label": int(label),
    }


def write_reference(out_dir: Path, model_name: str, model_version: str, rows: list[dict], summary: str) -> None:
    """Write ``reference.json`` into ``out_dir`` and log ``summary`` of its rows."""
    reference = {"model": model_name, "version": model_version, "rows": rows}
    reference_path = out_dir / "reference.json"
    write_json(reference_path, reference)
    log(f"wrote {repo_path(reference_path)} ({summary})")
